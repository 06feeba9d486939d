"""Parquet modular encryption (pyarrow ``parquet.encryption``) for sensitive datasets, with master keys
from a key file: a Kubernetes Secret mounted as a file in a cluster, a local file otherwise.

The key file (``DMLOPS_PARQUET_KEYS_FILE``) is JSON ``{"<key id>": "<base64 of 16, 24 or 32 bytes>"}``.
Parquet's envelope encryption writes each file with random data keys; :class:`KeyFileKms` wraps them
with the named master key (AES-GCM), so the file holds only wrapped keys and the master keys never leave
the Secret. The footer and the listed columns are encrypted; a reader without the key file cannot read
the encrypted columns or, with an encrypted footer, even the schema.

An encrypted file carries its marking (master key and encrypted columns, :data:`MARK_KEY` in the schema's
metadata, inside the encrypted footer), so every step that derives a dataset from it writes its output
encrypted the same way (:func:`write_like`). DuckDB cannot decrypt: :mod:`dmlops.data.sandbox` hands it the
table this module decrypts.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dmlops.data.errors import DataError
from dmlops.platform import storage

KEYS_VARIABLE = "DMLOPS_PARQUET_KEYS_FILE"
KEYS_SECRET = "DMLOPS_PARQUET_KEYS_SECRET"  # "<secret>/<key>" of the key file, for the pods a step starts
MARK_KEY = b"dmlops.encryption"  # schema metadata: {"key_id": ..., "columns": [...]}


def _master_keys() -> dict[str, bytes]:
    path = os.environ.get(KEYS_VARIABLE)
    if not path:
        raise DataError(f"encrypted Parquet needs master keys: set {KEYS_VARIABLE} to a JSON key file (a Secret)")
    try:
        return {key_id: base64.b64decode(value) for key_id, value in json.loads(Path(path).read_text()).items()}
    except (OSError, ValueError, AttributeError) as error:
        raise DataError(f"{KEYS_VARIABLE}={path}: not a JSON object of base64 keys ({error})") from None


class KeyFileKms(pe.KmsClient):
    """A KMS client whose master keys are those of the key file: wraps data keys with AES-GCM."""

    def __init__(self, _config: pe.KmsConnectionConfig):
        super().__init__()
        self._keys = _master_keys()

    def _key(self, key_id: str) -> bytes:
        if key_id not in self._keys:
            raise DataError(f"master key {key_id!r} is not in {KEYS_VARIABLE}")
        return self._keys[key_id]

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> bytes:
        nonce = os.urandom(12)
        sealed = AESGCM(self._key(master_key_identifier)).encrypt(nonce, key_bytes, master_key_identifier.encode())
        return base64.b64encode(nonce + sealed)

    def unwrap_key(self, wrapped_key: bytes, master_key_identifier: str) -> bytes:
        raw = base64.b64decode(wrapped_key)
        try:
            return AESGCM(self._key(master_key_identifier)).decrypt(raw[:12], raw[12:], master_key_identifier.encode())
        except InvalidTag:
            raise DataError(f"master key {master_key_identifier!r} does not open this file's data keys: another "
                            "key of that name, or the file was changed") from None


def _factory() -> pe.CryptoFactory:
    return pe.CryptoFactory(lambda config: KeyFileKms(config))


def write_encrypted(table: pa.Table, path: str, *, key_id: str, columns: list[str] | None = None) -> None:
    """Write ``table`` to ``path`` with its footer and ``columns`` (default: all) encrypted under master key
    ``key_id`` of the key file."""
    columns = list(table.column_names if columns is None else columns)
    missing = sorted(set(columns) - set(table.column_names))
    if missing:
        raise DataError(f"columns {missing} to encrypt are not in the table; it has {table.column_names}")
    _master_keys()  # a clear error before Arrow's
    with _encrypted_writer(path, table.schema, {"key_id": key_id, "columns": columns}) as writer:
        writer.write_table(table)


def _encrypted_writer(path: str | BinaryIO, schema: pa.Schema, mark: dict[str, Any]) -> pq.ParquetWriter:
    config = pe.EncryptionConfiguration(footer_key=mark["key_id"], column_keys={mark["key_id"]: mark["columns"]},
                                        double_wrapping=False)
    properties = _factory().file_encryption_properties(pe.KmsConnectionConfig(), config)
    marked = schema.with_metadata({**(schema.metadata or {}), MARK_KEY: json.dumps(mark).encode()})
    return pq.ParquetWriter(path, marked, encryption_properties=properties)


def _open(uri: str) -> BinaryIO:
    filesystem, path = storage.filesystem(uri)
    return filesystem.open(path, "rb")


def is_encrypted(uri: str) -> bool:
    """Whether the Parquet file at ``uri`` (a local path or any URI :mod:`dmlops.platform.storage` reads) has
    an encrypted footer (its magic bytes are ``PARE``); False for a path that is not a file yet (an output)."""
    if "://" not in uri:
        if not os.path.isfile(uri) or os.path.getsize(uri) < 4:
            return False
        with open(uri, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            return handle.read(4) == b"PARE"
    filesystem, path = storage.filesystem(uri)
    if not filesystem.isfile(path) or filesystem.size(path) < 4:
        return False
    with filesystem.open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return handle.read(4) == b"PARE"


def parquet_file(uri: str) -> pq.ParquetFile:
    """The Parquet file at ``uri``, opened with the key file's decryption when it is encrypted; a wrong or
    missing key is a DataError naming the file."""
    source = uri if "://" not in uri else _open(uri)
    if not is_encrypted(uri):
        return pq.ParquetFile(source)
    try:
        _master_keys()
    except DataError as error:
        raise DataError(f"{uri} is encrypted: {error}") from None
    properties = _factory().file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    try:
        return pq.ParquetFile(source, decryption_properties=properties)
    except (OSError, ValueError, DataError) as error:  # a wrong or missing master key, or a changed file
        raise DataError(f"{uri}: cannot decrypt ({error})") from None


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read the Parquet file at ``uri``, decrypting it with the key file when it is encrypted."""
    if not is_encrypted(uri):
        if "://" not in uri:
            return pq.read_table(uri, columns=columns)
        filesystem, path = storage.filesystem(uri)
        return pq.read_table(path, columns=columns, filesystem=filesystem)
    file = parquet_file(uri)
    try:
        return file.read(columns=columns)
    except (OSError, ValueError, DataError) as error:
        raise DataError(f"{uri}: cannot decrypt ({error})") from None


