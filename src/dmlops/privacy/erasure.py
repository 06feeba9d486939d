"""The right to erasure: remove one data subject's rows from every Parquet store that holds them and write a
receipt.

A subject is named by its value in one column (e.g. a passenger's e-mail). Rows match when that column
holds the value or its pseudonym (:func:`dmlops.privacy.pseudonymize.pseudonym`, when the key is
configured), or when a JSON text column (the prediction log's ``features``) holds either under that
column's name. Each store is a Parquet file or a folder of them (datasets of a run's lineage, Feast
offline sources, prediction logs, quarantine files), local or on an object store
(:mod:`dmlops.platform.storage`); an encrypted file is read and rewritten through
:mod:`dmlops.privacy.encryption`, encrypted as before. Every file that holds the subject is rewritten without those rows; the
receipt lists, per file, the rows removed, the rows that still match afterwards (0) and the sha256 before
and after. With a Feast store, the subject's entity rows also leave its online store
(:func:`dmlops.features.erase.delete_entities`; digests there are of the subject's online values). The receipt holds a digest of the subject's value, never the value.

Models are not erased: the receipt lists the registered model versions trained or evaluated on data that held
the subject, found by the dataset digests ``register_model`` recorded
(:func:`dmlops.registry.mlflow_registry.versions_trained_on`), so that they can be retrained without it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.privacy import encryption
from dmlops.privacy.pseudonymize import pseudonym, pseudonym_key
from dmlops.registry.mlflow_registry import dataset_digest, versions_trained_on

JSON_COLUMNS = ("features",)


@dataclass
class StoreErasure:
    """One file: rows before, rows removed, rows still matching after the rewrite, sha256 before and after."""

    store: str
    rows_before: int
    rows_removed: int
    remaining: int
    sha256_before: str
    sha256_after: str


@dataclass
class ErasureReceipt:
    """What was erased where; ``subject_sha256`` identifies the subject without holding its value."""

    subject_column: str
    subject_sha256: str
    erased_at: str
    stores: list[StoreErasure] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_removed(self) -> int:
        return sum(store.rows_removed for store in self.stores)

    @property
    def remaining(self) -> int:
        return sum(store.remaining for store in self.stores)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_removed": self.rows_removed, "remaining": self.remaining}

    def markdown(self) -> str:
        """The receipt as a Markdown table, one line per file."""
        lines = [f"# Erasure receipt", "", f"Subject: `{self.subject_column}` with sha256 `{self.subject_sha256[:16]}…`, "
                 f"erased at {self.erased_at}: {self.rows_removed} rows removed from {len(self.stores)} files, "
                 f"{self.remaining} remaining.", "",
                 "| store | rows before | removed | remaining | sha256 before | sha256 after |",
                 "| --- | ---: | ---: | ---: | --- | --- |"]
        for store in self.stores:
            lines.append(f"| {store.store} | {store.rows_before} | {store.rows_removed} | {store.remaining} | "
                         f"`{store.sha256_before[:12]}` | `{store.sha256_after[:12]}` |")
        lines += ["", f"## Registered models trained on the subject's data: {len(self.models)}", ""]
        if self.models:
            lines += ["They still hold what they learned from the subject and must be retrained without the erased rows "
                      "(they are listed here, not deleted).", "",
                      "| model | version | aliases | run id | dataset | store |", "| --- | ---: | --- | --- | --- | --- |"]
            lines += [f"| {model['name']} | {model['version']} | {', '.join(model['aliases']) or '-'} | "
                      f"`{model['run_id']}` | {model['dataset']} | {model['store']} |" for model in self.models]
        else:
            lines.append("No registered model version records a dataset that held the subject.")
        return "\n".join(lines) + "\n"


def _files(location: str) -> list[tuple[Any, str, str]]:
    """(filesystem, path, URI) of every Parquet file at ``location`` (a file or a folder)."""
    fs, path = storage.filesystem(location)
    if not fs.exists(path):
        raise DataError(f"{location} does not exist; pass the Parquet files or folders that may hold the subject")
    paths = [path] if fs.isfile(path) else sorted(name for name in fs.find(path) if name.endswith(".parquet"))
    prefix = location[: len(location) - len(location.split("://", 1)[-1])] if "://" in location else ""
    return [(fs, name, f"{prefix}{name}") for name in paths]


def _sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(table: pa.Table, column: str, values: list[str]) -> np.ndarray:
    """A boolean per row: the subject is in ``column`` or under ``column`` in a JSON column."""
    found = np.zeros(table.num_rows, dtype=bool)
    if column in table.column_names:
        found |= pc.fill_null(pc.is_in(pc.cast(table[column], pa.string()), pa.array(values)), False).to_numpy(
            zero_copy_only=False)
    for name in JSON_COLUMNS:
        if name in table.column_names and (pa.types.is_string(table[name].type)):
            texts = table[name].to_pylist()
            for index, text in enumerate(texts):
                if text and any(value in text for value in values):
                    found[index] |= str(json.loads(text).get(column)) in values
    return found


def _held_digests(location: str, fs, held: list[tuple[str, str]]) -> dict[str, str]:
    """sha256 -> URI of each dataset at ``location`` that held the subject, as ``register_model`` digests
    datasets: every file that held it, and every folder from the file's own up to ``location``."""
    _, root = storage.filesystem(location)
    root = root.rstrip("/")
    folders: set[tuple[str, str]] = set()
    for path, uri in held:
        while path != root and "/" in path and path.startswith(root):
            path, uri = path.rsplit("/", 1)[0], uri.rsplit("/", 1)[0]
            folders.add((path, uri))
    digests = {_sha256(fs, path): uri for path, uri in held}
    for path, uri in sorted(folders):
        if fs.isdir(path):
            digests[dataset_digest(uri)] = uri
    return digests


