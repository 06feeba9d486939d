"""The feature contract of a served model: check request rows against the feature schema saved with
the model, and encode them with its fitted preprocessing.

The schema, the preprocessing and the training domain come from the exported model's ``metadata.json``.
:meth:`FeatureContract.guard` compares rows with the domain each feature had in training (numeric
range, categories, nulls) under a policy: ``flag`` (score them, report them), ``clip`` (numeric values
clipped into the training range) or ``reject`` (a RequestError). Encoding gives the
same arrays as the training preprocessing (``dmlops.training.data.Preprocessing.encode``) without
building an Arrow table per request: numeric columns are standardised (null -> mean), categorical
columns map to 1-based vocabulary indices (null or unseen -> 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmlops.training.data import UNKNOWN_CATEGORY, Preprocessing

_INTEGER_TYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT_TYPES = {"halffloat", "float", "double", "float16", "float32", "float64"}
_STRING_TYPES = {"string", "large_string", "utf8", "large_utf8"}
DOMAIN_POLICIES = ("flag", "clip", "reject")
_V2_NUMBERS = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"}
V2_DATATYPES = frozenset({"BOOL", "BYTES", *_V2_NUMBERS})
# the V2 datatypes a feature of each kind accepts (JSON numbers carry no width: any number type fits)
_V2_ACCEPTED = {"integer": _V2_NUMBERS, "float": _V2_NUMBERS, "bool": {"BOOL"}, "string": {"BYTES"}, "any": V2_DATATYPES}


class RequestError(ValueError):
    """A request that breaks the model's feature contract; the message names the field and the fix."""


def _kind(arrow_type: str) -> str:
    """``integer``, ``float``, ``bool``, ``string`` or ``any`` for an Arrow type name from the metadata."""
    if arrow_type in _INTEGER_TYPES:
        return "integer"
    if arrow_type in _FLOAT_TYPES or arrow_type.startswith("decimal"):
        return "float"
    if arrow_type == "bool":
        return "bool"
    if arrow_type in _STRING_TYPES or arrow_type.startswith("dictionary"):
        return "string"
    return "any"


def _check_value(name: str, kind: str, value: Any, where: str) -> None:
    if value is None:
        return
    if kind == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, (str, int, float, bool))
    if not ok:
        # the value itself stays out of the message (and the log): it may be personal data
        raise RequestError(f"{where}: feature {name!r} must be {kind} or null, got {type(value).__name__}")


