"""Collect trial metrics the way Katib's StdOut and File metrics collectors do.

Every line a trial prints (or writes to its metrics file) is matched against the filter regular
expressions (Katib's default matches ``name=value``); each match of a metric the objective names is one
entry of the trial's observation log. A metric's value for the trial is then the ``min``, ``max`` or
``latest`` of its entries, as the objective's metric strategy says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

DEFAULT_METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
FILE_FORMATS = ("TEXT", "JSON")


@dataclass
class ObservationLog:
    """The values each named metric reported, in order."""

    metric_names: tuple[str, ...]
    metrics_format: tuple[str, ...] = (DEFAULT_METRICS_FORMAT,)
    file_format: str = "TEXT"
    values: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.file_format not in FILE_FORMATS:
            raise ValueError(f"metrics file format {self.file_format!r} is unknown; use TEXT or JSON")
        self._filters = []
        for pattern in self.metrics_format:
            compiled = re.compile(pattern)
            if compiled.groups < 2:
                raise ValueError(
                    f"metrics filter {pattern!r} must have two groups, the metric name and its value"
                )
            self._filters.append(compiled)
        self.values = {name: [] for name in self.metric_names}

    def feed(self, line: str) -> list[tuple[str, float]]:
        """Record the metrics on one output line; returns the (name, value) pairs it held."""
        found = self._parse_json(line) if self.file_format == "JSON" else self._parse_text(line)
        for name, value in found:
            self.values[name].append(value)
        return found

    def _parse_text(self, line: str) -> list[tuple[str, float]]:
        found = []
        for pattern in self._filters:
            for match in pattern.finditer(line):
                name, text = match.group(1).strip(), match.group(2).strip()
                if name in self.values:
                    try:
                        found.append((name, float(text)))
                    except ValueError:
                        continue
        return found

    def _parse_json(self, line: str) -> list[tuple[str, float]]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return []
        if not isinstance(record, dict):
            return []
        found = []
        for name in self.metric_names:
            if name in record:
                try:
                    found.append((name, float(record[name])))
                except (TypeError, ValueError):
                    continue
        return found

    def value(self, name: str, strategy: str) -> float | None:
        """The metric's value for the trial (``min``, ``max`` or ``latest`` entry), None if never reported."""
        reported = self.values.get(name) or []
        if not reported:
            return None
        if strategy == "min":
            return min(reported)
        if strategy == "max":
            return max(reported)
        return reported[-1]