def erase_subject(subject: str, column: str, locations: list[str],
                  feast_store: dict[str, Any] | None = None, registry: str | None = None) -> ErasureReceipt:
    """Remove every row of the subject whose ``column`` is ``subject`` (or its pseudonym) from the Parquet
    files at ``locations``, rewriting only the files that held it, and from the online store of
    ``feast_store`` (a store spec) for the feature views keyed by ``column``; the receipt accounts for
    every file and view. With ``registry`` (an MLflow URI; "" for ``$MLFLOW_TRACKING_URI`` or the local
    store) it also lists the registered versions whose recorded train or eval dataset held the subject."""
    if not subject:
        raise DataError("erase_subject needs the subject's value")
    key = pseudonym_key(required=False)
    values = [subject, *([pseudonym(subject, key)] if key else [])]
    receipt = ErasureReceipt(column, hashlib.sha256(subject.encode()).hexdigest(),
                             datetime.now(timezone.utc).isoformat(timespec="seconds"))
    held: dict[str, str] = {}
    for location in locations:
        files = _files(location)
        tables, found_in = {}, []
        for fs, path, uri in files:
            tables[path] = encryption.read_table(uri)  # decrypted when encrypted
            if _matches(tables[path], column, values).any():
                found_in.append((path, uri))
        if found_in:  # before any rewrite: the digests the datasets had when models were registered
            held.update(_held_digests(location, files[0][0], found_in))
        for fs, path, uri in files:
            before = _sha256(fs, path)
            table = tables.pop(path)
            found = _matches(table, column, values)
            removed = int(found.sum())
            if removed:
                kept = table.filter(pa.array(~found))
                mark = encryption.input_marking([uri])  # an encrypted file is rewritten encrypted the same way
                with fs.open(path, "wb") as handle:
                    encryption.write_like(kept, handle, mark)
            after = encryption.read_table(uri)
            receipt.stores.append(StoreErasure(uri, table.num_rows, removed, int(_matches(after, column, values).sum()),
                                               before, _sha256(fs, path)))
    if feast_store:
        from dmlops.features.erase import delete_entities

        for erased in delete_entities(feast_store, column, values):
            receipt.stores.append(StoreErasure(erased.store, erased.rows_removed + erased.remaining, erased.rows_removed,
                                               erased.remaining, erased.sha256_before, erased.sha256_after))
    if registry is not None and held:
        for version, role, digest in versions_trained_on(set(held), registry):
            receipt.models.append({"name": version.name, "version": version.version, "aliases": version.aliases,
                                   "run_id": version.run_id, "dataset": role, "store": held[digest]})
    return receipt
