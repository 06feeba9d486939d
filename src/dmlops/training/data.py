"""Tabular training data: read Parquet from a URI, pick features, fit and apply preprocessing.

Preprocessing statistics (numeric mean/std, categorical vocabularies, the label's :class:`Target`) are
fitted on the training split only and travel with the exported model as a plain dict, so evaluation and
serving encode rows the same way. Nothing here knows a particular data set: the label and feature
columns are arguments.

The task follows from the label when it is not given (:func:`infer_task`): bool or 0/1 is ``binary``,
strings and integers with at most :data:`MAX_INFERRED_CLASSES` distinct values are ``multiclass``, other
numbers ``regression``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.privacy import encryption

UNKNOWN_CATEGORY = 0  # index of unseen and null categories; vocabularies start at 1
TASKS = ("binary", "multiclass", "regression")
MAX_INFERRED_CLASSES = 20  # an integer label with more distinct values is inferred to be regression


@dataclass
class Target:
    """What the label is and how it is encoded: ``binary`` (0/1 as float), ``multiclass`` (the index of
    the value in ``classes``, sorted) or ``regression`` (standardised with ``mean`` and ``std``; the
    export un-standardises)."""

    task: str = "binary"
    classes: list[Any] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")

    @property
    def outputs(self) -> int:
        """Model outputs per row: one logit (binary), one per class (multiclass), one value (regression)."""
        return len(self.classes) if self.task == "multiclass" else 1

    def to_dict(self) -> dict[str, Any]:
        if self.task == "multiclass":
            return {"task": self.task, "classes": list(self.classes)}
        if self.task == "regression":
            return {"task": self.task, "mean": self.mean, "std": self.std}
        return {"task": self.task}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Target:
        """The target of an export's preprocessing; exports before tasks existed are binary."""
        data = data or {}
        return cls(task=data.get("task", "binary"), classes=list(data.get("classes", [])),
                   mean=float(data.get("mean", 0.0)), std=float(data.get("std", 1.0)))

    def encode(self, table: pa.Table, label: str, source: str) -> np.ndarray:
        """The label column encoded for the loss: float32 0/1, int64 class indices or standardised float32."""
        column = _present_label(table, label, source)
        if self.task == "binary":
            return binary_labels(table, label, source)
        if self.task == "regression":
            if not _is_numeric(column.type):
                raise DataError(f"{source}: regression label {label!r} has type {column.type}; it must be numeric")
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            return ((values - self.mean) / self.std).astype(np.float32)
        values = column.to_pylist()
        index = {value: position for position, value in enumerate(self.classes)}
        positions = [index.get(value, -1) for value in values]
        if -1 in positions:
            row = positions.index(-1)
            raise DataError(
                f"{source}: label {label!r} is {values[row]!r} at row {row}, not one of the classes the model "
                f"was trained on {self.classes}"
            )
        return np.asarray(positions, dtype=np.int64)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Class labels for multiclass probabilities [rows, classes]."""
        return np.asarray(self.classes, dtype=object)[np.asarray(outputs).argmax(axis=1)]


@dataclass
class FeatureSpec:
    """Which columns are the label, the numeric features and the categorical features."""

    label: str
    numeric: list[str]
    categorical: list[str]

    @property
    def columns(self) -> list[str]:
        return [self.label, *self.numeric, *self.categorical]


@dataclass
class Preprocessing:
    """Fitted statistics: numeric columns are standardised (nulls become the mean), categorical
    columns map to 1-based vocabulary indices (0 for null or unseen values)."""

    label: str
    numeric: dict[str, dict[str, float]] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    target: Target = field(default_factory=Target)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; columns are lists because the model's input order is their order."""
        return {
            "label": self.label,
            "target": self.target.to_dict(),
            "numeric": [{"column": name, **stats} for name, stats in self.numeric.items()],
            "categorical": [{"column": name, "vocabulary": vocabulary} for name, vocabulary in self.categorical.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            label=data["label"],
            numeric={item["column"]: {"mean": item["mean"], "std": item["std"]} for item in data["numeric"]},
            categorical={item["column"]: list(item["vocabulary"]) for item in data["categorical"]},
            target=Target.from_dict(data.get("target")),
        )

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: vocabulary plus the unknown index."""
        return [len(vocabulary) + 1 for vocabulary in self.categorical.values()]

    def embedding_sizes(self, embedding_dim: int) -> list[int]:
        """Embedding width per categorical column: ``embedding_dim``, or less for tiny vocabularies."""
        return [max(1, min(embedding_dim, cardinality)) for cardinality in self.cardinalities]

    def encode(self, table: pa.Table, source: str) -> tuple[np.ndarray, np.ndarray]:
        """Numeric features as float32 [rows, numeric] and categorical indices as int64 [rows, categorical]."""
        missing = [name for name in [*self.numeric, *self.categorical] if name not in table.column_names]
        if missing:
            raise DataError(
                f"{source}: feature columns {missing} are missing; the model was trained with "
                f"{[*self.numeric, *self.categorical]}"
            )
        numeric = np.zeros((table.num_rows, len(self.numeric)), dtype=np.float32)
        for index, (name, stats) in enumerate(self.numeric.items()):
            values = pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False)
            values = np.where(np.isnan(values), stats["mean"], values)
            numeric[:, index] = (values - stats["mean"]) / stats["std"]
        categorical = np.zeros((table.num_rows, len(self.categorical)), dtype=np.int64)
        for index, (name, vocabulary) in enumerate(self.categorical.items()):
            values = pc.cast(table[name], pa.string())
            positions = pc.index_in(values, value_set=pa.array(vocabulary, pa.string()))
            categorical[:, index] = pc.fill_null(pc.add(positions, 1), UNKNOWN_CATEGORY).to_numpy()
        return numeric, categorical


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file or directory from a local path or a URI (gs://, s3://, minio://, ...)."""
    filesystem, path = storage.filesystem(uri)
    if not filesystem.exists(path):
        raise DataError(f"training data {uri} does not exist; pass the URI of a Parquet file or directory")
    try:
        return encryption.read_table(uri, columns)  # decrypted when encrypted
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{uri}: cannot read as Parquet ({error}); pass a Parquet file or directory") from None


def read_schema(uri: str) -> pa.Schema:
    """The Arrow schema of a Parquet file or directory."""
    filesystem, path = storage.filesystem(uri)
    if not filesystem.exists(path):
        raise DataError(f"training data {uri} does not exist; pass the URI of a Parquet file or directory")
    return encryption.read_schema(uri)


def _is_categorical(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_dictionary(data_type)


def _is_numeric(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_boolean(data_type)


def resolve_features(
    schema: pa.Schema,
    label: str,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    exclude: list[str] | None = None,
    source: str = "training data",
) -> FeatureSpec:
    """Feature columns named explicitly, or inferred from the schema when both lists are empty:
    strings are categorical, numbers and booleans numeric; other types and ``exclude`` are skipped."""
    names = set(schema.names)
    if label not in names:
        raise DataError(f"{source}: label column {label!r} not found; columns are {schema.names}")
    excluded = set(exclude or [])
    unknown = sorted((set(numeric or []) | set(categorical or []) | excluded) - names)
    if unknown:
        raise DataError(f"{source}: feature columns {unknown} not found; columns are {schema.names}")
    if numeric or categorical:
        numeric, categorical = list(numeric or []), list(categorical or [])
        for name in numeric:
            if not _is_numeric(schema.field(name).type):
                raise DataError(
                    f"{source}: numeric feature {name!r} has type {schema.field(name).type}; "
                    "list it as categorical or cast it upstream"
                )
    else:
        candidates = [f for f in schema if f.name != label and f.name not in excluded]
        numeric = [f.name for f in candidates if _is_numeric(f.type)]
        categorical = [f.name for f in candidates if _is_categorical(f.type)]
    numeric = [name for name in numeric if name not in excluded and name != label]
    categorical = [name for name in categorical if name not in excluded and name != label]
    if not numeric and not categorical:
        raise DataError(f"{source}: no feature columns left besides the label {label!r}; columns are {schema.names}")
    return FeatureSpec(label=label, numeric=numeric, categorical=categorical)


def _present_label(table: pa.Table, label: str, source: str) -> pa.ChunkedArray:
    """The label column, or a DataError naming the first null row."""
    column = table[label]
    if column.null_count:
        first = pc.index(pc.is_null(column), True).as_py()
        raise DataError(
            f"{source}: label {label!r} is null in {column.null_count} rows (first at row {first}); "
            "drop or fill those rows before training"
        )
    return column


def infer_task(table: pa.Table, label: str, source: str) -> str:
    """``binary`` for a bool or 0/1 label, ``multiclass`` for strings or integers with at most
    :data:`MAX_INFERRED_CLASSES` distinct values, ``regression`` for other numbers."""
    column = _present_label(table, label, source)
    if pa.types.is_boolean(column.type):
        return "binary"
    if _is_categorical(column.type):
        return "multiclass"
    if not _is_numeric(column.type):
        raise DataError(f"{source}: label {label!r} has type {column.type}; it must be bool, a number or a string")
    distinct = pc.unique(pc.cast(column, pa.float64())).to_numpy(zero_copy_only=False)
    if set(distinct.tolist()) <= {0.0, 1.0}:
        return "binary"
    if pa.types.is_integer(column.type) and len(distinct) <= MAX_INFERRED_CLASSES:
        return "multiclass"
    return "regression"


def fit_target(table: pa.Table, label: str, task: str, source: str) -> Target:
    """The target of ``task`` (empty: :func:`infer_task`) fitted on the training split: the sorted
    classes of a multiclass label, the mean and std of a regression label."""
    task = task or infer_task(table, label, source)
    column = _present_label(table, label, source)
    if task == "multiclass":
        if not (_is_categorical(column.type) or pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)):
            raise DataError(
                f"{source}: multiclass label {label!r} has type {column.type}; it must be strings or integers"
            )
        classes = sorted(pc.unique(pc.cast(column, pa.string()) if pa.types.is_dictionary(column.type)
                                   else column).to_pylist())
        if len(classes) < 2:
            raise DataError(f"{source}: label {label!r} has only the class {classes}; a classifier needs two or more")
        return Target(task, classes=classes)
    if task == "regression":
        if not _is_numeric(column.type):
            raise DataError(f"{source}: regression label {label!r} has type {column.type}; it must be numeric")
        values = pc.cast(column, pa.float64())
        std = pc.stddev(values).as_py()
        return Target(task, mean=float(pc.mean(values).as_py()), std=float(std) if std else 1.0)
    binary_labels(table, label, source)  # a label that is not 0/1 fails here, naming the row
    return Target(task)


def binary_labels(table: pa.Table, label: str, source: str) -> np.ndarray:
    """The label column as float32 0/1; a bool or 0/1 column, no nulls, else a DataError naming the row."""
    column = _present_label(table, label, source)
    if pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float32)
    if not _is_numeric(column.type):
        raise DataError(f"{source}: label {label!r} has type {column.type}; it must be bool or 0/1")
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise DataError(
            f"{source}: label {label!r} must be 0 or 1 but is {float(values[bad[0]])!r} at row {int(bad[0])} "
            f"({bad.size} such rows); the label must be binary for task 'binary' (choose task 'multiclass' "
            "or 'regression' for other labels)"
        )
    return values.astype(np.float32)


def fit_preprocessing(table: pa.Table, spec: FeatureSpec, max_categories: int = 1000,
                      target: Target | None = None) -> Preprocessing:
    """Fit numeric mean/std and categorical vocabularies (most frequent first, ties by value); the
    label's ``target`` travels with them (default: binary)."""
    numeric = {}
    for name in spec.numeric:
        values = pc.cast(table[name], pa.float64())
        mean = pc.mean(values).as_py()
        std = pc.stddev(values).as_py()
        numeric[name] = {
            "mean": float(mean) if mean is not None else 0.0,
            "std": float(std) if std else 1.0,
        }
    categorical = {}
    for name in spec.categorical:
        counts = pc.value_counts(pc.drop_null(pc.cast(table[name], pa.string())))
        pairs = sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()),
                       key=lambda pair: (-pair[1], pair[0]))
        categorical[name] = [value for value, _ in pairs[:max_categories]]
    return Preprocessing(label=spec.label, numeric=numeric, categorical=categorical, target=target or Target())


