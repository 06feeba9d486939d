"""The one way dmlops opens DuckDB: a sandboxed in-memory database for user SQL expressions.

A column expression, a quarantine rule or a validation check is SQL a user wrote, evaluated next to the
step's own inputs. Each connection therefore starts with DuckDB's external access disabled and its
configuration locked (``enable_external_access``, ``allowed_paths`` and ``lock_configuration``, see
duckdb's "Securing DuckDB" guide): the query reads only the Arrow tables registered on it and reads or
writes only the files named here (the step's inputs and outputs); it cannot install or load an extension, attach a
database, read another file (``read_text('/etc/passwd')``), fetch a URL or turn the setting back on.
"""

from __future__ import annotations

import os
import duckdb

# Extensions are never fetched or loaded on demand (a URL in an expression would install httpfs).
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sandboxed_connection(*paths: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection (time zone UTC) that may read and write the files at ``paths``
    (exact paths, no globs) and nothing else outside itself; its settings cannot be changed afterwards."""
    allowed = sorted({os.path.abspath(os.fspath(path)) for path in paths})
    connection = duckdb.connect(config=dict(_CONFIG))
    connection.execute("SET TimeZone = 'UTC'")
    if allowed:
        connection.execute(f"SET allowed_paths = [{', '.join(_literal(path) for path in allowed)}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection
