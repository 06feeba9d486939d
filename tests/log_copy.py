"""Every JSON log line the test suite's processes write, checked for fields that change type.

The session points ``DMLOPS_LOG_COPY`` at one file (unless it is set already), so that every process it
starts appends its lines there (:mod:`dmlops.platform.logs`); the test process itself copies its own
records too. At the end of the session a field that held two JSON types (a string in one line, a number in
another: the Elasticsearch mapping conflict of fluent/fluent-bit#4830) fails the session, naming the
field, both types and a line of each.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmlops.platform import logs

JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "object",
              type(None): "null"}
_HANDLER = pytest.StashKey[logs.AppendLines]()
_CREATED = pytest.StashKey[bool]()


@dataclass
class TypeConflict:
    field: str
    first_type: str
    first_line: str
    other_type: str
    other_line: str

    def __str__(self) -> str:
        return (f"log field {self.field!r} is {self.first_type} in\n  {self.first_line[:500]}\n"
                f"but {self.other_type} in\n  {self.other_line[:500]}")


def type_conflicts(lines) -> tuple[list[TypeConflict], list[str], int]:
    """The fields of ``lines`` (JSON objects, one a line) that change type, each once; the lines that are
    not JSON objects; and how many lines were read."""
    seen: dict[str, tuple[str, str]] = {}
    conflicts: dict[str, TypeConflict] = {}
    unreadable: list[str] = []
    count = 0
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        count += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            unreadable.append(line)
            continue
        for field, value in record.items():
            kind = JSON_TYPES[type(value)]
            first = seen.setdefault(field, (kind, line))
            if first[0] != kind and field not in conflicts:
                conflicts[field] = TypeConflict(field, first[0], first[1], kind, line)
    return list(conflicts.values()), unreadable, count


def start(config) -> None:
    """Point ``DMLOPS_LOG_COPY`` at a new file for this session's processes, and copy this process's records."""
    config.stash[_CREATED] = not os.environ.get(logs.COPY_ENV)
    if config.stash[_CREATED]:
        handle, path = tempfile.mkstemp(prefix="dmlops-test-logs-", suffix=".jsonl")
        os.close(handle)
        os.environ[logs.COPY_ENV] = path
    handler = logs.copy_handler(os.environ[logs.COPY_ENV])
    logging.getLogger().addHandler(handler)
    config.stash[_HANDLER] = handler


def check(session) -> None:
    """Fail the session when a field of the copied lines changed type; report how many lines were read. The
    file is kept when it shows a problem or was named by the environment."""
    handler = session.config.stash.get(_HANDLER, None)
    if handler is None:
        return
    logging.getLogger().removeHandler(handler)
    handler.close()
    path = Path(handler.path)
    with path.open(errors="replace") as lines:
        conflicts, unreadable, count = type_conflicts(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    problems = [str(conflict) for conflict in conflicts] + [f"log line is not a JSON object: {line}"
                                                            for line in unreadable[:5]]
    if reporter is not None:
        reporter.write("\n")  # after the progress line
        reporter.write_line(f"log lines: {count} JSON lines of the session's processes in {path}; "
                            f"{len(conflicts)} field(s) changed type")
        for problem in problems:
            reporter.write_line(problem, red=True)
    if problems and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not problems and session.config.stash[_CREATED]:
        path.unlink()


def mistyped_fields(record: dict) -> list[str]:
    """The fields of a JSON log line that are not of their declared type (labels: strings), or not declared."""
    wrong = []
    for field, value in record.items():
        kind = str if field.startswith("labels.") else logs.FIELD_TYPES.get(field)
        if kind is None or type(value) is not kind:
            wrong.append(f"{field}={value!r}")
    return wrong


def json_lines(text: str) -> list[dict]:
    """The JSON log lines among ``text``'s lines (others, e.g. KFP's own lines before dmlops starts, skipped)."""
    return [json.loads(line) for line in (line.strip() for line in text.splitlines())
            if line.startswith('{"@timestamp": ')]