def read_schema(uri: str) -> pa.Schema:
    """The Arrow schema of a Parquet file or directory at ``uri``, decrypting an encrypted file's footer."""
    if is_encrypted(uri):
        return parquet_file(uri).schema_arrow
    filesystem, path = storage.filesystem(uri)
    return pq.ParquetDataset(path, filesystem=filesystem).schema


def marking(schema: pa.Schema) -> dict[str, Any] | None:
    """The encryption marking an encrypted file's schema carries (``{"key_id", "columns"}``), or None."""
    raw = (schema.metadata or {}).get(MARK_KEY)
    return json.loads(raw) if raw else None


def input_marking(paths: Iterable[str]) -> dict[str, Any] | None:
    """The marking of the first encrypted file among ``paths`` (the inputs an output derives from); None
    when none is encrypted. An encrypted input without a marking (not written by dmlops) is a DataError:
    its output's master key is unknown."""
    for path in paths:
        if is_encrypted(path):
            found = marking(parquet_file(path).schema_arrow)
            if found is None:
                raise DataError(f"{path} is encrypted but carries no {MARK_KEY.decode()} marking, so the master key of "
                                "the data derived from it is unknown; encrypt it with dmlops (pseudonymize and a "
                                "schema marked sensitive)")
            return found
    return None


def write_like(data: pa.Table | pa.RecordBatchReader, path: str | BinaryIO, mark: dict[str, Any] | None) -> None:
    """Write ``data`` to the local ``path`` (or an open binary file) encrypted as ``mark`` (:func:`input_marking`) says: its marked
    columns that ``data`` still has (all columns when none is left) under its master key, footer
    encrypted; in plaintext when ``mark`` is None."""
    if mark is None:
        pq.write_table(data if isinstance(data, pa.Table) else data.read_all(), path)
        return
    columns = [name for name in mark["columns"] if name in data.schema.names] or list(data.schema.names)
    _master_keys()
    with _encrypted_writer(path, data.schema, {"key_id": mark["key_id"], "columns": columns}) as writer:
        if isinstance(data, pa.Table):
            writer.write_table(data)
        else:
            for batch in data:
                writer.write_batch(batch)

