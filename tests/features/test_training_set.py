"""Point-in-time training sets against a pandas merge_asof reference on the flights data."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dmlops.features import FeatureDataError, apply, build_training_set
from dmlops.pipelines.flights_features import FEATURES, PLANE_FEATURES, WEATHER_FEATURES, WEATHER_TTL

from dmlops.pipelines.flights_features import DEFINITIONS as FLIGHTS_DEFINITIONS


def asof(entities: pd.DataFrame, source: pd.DataFrame, *, key: str, time: str, columns, tolerance=None) -> pd.DataFrame:
    """For each entity row, the latest source row of its key at or before its time (within tolerance)."""
    left = entities[[key, "time_hour"]].reset_index().sort_values("time_hour")
    left["time_hour"] = left["time_hour"].astype("datetime64[us, UTC]")
    right = source[[key, time, *columns]].rename(columns={time: "__time"}).sort_values("__time")
    right["__time"] = right["__time"].astype("datetime64[us, UTC]")
    merged = pd.merge_asof(left, right, left_on="time_hour", right_on="__time", by=key,
                           tolerance=tolerance, direction="backward")
    return merged.set_index("index").sort_index()[list(columns)]


def test_training_set_is_point_in_time_correct(store, sources, flights_data, tmp_path):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    output = tmp_path / "train"
    report = build_training_set(store, flights_data["train"], str(output), features=FEATURES, timestamp_column="time_hour")

    entities = pd.read_parquet(flights_data["train"])
    result = pd.read_parquet(output)
    assert len(result) == len(entities) == report.rows_in == report.rows_out
    pd.testing.assert_frame_equal(result[list(entities.columns)], entities, check_dtype=False)

    weather = asof(entities, pd.read_parquet(flights_data["weather"]), key="origin", time="time_hour",
                   columns=WEATHER_FEATURES, tolerance=pd.Timedelta(WEATHER_TTL))
    planes = entities[["tailnum"]].merge(pd.read_parquet(flights_data["planes"]), on="tailnum", how="left")
    carriers = asof(entities, pd.read_parquet(flights_data["carriers"]), key="carrier", time="event_timestamp",
                    columns=["flights", "delay_rate", "mean_dep_delay", "mean_arr_delay"])
    for name in WEATHER_FEATURES:
        pd.testing.assert_series_equal(result[f"weather__{name}"], weather[name], check_names=False, check_dtype=False)
    for name in PLANE_FEATURES:
        pd.testing.assert_series_equal(result[f"plane__{name}"], planes[name], check_names=False, check_dtype=False)
    for name in carriers.columns:
        pd.testing.assert_series_equal(result[f"carrier__{name}"], carriers[name], check_names=False, check_dtype=False)
    pd.testing.assert_series_equal(result["weather_derived__dewpoint_spread"], weather["temp"] - weather["dewp"],
                                   check_names=False)

    no_weather = weather.isna().all(axis=1)
    assert no_weather.sum() > 0, "the fixture's weather gap should leave some flights without weather"
    assert report.rows_without_values["weather"] == no_weather.sum()
    assert report.rows_without_values["plane"] == planes["seats"].isna().sum()
    assert report.rows_without_values["carrier"] == carriers.isna().all(axis=1).sum()
    # Carrier statistics of a day are known one day after it ends: nothing for the first two days.
    first_days = entities["time_hour"] < pd.Timestamp("2013-01-03", tz="UTC")
    assert result.loc[first_days, "carrier__flights"].isna().all()
    assert result.loc[~first_days, "carrier__flights"].notna().any()
    assert report.null_values["weather__wind_gust"] == weather["wind_gust"].isna().sum()


def test_eval_set_uses_training_statistics_only(store, sources, flights_data, tmp_path):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    output = tmp_path / "eval"
    build_training_set(store, flights_data["eval"], str(output), features=["carrier:flights"], timestamp_column="time_hour")
    train = pd.read_parquet(flights_data["train"])
    result = pd.read_parquet(output)
    train_flights = result["carrier"].map(train.groupby("carrier").size())
    assert (result["carrier__flights"].dropna() <= train_flights[result["carrier__flights"].notna()]).all()
    # The last training day (UTC) is known from the end of the day after it: from then on, all of training.
    settled = result["time_hour"] >= train["time_hour"].max().floor("D") + pd.Timedelta(days=2)
    assert settled.sum() > 0
    pd.testing.assert_series_equal(result.loc[settled, "carrier__flights"], train_flights[settled],
                                   check_names=False, check_dtype=False)


def test_missing_timestamp_column_is_named(store, sources, flights_data, tmp_path):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    with pytest.raises(FeatureDataError, match="lacks columns \\['sched_departure'\\].*timestamp_column"):
        build_training_set(store, flights_data["train"], str(tmp_path / "out"), features=FEATURES,
                           timestamp_column="sched_departure")


def test_null_entity_times_are_refused(store, sources, flights_data, tmp_path):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    table = pq.read_table(flights_data["train"]).slice(0, 10).to_pandas()
    table.loc[3, "time_hour"] = pd.NaT
    path = tmp_path / "entities.parquet"
    table.to_parquet(path)
    with pytest.raises(FeatureDataError, match="1 rows have a null 'time_hour'"):
        build_training_set(store, str(path), str(tmp_path / "out"), features=FEATURES, timestamp_column="time_hour")
    assert not (tmp_path / "out").exists()
