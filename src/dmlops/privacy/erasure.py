"""The right to erasure: remove one data subject's rows from every Parquet store that holds them and write a
receipt.

A subject is named by its value in one column (e.g. a passenger's e-mail). Rows match when that column
holds the value or its pseudonym (:func:`dmlops.privacy.pseudonymize.pseudonym`, when the key is
configured), or when a JSON text column (the prediction log's ``features``) holds either under that
column's name. Each store is a Parquet file or a folder of them (datasets of a run's lineage, Feast
offline sources, prediction logs, quarantine files), local or on an object store
(:mod:`dmlops.platform.storage`). Every file that holds the subject is rewritten without those rows; the
receipt lists, per file, the rows removed, the rows that still match afterwards (0) and the sha256 before
and after. With a Feast store, the subject's entity rows also leave its online store
(:func:`dmlops.features.erase.delete_entities`; digests there are of the subject's online values). The receipt holds a digest of the subject's value, never the value.
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
import pyarrow.parquet as pq

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.privacy.pseudonymize import pseudonym, pseudonym_key

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


def erase_subject(subject: str, column: str, locations: list[str],
                  feast_store: dict[str, Any] | None = None) -> ErasureReceipt:
    """Remove every row of the subject whose ``column`` is ``subject`` (or its pseudonym) from the Parquet
    files at ``locations``, rewriting only the files that held it, and from the online store of
    ``feast_store`` (a store spec) for the feature views keyed by ``column``; the receipt accounts for
    every file and view."""
    if not subject:
        raise DataError("erase_subject needs the subject's value")
    key = pseudonym_key(required=False)
    values = [subject, *([pseudonym(subject, key)] if key else [])]
    receipt = ErasureReceipt(column, hashlib.sha256(subject.encode()).hexdigest(),
                             datetime.now(timezone.utc).isoformat(timespec="seconds"))
    for location in locations:
        for fs, path, uri in _files(location):
            before = _sha256(fs, path)
            with fs.open(path, "rb") as handle:
                handle.seek(-4, 2)
                if handle.read(4) == b"PARE":
                    raise DataError(f"{uri} is an encrypted Parquet file; erasure rewrites plaintext files only")
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                table = parquet.read()
            found = _matches(table, column, values)
            removed = int(found.sum())
            if removed:
                kept = table.filter(pa.array(~found))
                with fs.open(path, "wb") as handle:
                    pq.write_table(kept, handle)
            with fs.open(path, "rb") as handle:
                after = pq.read_table(handle)
            receipt.stores.append(StoreErasure(uri, table.num_rows, removed, int(_matches(after, column, values).sum()),
                                               before, _sha256(fs, path)))
    if feast_store:
        from dmlops.features.erase import delete_entities

        for erased in delete_entities(feast_store, column, values):
            receipt.stores.append(StoreErasure(erased.store, erased.rows_removed + erased.remaining, erased.rows_removed,
                                               erased.remaining, erased.sha256_before, erased.sha256_after))
    return receipt
