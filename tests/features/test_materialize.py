"""Materialization: the tracked range lives in the registry; incremental runs and retries neither skip nor
repeat a range; apply never resets it (file and SQL registries)."""

import shutil
from datetime import datetime, timezone

import pandas as pd
import pytest

from dmlops.features import FeatureDataError, FeatureStoreError, apply, materialize, online_features, open_store

from dmlops.pipelines.flights_features import DEFINITIONS as FLIGHTS_DEFINITIONS


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def intervals(store: dict, view: str) -> list[tuple[datetime, datetime]]:
    return sorted(open_store(store).get_feature_view(view).materialization_intervals)


def latest_weather(path: str, origin: str, until: str) -> float:
    weather = pd.read_parquet(path)
    rows = weather[(weather["origin"] == origin) & (weather["time_hour"] <= pd.Timestamp(until, tz="UTC"))]
    return rows.sort_values("time_hour")["temp"].iloc[-1]


def test_incremental_continues_from_the_tracked_end(store, sources):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    first = materialize(store, start="2013-01-01", end="2013-01-04", views=["weather"])
    assert online_features(store, ["weather:temp"], [{"origin": "JFK"}])["weather__temp"] == [
        latest_weather(sources["weather"], "JFK", "2013-01-04")]

    second = materialize(store, start="2013-01-01", end="2013-01-08", views=["weather"])
    assert second.views[0]["start"] == first.views[0]["end"] == "2013-01-04T00:00:00+00:00"
    assert intervals(store, "weather") == [(utc("2013-01-01"), utc("2013-01-04")), (utc("2013-01-04"), utc("2013-01-08"))]
    assert online_features(store, ["weather:temp"], [{"origin": "JFK"}])["weather__temp"] == [
        latest_weather(sources["weather"], "JFK", "2013-01-08")]

    again = materialize(store, end="2013-01-08", views=["weather"])
    assert again.views[0]["status"] == "up to date"
    assert len(intervals(store, "weather")) == 2


def test_retry_after_a_failure_redoes_only_what_did_not_finish(store, sources, tmp_path):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    moved = tmp_path / "planes-moved"
    shutil.move(sources["planes"], moved)
    try:
        with pytest.raises(Exception, match="planes"):
            materialize(store, start="2013-01-01", end="2013-01-08")  # views in order: carrier, plane, weather
    finally:
        shutil.move(moved, sources["planes"])
    assert intervals(store, "carrier") == [(utc("2013-01-01"), utc("2013-01-08"))]
    assert intervals(store, "plane") == intervals(store, "weather") == []

    retry = materialize(store, start="2013-01-01", end="2013-01-08")
    assert {row["view"]: row["status"] for row in retry.views} == {
        "carrier": "up to date", "plane": "materialized", "weather": "materialized"}
    for view in ("carrier", "plane", "weather"):
        assert intervals(store, view) == [(utc("2013-01-01"), utc("2013-01-08"))]
    values = online_features(store, ["plane:seats", "weather:temp"], [{"tailnum": "N14228", "origin": "EWR"}])
    assert values["plane__seats"] == [149]
    assert values["weather__temp"] == [latest_weather(sources["weather"], "EWR", "2013-01-08")]


@pytest.mark.parametrize("registry", ["file", "sql"])
def test_apply_never_resets_the_tracked_range(store, sources, tmp_path, registry):
    if registry == "sql":
        store = {**store, "registry": {"registry_type": "sql", "path": f"sqlite:///{tmp_path}/registry.db",
                                       "cache_ttl_seconds": 0}}
    apply(store, FLIGHTS_DEFINITIONS, sources)
    materialize(store, start="2013-01-01", end="2013-01-05")
    moved_weather = tmp_path / "weather-copy"
    shutil.copy(sources["weather"], moved_weather)

    report = apply(store, FLIGHTS_DEFINITIONS, {**sources, "weather": str(moved_weather)})
    changes = {(item["kind"], item["name"]): item["change"] for item in report.changes}
    assert changes[("data_source", "weather_source")] == "updated"
    assert changes[("entity", "origin")] == "unchanged"
    assert open_store(store).get_feature_view("weather").batch_source.path == str(moved_weather)
    for view in ("carrier", "plane", "weather"):
        assert intervals(store, view) == [(utc("2013-01-01"), utc("2013-01-05"))]
    assert materialize(store, end="2013-01-05").views[0]["status"] == "up to date"


def test_apply_is_idempotent_and_reports_changes(store, sources):
    first = apply(store, FLIGHTS_DEFINITIONS, sources)
    assert first.count("created") == len(first.changes) > 0
    assert {item["name"] for item in first.changes} >= {"weather", "plane", "carrier", "weather_derived", "flights"}
    second = apply(store, FLIGHTS_DEFINITIONS, sources)
    assert second.count("unchanged") == len(second.changes) == len(first.changes)


def test_apply_names_a_source_without_the_declared_columns(store, sources, flights_data):
    with pytest.raises(FeatureDataError, match="feature view 'weather'.*lacks columns .*'temp'"):
        apply(store, FLIGHTS_DEFINITIONS, {**sources, "weather": flights_data["train"]})


def test_bad_definitions_and_requests_are_named(store, sources):
    with pytest.raises(FeatureStoreError, match="expected 'package.module:function'"):
        apply(store, "dmlops.pipelines.flights_features", sources)
    with pytest.raises(FeatureStoreError, match="takes .*weather.*got arguments"):
        apply(store, FLIGHTS_DEFINITIONS, {"weather": sources["weather"]})
    apply(store, FLIGHTS_DEFINITIONS, sources)
    with pytest.raises(FeatureStoreError, match="'wether'.*registered: \\['carrier', 'plane', 'weather'\\]"):
        materialize(store, start="2013-01-01", end="2013-01-02", views=["wether"])
    with pytest.raises(FeatureStoreError, match="never been materialized.*needs start"):
        materialize(store, end="2013-01-02")
