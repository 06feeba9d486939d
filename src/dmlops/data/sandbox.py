"""The one way dmlops opens DuckDB: a sandboxed in-memory database for user SQL expressions.

A column expression, a quarantine rule or a validation check is SQL a user wrote, evaluated next to the
step's own inputs. Each connection therefore starts with DuckDB's external access disabled and its
configuration locked (``enable_external_access``, ``allowed_paths`` and ``lock_configuration``, see
duckdb's "Securing DuckDB" guide): the query reads only the Arrow tables registered on it and reads or
writes only the files named here (the step's inputs and outputs); it cannot install or load an extension, attach a
database, read another file (``read_text('/etc/passwd')``), fetch a URL or turn the setting back on.

Encrypted inputs (Parquet modular encryption, :mod:`dmlops.privacy.encryption`) go through here too: DuckDB
cannot decrypt, so :func:`sandboxed_connection` decrypts each encrypted file among its paths with pyarrow
(the key file's KMS) and registers the table on the connection, leaving the file out of the allowed paths;
queries name every input with :func:`parquet_scan`, and :func:`copy_to_parquet` writes an output
encrypted like its inputs when one of them was.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.errors import DataError
from dmlops.privacy import encryption

# Extensions are never fetched or loaded on demand (a URL in an expression would install httpfs).
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


ROW_NUMBER = "file_row_number"  # read_parquet's virtual column of each row's 0-based position in its file


def _decrypted_view(path: str) -> str:
    """The name the decrypted table of the encrypted file at ``path`` has on a sandboxed connection."""
    return "decrypted_" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]


def sandboxed_connection(*paths: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection (time zone UTC) that may read and write the files at ``paths``
    (exact paths, no globs) and nothing else outside itself; its settings cannot be changed afterwards. An
    encrypted Parquet file among ``paths`` is decrypted here and registered as a table (with its
    ``file_row_number`` column); DuckDB itself never opens it."""
    allowed = sorted({os.path.abspath(os.fspath(path)) for path in paths})
    encrypted = [path for path in allowed if encryption.is_encrypted(path)]
    allowed = [path for path in allowed if path not in encrypted]
    connection = duckdb.connect(config=dict(_CONFIG))
    for path in encrypted:
        table = encryption.read_table(path)
        connection.register(_decrypted_view(path), table.append_column(
            ROW_NUMBER, pa.array(range(table.num_rows), pa.int64())))
    connection.execute("SET TimeZone = 'UTC'")
    if allowed:
        connection.execute(f"SET allowed_paths = [{', '.join(_literal(path) for path in allowed)}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def parquet_file(path: str | os.PathLike) -> pq.ParquetFile:
    """The Parquet file at ``path`` for its schema and row count, decrypted when it is encrypted (a wrong
    or missing key is a DataError naming the file)."""
    return encryption.parquet_file(os.fspath(path))


def parquet_scan(path: str | os.PathLike, *, row_numbers: bool = False, options: str = "") -> str:
    """The SQL table expression of the Parquet file at ``path`` on a :func:`sandboxed_connection` given that
    path: ``read_parquet`` with ``options`` for a plaintext file, its decrypted table for an encrypted one;
    ``row_numbers`` adds the column ``file_row_number``."""
    location = os.path.abspath(os.fspath(path))
    if encryption.is_encrypted(location):
        view = _decrypted_view(location)
        return view if row_numbers else f"(SELECT * EXCLUDE ({ROW_NUMBER}) FROM {view})"
    settings = ", ".join(part for part in (options, f"{ROW_NUMBER} = true" if row_numbers else "") if part)
    return f"read_parquet({_literal(location)}{', ' + settings if settings else ''})"


def copy_to_parquet(connection: duckdb.DuckDBPyConnection, query: str, path: str | os.PathLike,
                    inputs: Sequence[str | os.PathLike]) -> None:
    """Write the result of ``query`` to the Parquet file at ``path``: with DuckDB's COPY, or encrypted like
    the first encrypted file among ``inputs`` (its master key and marked columns) when there is one."""
    mark = encryption.input_marking([os.fspath(source) for source in inputs])
    try:
        if mark is None:
            # USE_TMP_FILE false: over an existing file (a retried step) DuckDB would write a tmp_ file beside
            # it first, a path the sandbox does not allow
            connection.execute(f"COPY ({query}) TO {_literal(os.path.abspath(os.fspath(path)))} "
                               "(FORMAT parquet, USE_TMP_FILE false)")
        else:
            encryption.write_like(connection.sql(query).fetch_record_batch(), os.fspath(path), mark)
    except duckdb.Error as error:
        raise DataError(f"writing {os.fspath(path)} failed: {error}") from None
