"""The feature contract of a served model: check request rows against the feature schema saved with
the model, and encode them with its fitted preprocessing.

The schema and the preprocessing come from the exported model's ``metadata.json``. Encoding gives the
same arrays as the training preprocessing (``dmlops.training.data.Preprocessing.encode``) without
building an Arrow table per request: numeric columns are standardised (null -> mean), categorical
columns map to 1-based vocabulary indices (null or unseen -> 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dmlops.training.data import UNKNOWN_CATEGORY, Preprocessing

_INTEGER_TYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT_TYPES = {"halffloat", "float", "double", "float16", "float32", "float64"}
_STRING_TYPES = {"string", "large_string", "utf8", "large_utf8"}


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
        raise RequestError(
            f"{where}: feature {name!r} must be {kind} or null, got {type(value).__name__} {value!r:.60}"
        )


def _category_text(value: Any) -> str:
    """A categorical value as the training preprocessing saw it (Arrow's cast to string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e16 else repr(value)
    return str(value)


class FeatureContract:
    """The features a model takes, in order, with their types and the fitted preprocessing."""

    def __init__(self, numeric: list[str], categorical: list[str], types: dict[str, str], preprocessing: Preprocessing):
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.types = dict(types)
        self.preprocessing = preprocessing
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
        """The contract in an exported model's metadata (``inputs``, ``feature_schema``, ``preprocessing``)."""
        for key in ("inputs", "feature_schema", "preprocessing"):
            if key not in metadata:
                raise ValueError(f"model metadata has no {key!r}; export the model with dmlops.training")
        inputs = metadata["inputs"]
        return cls(inputs["numeric"]["columns"], inputs["categorical"]["columns"], metadata["feature_schema"],
                   Preprocessing.from_dict(metadata["preprocessing"]))

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

    def encode(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Numeric float32 [rows, numeric] and categorical int64 [rows, categorical] model inputs."""
        means = self._mean_list
        raw = np.array(
            [[mean if row[name] is None else row[name] for name, mean in zip(self.numeric, means)] for row in rows],
            dtype=np.float64,
        ).reshape(len(rows), len(self.numeric))
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