@dataclass
class EncodedData:
    """A split ready for training: numeric and categorical feature arrays and the encoded labels
    (:meth:`Target.encode`)."""

    numeric: np.ndarray
    categorical: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_encoded(uri: str, preprocessing: Preprocessing) -> EncodedData:
    """Read a split and encode it with fitted preprocessing."""
    columns = [preprocessing.label, *preprocessing.numeric, *preprocessing.categorical]
    schema = read_schema(uri)
    missing = [name for name in columns if name not in schema.names]
    if missing:
        raise DataError(f"{uri}: columns {missing} are missing; the model uses {columns}")
    table = read_table(uri, columns)
    if table.num_rows == 0:
        raise DataError(f"{uri}: no rows; pass a non-empty split")
    numeric, categorical = preprocessing.encode(table, uri)
    return EncodedData(numeric, categorical, preprocessing.target.encode(table, preprocessing.label, uri))


def epoch_shard(num_rows: int, epoch: int, seed: int, rank: int, world_size: int) -> np.ndarray:
    """Row indices of one rank for one epoch: a seeded permutation, padded by wrapping to a multiple of
    ``world_size`` (as DistributedSampler does, so every rank runs the same number of steps), then
    every ``world_size``-th row from ``rank``. Rank r's i-th row is the permutation's
    (i * world_size + r)-th, so a global batch is the same rows whatever the number of workers."""
    order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    padded = -(-num_rows // world_size) * world_size
    order = np.resize(order, padded)
    return order[rank::world_size]