def _category_text(value: Any) -> str:
    """A categorical value as the training preprocessing saw it (Arrow's cast to string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e16 else repr(value)
    return str(value)


@dataclass(frozen=True)
class OutOfDomain:
    """A row value outside the feature's training domain: ``kind`` is ``range``, ``category``, ``null``
    (the feature was never null in training) or ``empty`` (every feature of the row is null; ``feature`` "")."""

    row: int
    feature: str
    kind: str

    def describe(self, domain: dict[str, Any]) -> str:
        """What is wrong, without the value (it may be personal data)."""
        if self.kind == "empty":
            return f"row {self.row}: every feature is null"
        if self.kind == "range":
            return (f"row {self.row}: feature {self.feature!r} is outside its training range "
                    f"[{domain['min']}, {domain['max']}]")
        if self.kind == "category":
            return f"row {self.row}: feature {self.feature!r} has a category the model never saw in training"
        return f"row {self.row}: feature {self.feature!r} is null but was never null in training"


class FeatureContract:
    """The features a model takes, in order, with their types and the fitted preprocessing."""

    def __init__(self, numeric: list[str], categorical: list[str], types: dict[str, str], preprocessing: Preprocessing,
                 domain: dict[str, dict[str, Any]] | None = None):
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.types = dict(types)
        self.preprocessing = preprocessing
        self.domain = {name: dict(entry) for name, entry in (domain or {}).items() if name in self.features}
        self._categories = {name: set(entry["categories"]) for name, entry in self.domain.items()
                            if entry.get("categories") is not None}
        self._kinds = {name: _kind(self.types.get(name, "")) for name in self.features}
        self._mean_list = [preprocessing.numeric[name]["mean"] for name in self.numeric]
        self._means = np.array(self._mean_list, np.float64)
        self._stds = np.array([preprocessing.numeric[name]["std"] for name in self.numeric], np.float64)
        self._vocabularies = [
            {value: index + 1 for index, value in enumerate(preprocessing.categorical[name])}
            for name in self.categorical
        ]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> FeatureContract:
        """The contract in an exported model's metadata (``inputs``, ``feature_schema``, ``preprocessing`` and,
        from models that recorded it, ``feature_domain``)."""
        for key in ("inputs", "feature_schema", "preprocessing"):
            if key not in metadata:
                raise ValueError(f"model metadata has no {key!r}; export the model with dmlops.training")
        inputs = metadata["inputs"]
        return cls(inputs["numeric"]["columns"], inputs["categorical"]["columns"], metadata["feature_schema"],
                   Preprocessing.from_dict(metadata["preprocessing"]), metadata.get("feature_domain"))

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names in the order list-shaped instances use: numeric, then categorical."""
        return (*self.numeric, *self.categorical)

    def rows_from_instances(self, instances: Any, extra_fields: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """V1 ``instances``: a list of objects keyed by feature name, or of lists in feature order.

        Every feature must be present (null is allowed and means "missing"); fields that are neither a
        feature nor in ``extra_fields`` are refused, so a misspelt feature never goes unnoticed.
        """
        if not isinstance(instances, list) or not instances:
            raise RequestError('"instances" must be a non-empty list of objects keyed by feature name')
        rows = []
        for index, instance in enumerate(instances):
            where = f"instances[{index}]"
            if isinstance(instance, list):
                if len(instance) != len(self.features):
                    raise RequestError(
                        f"{where}: has {len(instance)} values but the model takes {len(self.features)} "
                        f"features in this order: {list(self.features)}"
                    )
                instance = dict(zip(self.features, instance))
            elif not isinstance(instance, dict):
                raise RequestError(f"{where}: must be an object keyed by feature name, got {type(instance).__name__}")
            self.check_row(instance, where, extra_fields)
            rows.append(instance)
        return rows

    def check_row(self, row: dict[str, Any], where: str, extra_fields: frozenset[str] = frozenset()) -> None:
        """Raise RequestError naming the first missing, unknown or mistyped field of ``row``."""
        kinds = self._kinds
        for name in self.features:
            if name not in row:
                raise RequestError(f"{where}: feature {name!r} is missing; send every feature: {list(self.features)}")
            _check_value(name, kinds[name], row[name], where)
        if len(row) > len(self.features):
            unknown = sorted(set(row) - set(self.features) - extra_fields)
            if unknown:
                raise RequestError(
                    f"{where}: unknown field(s) {unknown}; the model takes {list(self.features)}"
                )

    def check_datatype(self, name: str, datatype: str) -> None:
        """Raise RequestError unless ``datatype`` is a V2 datatype that fits feature ``name`` (unknown names
        are left to :meth:`check_row`)."""
        if datatype not in V2_DATATYPES:
            raise RequestError(f"input {name!r}: datatype {datatype[:20]!r} is not a V2 datatype {sorted(V2_DATATYPES)}")
        kind = self._kinds.get(name)
        if kind is not None and datatype not in _V2_ACCEPTED[kind]:
            raise RequestError(f"input {name!r}: datatype {datatype} does not fit a {kind} feature")

    def out_of_domain(self, rows: list[dict[str, Any]]) -> list[OutOfDomain]:
        """Every value of ``rows`` (already checked by :meth:`check_row`) outside the training domain."""
        found = []
        for index, row in enumerate(rows):
            if all(row[name] is None for name in self.features):
                found.append(OutOfDomain(index, "", "empty"))
                continue
            for name in self.features:
                entry, value = self.domain.get(name), row[name]
                if entry is None:
                    continue
                if value is None:
                    if entry.get("nulls") is False:
                        found.append(OutOfDomain(index, name, "null"))
                elif name in self._categories:
                    text = value if isinstance(value, str) else _category_text(value)
                    if text not in self._categories[name]:
                        found.append(OutOfDomain(index, name, "category"))
                elif entry.get("min") is not None and not entry["min"] <= value <= entry["max"]:
                    found.append(OutOfDomain(index, name, "range"))
        return found

    def guard(self, rows: list[dict[str, Any]], policy: str) -> tuple[list[dict[str, Any]], list[OutOfDomain]]:
        """The rows to score under ``policy`` (:data:`DOMAIN_POLICIES`) and what was outside the domain:
        ``flag`` scores the rows as sent, ``clip`` clips numeric values into the training range, ``reject``
        raises a RequestError naming the first value outside."""
        found = self.out_of_domain(rows)
        if found and policy == "reject":
            raise RequestError(f"{found[0].describe(self.domain.get(found[0].feature, {}))}; "
                               f"{len(found)} value(s) outside the training domain in this request")
        if policy == "clip":
            rows = list(rows)
            for item in found:
                if item.kind == "range":
                    entry = self.domain[item.feature]
                    rows[item.row] = dict(rows[item.row])
                    rows[item.row][item.feature] = min(max(rows[item.row][item.feature], entry["min"]), entry["max"])
        return rows, found

    def encode(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Numeric float32 [rows, numeric] and categorical int64 [rows, categorical] model inputs."""
        means = self._mean_list
        raw = np.array(
            [[mean if row[name] is None else row[name] for name, mean in zip(self.numeric, means)] for row in rows],
            dtype=np.float64,
        ).reshape(len(rows), len(self.numeric))
        with np.errstate(over="ignore"):  # beyond float32: infinite, refused by the predictor's finiteness check
            numeric = ((raw - self._means) / self._stds).astype(np.float32)
        categorical = np.array(
            [
                [
                    UNKNOWN_CATEGORY if row[name] is None else vocabulary.get(
                        row[name] if isinstance(row[name], str) else _category_text(row[name]), UNKNOWN_CATEGORY
                    )
                    for name, vocabulary in zip(self.categorical, self._vocabularies)
                ]
                for row in rows
            ],
            dtype=np.int64,
        ).reshape(len(rows), len(self.categorical))
        return numeric, categorical

    def describe(self) -> list[dict[str, str]]:
        """The inputs as KServe model metadata lists them: name, datatype and shape per feature."""
        datatypes = {"integer": "INT64", "float": "FP64", "bool": "BOOL", "string": "BYTES", "any": "BYTES"}
        return [{"name": name, "datatype": datatypes[self._kinds[name]], "shape": [-1]} for name in self.features]
