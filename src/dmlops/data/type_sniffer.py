"""The column types of an undeclared CSV input, sniffed from every value of the input (not the first block),
so a value's position cannot change a column's type."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from dmlops.data.conform import _PARSABLE, _column


_INFERRED = {  # candidate types for a text column, with the pattern a value must match
    "int64": r"^[+-]?[0-9]+$",
    "double": _PARSABLE["floating"],
    "bool": r"^(?i:true|false)$",
    "date32": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "timestamp": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$",
}

_FITTING = {"int64": ("int64", "double"), "double": ("double",), "timestamp[s, tz=UTC]": ("timestamp",)}


class _TypeSniffer:
    """Counts, over every value of the input, the values of each undeclared text column that do not fit each
    candidate type, so a column's type does not depend on where a value sits."""

    def __init__(self, names: list[str], max_bad_fraction: float):
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in names}
        self.strict = max_bad_fraction == 0  # one misfit rules a candidate out: stop looking at it
        self.approximate: set[str] = set()  # columns whose int64 misfits were counted from doubles, not text

    def update(self, table: pa.Table) -> dict[str, pa.Array]:
        """Count one batch of columns, text or already parsed to int64, double or timestamp[s, UTC] (every
        value fits that type); returns the text columns that cast whole to a candidate type (int64, double or
        timestamp[s, UTC]), cast, so they need not be cast again."""
        casted = {}
        for name, counts in self.counts.items():
            parsed = table.schema.field(name).type
            if not pa.types.is_string(parsed):
                self._count_parsed(name, _column(table, name), parsed)
                continue
            candidates = [candidate for candidate in _INFERRED
                          if not (self.strict and counts[f"misfit:{candidate}"])]
            if not candidates:
                continue
            text = _column(table, name)
            total = len(text) - text.null_count
            if not total:
                continue
            counts["values"] += total
            fits = {}
            for candidate in candidates:
                if candidate != "int64" and fits.get("int64") == total:
                    fits[candidate] = total if candidate == "double" else 0  # integers are doubles, nothing else
                elif candidate in ("bool", "date32", "timestamp") and fits.get("double") == total:
                    fits[candidate] = 0
                else:
                    fits[candidate], whole = self._fitting(text, candidate, total)
                    if whole is not None and name not in casted:
                        casted[name] = whole
            if fits.get("timestamp") == total and name in casted and pa.types.is_timestamp(casted[name].type):
                counts["zoned"] += total  # cast whole to timestamp[s, UTC]: every value zoned, whole seconds
            elif fits.get("timestamp"):
                stamps = pc.filter(text, pc.fill_null(pc.match_substring_regex(text, _INFERRED["timestamp"]), False))
                counts["zoned"] += self._count(stamps, r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$")
                counts["fractional"] += self._count(stamps, r"\.[0-9]")
            for candidate in candidates:
                counts[f"misfit:{candidate}"] += total - fits[candidate]
        return casted

    def _count_parsed(self, name: str, values: pa.Array, parsed: pa.DataType) -> None:
        """Count values parsed to a type as their text would count: they fit that type (and an int64, a
        double); none fits another candidate (their text matches none of their patterns). Whether a double's
        text was an integer is not known: counted as not, and the column marked approximate."""
        total = len(values) - values.null_count
        if not total:
            return
        counts = self.counts[name]
        counts["values"] += total
        fitting = _FITTING[str(parsed)]
        for candidate in _INFERRED:
            if candidate not in fitting:
                counts[f"misfit:{candidate}"] += total
        if "timestamp" in fitting:
            counts["zoned"] += total
        if parsed == pa.float64():
            self.approximate.add(name)

    def settled(self) -> bool:
        """Whether the columns counted approximately are doubles by an exact count: no value misfit a double
        (the int64 candidate was ruled out by the text seen first)."""
        return all(self.counts[name]["misfit:double"] == 0 for name in self.approximate)

    @staticmethod
    def _count(text: pa.Array, pattern: str) -> int:
        return pc.sum(pc.match_substring_regex(text, pattern)).as_py() or 0

    def _fitting(self, text: pa.Array, candidate: str, total: int) -> tuple[int, pa.Array | None]:
        """How many values fit a candidate type, and the column cast when all do: a cast first (fast; its first
        values first, as a cast that fails takes long), else a pattern count."""
        quick = {"int64": pa.int64(), "double": pa.float64(), "timestamp": pa.timestamp("s", tz="UTC")}
        if candidate in quick:
            try:
                pc.cast(text.slice(0, 64), quick[candidate])
                return total, pc.cast(text, quick[candidate])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        return self._count(text, _INFERRED[candidate]), None

    def types(self, rows: int, max_bad_fraction: float) -> dict[str, pa.DataType]:
        """Each column's type: the narrowest candidate every value fits; else the one with the fewest misfits
        when they are a minority within ``max_bad_fraction`` of ``rows`` (they are quarantined); else string."""
        allowed = int(max_bad_fraction * rows)
        found = {}
        for name, counts in self.counts.items():
            misfits = {candidate: counts[f"misfit:{candidate}"] for candidate in _INFERRED}
            chosen = "string"
            if counts["values"]:
                exact = [candidate for candidate, count in misfits.items() if count == 0]
                nearest = min(misfits, key=lambda candidate: misfits[candidate])
                tolerated = misfits[nearest] <= allowed and 2 * misfits[nearest] < counts["values"]
                chosen = exact[0] if exact else nearest if tolerated else "string"
            if chosen == "timestamp":
                unit = "ns" if counts["fractional"] else "s"
                found[name] = pa.timestamp(unit, tz="UTC") if counts["zoned"] else pa.timestamp(unit)
            else:
                found[name] = {"int64": pa.int64(), "bool": pa.bool_(), "date32": pa.date32(),
                               "double": pa.float64(), "string": pa.string()}[chosen]
        return found
