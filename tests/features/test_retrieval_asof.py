"""The DuckDB ASOF join of training sets gives the same feature values as Feast's own point-in-time join."""

from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dmlops.features import apply, build_training_set, local_store_spec, open_store
from dmlops.features.asof import AsofUnsupported, asof_feature_rows, plan
from dmlops.features.retrieval import EVENT_TIMESTAMP, ROW_COLUMN, feast_feature_rows
from dmlops.pipelines.flights_features import FEATURES

from dmlops.pipelines.flights_features import DEFINITIONS as FLIGHTS_DEFINITIONS

SLICE_ROWS = 1_500


def entity_rows(table: pa.Table, keys: list[str], time_column: str) -> pa.Table:
    """What build_training_set hands the join: row number, keys, event time as UTC microseconds."""
    return pa.table({
        ROW_COLUMN: pa.array(range(table.num_rows), pa.int64()),
        **{key: table[key] for key in keys},
        EVENT_TIMESTAMP: pc.cast(table[time_column], pa.timestamp("us", "UTC")),
    })


def both_joins(feature_store, rows: pa.Table, features: list[str],
               full_feature_names: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ASOF join's and Feast's feature rows, sorted by entity row."""
    fast = asof_feature_rows(feature_store, rows, features, full_feature_names=full_feature_names,
                             row_column=ROW_COLUMN, event_timestamp=EVENT_TIMESTAMP)
    feast = feast_feature_rows(feature_store, rows, features, full_feature_names=full_feature_names)
    return (fast.sort_by(ROW_COLUMN).to_pandas(), feast.sort_by(ROW_COLUMN).to_pandas())


@pytest.mark.parametrize("full_feature_names", [True, False])
def test_asof_join_equals_feast_on_flights(store, sources, flights_data, full_feature_names):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    # Every 7th flight of both weeks: weather gap, first days without carrier statistics, unknown planes.
    flights = pa.concat_tables([pq.read_table(flights_data["train"]), pq.read_table(flights_data["eval"])])
    flights = flights.take(list(range(0, flights.num_rows, 7))[:SLICE_ROWS])
    rows = entity_rows(flights, ["origin", "tailnum", "carrier"], "time_hour")
    fast, feast = both_joins(open_store(store), rows, FEATURES, full_feature_names)
    pd.testing.assert_frame_equal(fast, feast)
    assert fast.isna().any(axis=1).any(), "the slice should hold rows without some feature values"


def sensor_definitions(path: str, ttl: timedelta) -> list:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Float64, String

    sensor = Entity(name="sensor", join_keys=["sensor_id"], value_type=ValueType.STRING)
    source = FileSource(name="readings_source", path=path, timestamp_field="measured_at",
                        created_timestamp_column="loaded_at", field_mapping={"raw_value": "value"},
                        file_format=ParquetFormat())
    view = FeatureView(name="readings", entities=[sensor], ttl=ttl, source=source,
                       schema=[Field(name="value", dtype=Float64), Field(name="unit", dtype=String)])
    return [sensor, view]


def test_asof_join_keeps_feast_rules_for_ties_ttl_and_mapped_fields(tmp_path):
    """Corrections (same time, later load) win; TTL bounds are inclusive; null keys and times match nothing;
    a source column renamed by field_mapping is read under its source name."""
    hour = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    loaded = datetime(2024, 5, 2, tzinfo=timezone.utc)
    readings = pa.table({
        "sensor_id": ["a", "a", "a", "b", None, "c"],
        "measured_at": [hour, hour, hour + timedelta(hours=2), hour, hour, None],
        "loaded_at": [loaded, loaded + timedelta(days=1), loaded, loaded, loaded, loaded],
        "raw_value": [1.0, 1.5, 3.0, 10.0, 99.0, 7.0],
        "unit": ["C", "C", "C", "F", "K", "C"],
    })
    pq.write_table(readings, tmp_path / "readings.parquet")
    store = local_store_spec(tmp_path / "store", project="sensors")
    feature_store = open_store(store)
    feature_store.apply(sensor_definitions(str(tmp_path / "readings.parquet"), ttl=timedelta(minutes=30)))
    entities = pa.table({
        "sensor_id": ["a", "a", "a", "a", "a", "b", None, "c", "d"],
        "at": [hour - timedelta(seconds=1), hour, hour + timedelta(minutes=30),
               hour + timedelta(minutes=30, microseconds=1), hour + timedelta(hours=2), hour + timedelta(minutes=5),
               hour, hour + timedelta(hours=1), hour],
    })
    rows = entity_rows(entities, ["sensor_id"], "at")
    features = ["readings:value", "readings:unit"]
    fast, feast = both_joins(feature_store, rows, features, True)
    pd.testing.assert_frame_equal(fast, feast)
    assert fast["readings__value"].fillna(-1).tolist() == [-1, 1.5, 1.5, -1, 3.0, 10.0, -1, -1, -1]
    assert fast["readings__unit"].tolist()[5] == "F"

    entities_path = tmp_path / "entities.parquet"
    pq.write_table(entities, entities_path)
    report = build_training_set(store, str(entities_path), str(tmp_path / "out"), features=features,
                                timestamp_column="at")
    assert report.join_method == "duckdb asof"
    assert report.rows_without_values == {"readings": 5}
    written = pd.read_parquet(tmp_path / "out")
    pd.testing.assert_series_equal(written["readings__value"], fast["readings__value"])


def test_stores_and_views_outside_the_asof_join_are_named(tmp_path, sources):
    file_store = local_store_spec(tmp_path / "file", project="flights", offline_store="file")
    apply(file_store, FLIGHTS_DEFINITIONS, sources)
    with pytest.raises(AsofUnsupported, match="offline store 'file' is not duckdb"):
        plan(open_store(file_store), FEATURES, True)
