"""The request feature contract: schema checks name the field; encoding equals the training preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.serving.features import FeatureContract, RequestError
from dmlops.training.data import Preprocessing


@pytest.fixture(scope="module")
def contract(model_dir) -> FeatureContract:
    return FeatureContract.from_metadata(json.loads((model_dir / "metadata.json").read_text()))


def test_encoding_equals_training_preprocessing(contract, model_dir, data_dir):
    table = pq.read_table(data_dir / "eval.parquet").drop_columns(["label"])
    rows = table.to_pylist()
    rows[0]["carrier"] = "never-seen"
    rows[1]["distance"] = None
    rows[2]["carrier"] = None
    rows[3]["weekend"] = None
    table = pa.Table.from_pylist(rows, schema=table.schema)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    expected_numeric, expected_categorical = Preprocessing.from_dict(metadata["preprocessing"]).encode(table, "eval")
    numeric, categorical = contract.encode(rows)
    np.testing.assert_array_equal(numeric, expected_numeric)
    np.testing.assert_array_equal(categorical, expected_categorical)
    assert categorical[0, contract.categorical.index("carrier")] == 0  # unseen -> unknown index


def test_list_instances_follow_feature_order(contract, eval_rows):
    as_lists = [[row[name] for name in contract.features] for row in eval_rows[:3]]
    assert contract.rows_from_instances(as_lists) == [{name: row[name] for name in contract.features} for row in eval_rows[:3]]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda row: row.pop("dep_hour"), "feature 'dep_hour' is missing"),
        (lambda row: row.update(distance="far"), "feature 'distance' must be float or null, got str"),
        (lambda row: row.update(dep_hour=7.5), "feature 'dep_hour' must be integer"),
        (lambda row: row.update(weekend="yes"), "feature 'weekend' must be bool"),
        (lambda row: row.update(origin=3), "feature 'origin' must be string"),
        (lambda row: row.update(distanse=1.0), "unknown field(s) ['distanse']"),
        (lambda row: row.update(distance=[1.0, 2.0]), "feature 'distance' must be float"),
    ],
)
def test_bad_rows_name_the_field(contract, eval_rows, change, message):
    row = dict(eval_rows[0])
    change(row)
    with pytest.raises(RequestError) as caught:
        contract.rows_from_instances([dict(eval_rows[1]), row])
    assert "instances[1]" in str(caught.value) and message in str(caught.value)


def test_nulls_are_allowed_and_entity_keys_may_be_extra(contract, eval_rows):
    row = {name: None for name in contract.features} | {"tailnum": "N1"}
    assert contract.rows_from_instances([row], frozenset({"tailnum"})) == [row]
    with pytest.raises(RequestError, match="non-empty list"):
        contract.rows_from_instances([])
    with pytest.raises(RequestError, match="has 2 values but the model takes 5"):
        contract.rows_from_instances([[1, 2]])
