"""Online lookups after materialization, on SQLite and on a real Redis server."""

import pandas as pd
import pytest

from dmlops.features import FeatureStoreError, apply, local_store_spec, materialize, online_features
from dmlops.pipelines.flights_features import FEATURES, SMOKE_ENTITY_ROWS

from dmlops.pipelines.flights_features import DEFINITIONS as FLIGHTS_DEFINITIONS

END = "2013-01-08"


def latest(path: str, key: str, value: str, time: str) -> pd.Series | None:
    table = pd.read_parquet(path)
    rows = table[(table[key] == value) & (table[time] <= pd.Timestamp(END, tz="UTC"))]
    return rows.sort_values(time).iloc[-1] if len(rows) else None


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_online_values_are_the_latest_materialized(online, tmp_path, sources, request):
    redis = request.getfixturevalue("redis_server") if online == "redis" else ""
    store = local_store_spec(tmp_path / "store", project=f"flights_{online}", redis_connection=redis)
    apply(store, FLIGHTS_DEFINITIONS, sources)
    materialize(store, start="2013-01-01", end=END)

    values = online_features(store, FEATURES, SMOKE_ENTITY_ROWS)
    weather = latest(sources["weather"], "origin", "JFK", "time_hour")
    plane = latest(sources["planes"], "tailnum", "N14228", "valid_from")
    carrier = latest(sources["carriers"], "carrier", "UA", "event_timestamp")
    assert values["weather__temp"][0] == weather["temp"]
    assert values["weather_derived__dewpoint_spread"][0] == pytest.approx(weather["temp"] - weather["dewp"])
    assert values["plane__seats"][0] == plane["seats"] and values["plane__type"][0] == plane["type"]
    assert values["carrier__flights"][0] == carrier["flights"]
    assert values["carrier__delay_rate"][0] == pytest.approx(carrier["delay_rate"])
    # The second row names a plane and a carrier that do not exist: no values, not an error.
    assert values["plane__seats"][1] is None and values["carrier__flights"][1] is None
    assert values["weather__temp"][1] == latest(sources["weather"], "origin", "EWR", "time_hour")["temp"]


def test_entity_rows_without_the_keys_are_named(store, sources):
    apply(store, FLIGHTS_DEFINITIONS, sources)
    with pytest.raises(FeatureStoreError, match="entity_rows\\[0\\].*lacks keys \\['tailnum'\\]"):
        online_features(store, ["plane:seats"], [{"origin": "JFK"}])
