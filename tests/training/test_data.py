"""Feature selection, labels, preprocessing and rank sharding (no framework needed)."""

import numpy as np
import pyarrow as pa
import pytest

from dmlops.data.errors import DataError
from dmlops.training.data import (
    binary_labels,
    epoch_shard,
    fit_preprocessing,
    resolve_features,
)


def test_features_are_inferred_from_types_and_exclusions_are_honoured(table_maker):
    schema = table_maker(10, seed=0).schema
    spec = resolve_features(schema, "label")
    assert spec.numeric == ["signal", "count"]
    assert spec.categorical == ["group"]  # the timestamp column is neither and is skipped
    assert resolve_features(schema, "label", exclude=["count"]).numeric == ["signal"]


def test_explicit_features_are_checked_against_the_schema(table_maker):
    schema = table_maker(10, seed=0).schema
    with pytest.raises(DataError, match=r"label column 'target' not found"):
        resolve_features(schema, "target")
    with pytest.raises(DataError, match=r"\['missing'\] not found"):
        resolve_features(schema, "label", numeric=["missing"])
    with pytest.raises(DataError, match=r"numeric feature 'group' has type string"):
        resolve_features(schema, "label", numeric=["group"])


def test_labels_must_be_binary_and_present_and_errors_name_the_row():
    assert binary_labels(pa.table({"y": [True, False]}), "y", "f").tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match=r"f: label 'y' is null in 1 rows \(first at row 2\)"):
        binary_labels(pa.table({"y": [0, 1, None]}), "y", "f")
    with pytest.raises(DataError, match=r"must be 0 or 1 but is 2.0 at row 1"):
        binary_labels(pa.table({"y": [0, 2, 1]}), "y", "f")


def test_preprocessing_is_fitted_on_training_rows_and_maps_the_unknown():
    train = pa.table({"x": [1.0, 3.0, None], "c": ["b", "a", "b"], "y": [0, 1, 0]})
    spec = resolve_features(train.schema, "y")
    preprocessing = fit_preprocessing(train, spec)
    assert preprocessing.numeric["x"]["mean"] == pytest.approx(2.0)
    assert preprocessing.categorical["c"] == ["b", "a"]  # most frequent first
    other = pa.table({"x": [2.0, None], "c": ["a", "never-seen"], "y": [1, 0]})
    numeric, categorical = preprocessing.encode(other, "eval")
    assert numeric[:, 0].tolist() == [0.0, 0.0]  # the training mean; a null becomes the mean
    assert categorical[:, 0].tolist() == [2, 0]  # 'a' is index 2; unseen is 0
    restored = type(preprocessing).from_dict(preprocessing.to_dict())
    assert np.array_equal(restored.encode(other, "eval")[1], categorical)


def test_encoding_without_a_trained_column_names_it():
    preprocessing = fit_preprocessing(pa.table({"x": [1.0], "y": [1]}), resolve_features(
        pa.schema([("x", pa.float64()), ("y", pa.int64())]), "y"))
    with pytest.raises(DataError, match=r"serving.parquet: feature columns \['x'\] are missing"):
        preprocessing.encode(pa.table({"z": [1.0]}), "serving.parquet")


@pytest.mark.parametrize("rows", [10, 11])
def test_rank_shards_cover_every_row_and_form_the_same_global_batches(rows):
    one = epoch_shard(rows, epoch=3, seed=7, rank=0, world_size=1)
    shards = [epoch_shard(rows, epoch=3, seed=7, rank=rank, world_size=2) for rank in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert set(np.concatenate(shards)) == set(range(rows))
    # global batch of 4 = 2 per rank: the same rows as one worker's batch of 4
    assert set(shards[0][:2]) | set(shards[1][:2]) == set(one[:4])
    assert not np.array_equal(one, epoch_shard(rows, epoch=4, seed=7, rank=0, world_size=1))
