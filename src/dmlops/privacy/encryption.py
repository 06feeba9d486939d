"""Parquet modular encryption (pyarrow ``parquet.encryption``) for sensitive datasets, with master keys
from a key file: a Kubernetes Secret mounted as a file in a cluster, a local file otherwise.

The key file (``DMLOPS_PARQUET_KEYS_FILE``) is JSON ``{"<key id>": "<base64 of 16, 24 or 32 bytes>"}``.
Parquet's envelope encryption writes each file with random data keys; :class:`KeyFileKms` wraps them
with the named master key (AES-GCM), so the file holds only wrapped keys and the master keys never leave
the Secret. The footer and the listed columns are encrypted; a reader without the key file cannot read
the encrypted columns or, with an encrypted footer, even the schema.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dmlops.data.errors import DataError

KEYS_VARIABLE = "DMLOPS_PARQUET_KEYS_FILE"


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
    config = pe.EncryptionConfiguration(footer_key=key_id, column_keys={key_id: columns}, double_wrapping=False)
    properties = _factory().file_encryption_properties(pe.KmsConnectionConfig(), config)
    with pq.ParquetWriter(path, table.schema, encryption_properties=properties) as writer:
        writer.write_table(table)


def is_encrypted(path: str) -> bool:
    """Whether the Parquet file at ``path`` has an encrypted footer (its magic bytes are ``PARE``)."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return handle.read(4) == b"PARE"


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file, decrypting it with the key file when it is encrypted."""
    if not is_encrypted(path):
        return pq.read_table(path, columns=columns)
    properties = _factory().file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    try:
        return pq.ParquetFile(path, decryption_properties=properties).read(columns=columns)
    except (OSError, ValueError) as error:  # a wrong or missing master key, or a changed file
        raise DataError(f"{path}: cannot decrypt ({error})") from None


def decrypted_copy(path: str, target: str) -> str:
    """``target``: a plaintext copy of an encrypted Parquet file for an engine that cannot decrypt (DuckDB),
    kept inside the step's own folder; ``path`` itself when it is not encrypted."""
    if not is_encrypted(path):
        return path
    pq.write_table(read_table(path), target)
    return target
