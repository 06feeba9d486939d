"""Find columns that look like personal data: Presidio's pattern recognizers over a sample of each text
column's values, plus the column names.

Presidio's default analyzer loads a trained spaCy model and downloads it when missing; here it runs with
a blank English spaCy pipeline, so only the pattern recognizers answer (e-mail, phone, credit card, IBAN,
IP address, US SSN, ...) and no name or place is found by NER: names and addresses are caught by the
column-name heuristics. Nothing is fetched from the network (``tldextract``, used by the e-mail and URL
recognizers, reads its bundled public-suffix list).
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dmlops.privacy import encryption

# column-name words that say what a column holds (compared with the name's words, lower case)
NAME_HINTS = {
    "EMAIL_ADDRESS": {"email", "mail", "e_mail"},
    "PHONE_NUMBER": {"phone", "mobile", "telephone", "tel", "msisdn"},
    "PERSON": {"name", "firstname", "lastname", "surname", "fullname", "passenger", "customer", "patient"},
    "LOCATION": {"address", "street", "zip", "zipcode", "postcode", "postal"},
    "DATE_OF_BIRTH": {"birth", "birthday", "dob", "birthdate"},
    "NATIONAL_ID": {"ssn", "passport", "nin", "national_id", "taxid", "license"},
    "IP_ADDRESS": {"ip", "ipaddress"},
    "CREDIT_CARD": {"card", "iban", "creditcard", "account"},
}
SCORE_THRESHOLD = 0.5


@functools.cache
def _analyzer():
    import spacy
    import tldextract.tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    # offline: the bundled public-suffix snapshot instead of a download on first use
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())

    class BlankSpacy(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def _name_hint(name: str) -> str | None:
    words = {word for word in re.split(r"[^a-z0-9]+", name.lower()) if word}
    words |= {"_".join(pair) for pair in zip(sorted(words), sorted(words)[1:])}
    for entity, hints in NAME_HINTS.items():
        if words & hints or name.lower().replace("_", "") in hints:
            return entity
    return None


@dataclass
class ColumnFinding:
    """A column that looks like personal data: entity types found in its sampled values (fraction of the
    sample), the entity its name suggests, and the ``pii`` mark to put in the schema."""

    column: str
    entities: dict[str, float] = field(default_factory=dict)
    name_hint: str | None = None
    suggested: str = "pseudonymize"


@dataclass
class ScanReport:
    """Columns that look like personal data, and how many values of each column were sampled."""

    dataset: str
    rows: int
    findings: list[ColumnFinding]
    sampled: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "rows": self.rows, "sampled": self.sampled,
                "findings": [asdict(finding) for finding in self.findings]}

    def schema_marks(self) -> dict[str, dict[str, str]]:
        """``{"columns": {name: {"pii": action}}}``: the marks to merge into the schema document."""
        return {"columns": {finding.column: {"pii": finding.suggested} for finding in self.findings}}

    def markdown(self) -> str:
        """A table of the findings (no values: they may be personal data)."""
        lines = [f"# PII scan of {self.dataset}", "", f"{len(self.findings)} of {len(self.sampled)} columns look like "
                 "personal data.", "", "| column | entities in values (share of sample) | name suggests | mark |",
                 "| --- | --- | --- | --- |"]
        for finding in self.findings:
            entities = ", ".join(f"{name} {share:.0%}" for name, share in finding.entities.items()) or "-"
            lines.append(f"| {finding.column} | {entities} | {finding.name_hint or '-'} | {finding.suggested} |")
        return "\n".join(lines) + "\n"


def scan(dataset_path: str, *, sample_values: int = 200, min_share: float = 0.5) -> ScanReport:
    """Columns of a Parquet dataset that look like personal data: by name, or because at least ``min_share``
    of up to ``sample_values`` distinct sampled text values hold an entity Presidio recognizes."""
    table = encryption.read_table(dataset_path)
    findings, sampled = [], {}
    for name in table.column_names:
        column = table[name]
        hint = _name_hint(name)
        entities: dict[str, float] = {}
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type):
            values = pc.unique(pc.drop_null(pc.cast(column, pa.string()))).to_pylist()[:sample_values]
            sampled[name] = len(values)
            counts: dict[str, int] = {}
            for value in values:
                found = {result.entity_type for result in _analyzer().analyze(value, language="en")
                         if result.score >= SCORE_THRESHOLD}
                for entity in found:
                    counts[entity] = counts.get(entity, 0) + 1
            entities = {entity: round(count / len(values), 4) for entity, count in sorted(counts.items())
                        if count / len(values) >= min_share}
        else:
            sampled[name] = 0
        if entities or hint:
            findings.append(ColumnFinding(name, entities, hint))
    return ScanReport(dataset_path, table.num_rows, findings, sampled)
