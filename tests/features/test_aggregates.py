"""Running entity means as a point-in-time source, against a pandas reference."""

import pandas as pd
import pytest

from dmlops.features import FeatureDataError, running_means


def test_running_means_match_a_pandas_reference(flights_data, tmp_path):
    output = tmp_path / "carriers"
    result = running_means(flights_data["train"], str(output), entity_column="carrier", time_column="time_hour",
                           means={"delay_rate": "label", "mean_arr_delay": "arr_delay"}, count_column="flights",
                           available_after="1 day")
    flights = pd.read_parquet(flights_data["train"])
    flights["known_at"] = flights["time_hour"].dt.floor("D") + pd.Timedelta(days=2)
    daily = flights.groupby(["carrier", "known_at"]).agg(
        rows=("label", "size"), delayed=("label", "sum"), arr=("arr_delay", "sum"), arr_n=("arr_delay", "count"))
    running = daily.groupby(level="carrier").cumsum()
    expected = pd.DataFrame({
        "flights": running["rows"], "delay_rate": running["delayed"] / running["rows"],
        "mean_arr_delay": running["arr"] / running["arr_n"],
    }).reset_index()
    stats = pd.read_parquet(output)
    assert list(stats.columns) == ["carrier", "event_timestamp", "flights", "delay_rate", "mean_arr_delay"]
    assert result.rows_in == result.rows_used == len(flights) and result.rows_out == len(expected)
    assert stats["carrier"].tolist() == expected["carrier"].tolist()
    assert stats["event_timestamp"].tolist() == expected["known_at"].tolist()
    assert stats["flights"].tolist() == expected["flights"].tolist()
    pd.testing.assert_series_equal(stats["delay_rate"], expected["delay_rate"], check_names=False)
    pd.testing.assert_series_equal(stats["mean_arr_delay"], expected["mean_arr_delay"], check_names=False)


def test_rows_without_key_are_counted_and_bad_columns_named(flights_data, tmp_path):
    flights = pd.read_parquet(flights_data["train"]).head(100)
    flights.loc[:9, "carrier"] = None
    path = tmp_path / "flights.parquet"
    flights.to_parquet(path)
    result = running_means(str(path), str(tmp_path / "out"), entity_column="carrier", time_column="time_hour",
                           means={"delay_rate": "label"}, count_column="flights")
    assert result.rows_skipped_null_key_or_time == 10 and result.rows_used == 90
    with pytest.raises(FeatureDataError, match="columns \\['sched_time'\\] not found"):
        running_means(str(path), str(tmp_path / "out"), entity_column="carrier", time_column="sched_time",
                      means={"delay_rate": "label"}, count_column="flights")
    with pytest.raises(FeatureDataError, match="check the mean expressions"):
        running_means(str(path), str(tmp_path / "out"), entity_column="carrier", time_column="time_hour",
                      means={"delay_rate": "no_such_column"}, count_column="flights")
