"""Column statistics from DuckDB equal pandas/numpy reference values."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError
from dmlops.data.statistics import compute_statistics


@pytest.fixture
def table():
    rng = np.random.default_rng(7)
    size = 2_000
    amount = rng.normal(50.0, 12.0, size)
    amount[::97] = np.nan  # NaN is not a value: counted apart, left out of min/max/mean
    count = rng.integers(0, 40, size).astype(object)
    count[::13] = None
    return pa.table({
        "amount": pa.array(amount, pa.float64(), from_pandas=False),
        "count": pa.array(count, pa.int64()),
        "kind": pa.array(rng.choice(["a", "b", "c", "d"], size, p=[0.5, 0.3, 0.15, 0.05])),
        "flag": pa.array(rng.random(size) < 0.3),
        "at": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() + 3600 * i for i in range(size)],
                       pa.float64()).cast(pa.int64()).cast(pa.timestamp("s", tz="UTC")),
    })


@pytest.fixture
def dataset(tmp_path, table):
    path = tmp_path / "table.parquet"
    pq.write_table(table, path)
    return path


def test_numeric_statistics_equal_pandas(dataset, table):
    stats = compute_statistics(dataset)
    frame = table.to_pandas()
    assert stats.rows == len(frame)
    count = stats.columns["count"]
    values = frame["count"].dropna()
    assert (count.count, count.nulls, count.distinct) == (len(values), frame["count"].isna().sum(), values.nunique())
    assert (count.min, count.max) == (values.min(), values.max())
    assert count.mean == pytest.approx(values.mean())
    assert count.std == pytest.approx(values.std())
    expected = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert list(count.quantiles.values()) == pytest.approx(list(expected))
    assert list(count.quantiles) == ["p05", "p25", "p50", "p75", "p95"]


def test_nan_is_counted_apart_from_values(dataset, table):
    amount = compute_statistics(dataset).columns["amount"]
    raw = table.column("amount").to_numpy()
    values = raw[~np.isnan(raw)]
    assert amount.nan == np.isnan(raw).sum() > 0
    assert amount.nulls == 0
    assert amount.max == pytest.approx(values.max())
    assert amount.mean == pytest.approx(values.mean())
    assert amount.std == pytest.approx(values.std(ddof=1))


def test_histogram_equals_numpy(dataset, table):
    count = compute_statistics(dataset, histogram_bins=8).columns["count"]
    values = table.column("count").drop_null().to_numpy()
    expected, edges = np.histogram(values, bins=8)
    assert [bin_["count"] for bin_ in count.histogram] == list(expected)
    assert [bin_["lower"] for bin_ in count.histogram] == pytest.approx(list(edges[:-1]))
    assert count.histogram[-1]["upper"] == values.max()


def test_top_values_equal_value_counts(dataset, table):
    stats = compute_statistics(dataset, top_values=3)
    kind = table.column("kind").to_pandas().value_counts()
    assert stats.columns["kind"].top_values == [[value, n] for value, n in kind.head(3).items()]
    flags = table.column("flag").to_pandas().value_counts()
    assert dict(stats.columns["flag"].top_values) == {str(key).lower(): n for key, n in flags.items()}


def test_time_column_range_and_histogram(dataset, table):
    at = compute_statistics(dataset, histogram_bins=4).columns["at"]
    assert at.min == "2024-01-01T00:00:00+00:00"
    assert at.max == pd.Timestamp(table.column("at")[-1].as_py()).isoformat()
    assert [bin_["count"] for bin_ in at.histogram] == [500, 500, 500, 500]
    assert at.histogram[0]["lower"] == at.min


def test_extra_aggregates_share_the_scan(dataset, table):
    stats = compute_statistics(dataset, aggregates={"big counts": "count_if(count > 30)"})
    assert stats.aggregates == {"big counts": int((table.column("count").to_pandas() > 30).sum())}


def test_a_bad_extra_aggregate_is_named(dataset):
    with pytest.raises(DataError, match="my rule cannot be evaluated on .*table.parquet.*no_such"):
        compute_statistics(dataset, aggregates={"my rule": "count_if(no_such > 1)"})


def test_constant_and_empty_columns(tmp_path):
    path = tmp_path / "constant.parquet"
    pq.write_table(pa.table({"same": [3, 3, 3], "none": pa.array([None, None, None], pa.float64())}), path)
    stats = compute_statistics(path)
    assert stats.columns["same"].histogram == [{"lower": 3.0, "upper": 3.0, "count": 3}]
    assert stats.columns["same"].std == 0.0
    assert stats.columns["none"].nulls == 3
    assert stats.columns["none"].min is None and stats.columns["none"].histogram == []


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="nothing.parquet is not a file"):
        compute_statistics(tmp_path / "nothing.parquet")
    text = tmp_path / "text.parquet"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not readable as Parquet"):
        compute_statistics(text)
