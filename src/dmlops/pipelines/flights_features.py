"""The flights feature repo in Feast (the sub-pipeline using it is ``flights_features_pipeline``).

This module imports no KFP component: the ``feast_apply`` step imports it at run time by its reference
``DEFINITIONS``, where KFP's component decorators are not available.

- ``weather`` by ``origin``: hourly observations, joined at the flight's scheduled hour (TTL 1 hour: the
  observation of that hour, else of the hour before; older weather is no value);
- ``weather_derived`` (on demand): dew-point spread ``temp - dewp``, a fog and low-visibility signal;
- ``plane`` by ``tailnum``: year, engines, seats, type and engine (no TTL: static attributes);
- ``carrier`` by ``carrier``: running flight count, delay rate and mean delays over the *training* flights
  of earlier days only (known one day after each day ends), so neither eval rows nor a row's own day leak in.
"""

from datetime import timedelta

from dmlops.features.config import local_store_spec

DEFINITIONS = "dmlops.pipelines.flights_features:definitions"
LOCAL_STORE = local_store_spec("local_outputs/feature_store", project="flights")
WEATHER_TIME = "time_hour"
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
WEATHER_TTL = timedelta(hours=1)
PLANE_FEATURES = ("year", "engines", "seats", "type", "engine")
PLANE_VALID_FROM = {"valid_from": "TIMESTAMPTZ '2013-01-01 00:00:00+00'"}
CARRIER_MEANS = {"delay_rate": "label", "mean_dep_delay": "dep_delay", "mean_arr_delay": "arr_delay"}
CARRIER_COUNT = "flights"
FEATURES = [
    *(f"weather:{name}" for name in WEATHER_FEATURES),
    "weather_derived:dewpoint_spread",
    *(f"plane:{name}" for name in PLANE_FEATURES),
    f"carrier:{CARRIER_COUNT}", *(f"carrier:{name}" for name in CARRIER_MEANS),
]
SMOKE_ENTITY_ROWS = [{"origin": "JFK", "tailnum": "N14228", "carrier": "UA"},
                     {"origin": "EWR", "tailnum": "N0NE", "carrier": "ZZ"}]


def definitions(weather: str, planes: str, carriers: str) -> list:
    """The flights feature repo over the Parquet sources at these paths or URIs."""
    import pandas as pd
    from feast import Entity, FeatureService, FeatureView, Field, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64, String

    from dmlops.features.repo import parquet_source

    origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING, description="departure airport")
    tailnum = Entity(name="tailnum", join_keys=["tailnum"], value_type=ValueType.STRING, description="plane tail number")
    carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING, description="airline code")
    weather_view = FeatureView(
        name="weather", entities=[origin], ttl=WEATHER_TTL,
        schema=[Field(name=name, dtype=Float64) for name in WEATHER_FEATURES],
        source=parquet_source("weather_source", weather, WEATHER_TIME),
        description="hourly weather at the departure airport",
    )
    plane_view = FeatureView(
        name="plane", entities=[tailnum], ttl=timedelta(0),
        schema=[Field(name="year", dtype=Int64), Field(name="engines", dtype=Int64), Field(name="seats", dtype=Int64),
                Field(name="type", dtype=String), Field(name="engine", dtype=String)],
        source=parquet_source("planes_source", planes, next(iter(PLANE_VALID_FROM))),
        description="plane attributes (no TTL)",
    )
    carrier_view = FeatureView(
        name="carrier", entities=[carrier], ttl=timedelta(0),
        schema=[Field(name=CARRIER_COUNT, dtype=Int64), *(Field(name=name, dtype=Float64) for name in CARRIER_MEANS)],
        source=parquet_source("carrier_source", carriers, "event_timestamp"),
        description="running carrier statistics over training flights of earlier days",
    )

    @on_demand_feature_view(sources=[weather_view], schema=[Field(name="dewpoint_spread", dtype=Float64)],
                            mode="pandas", description="temp - dewp (fog risk)")
    def weather_derived(inputs: pd.DataFrame) -> pd.DataFrame:
        temp = inputs["weather__temp"] if "weather__temp" in inputs else inputs["temp"]
        dewp = inputs["weather__dewp"] if "weather__dewp" in inputs else inputs["dewp"]
        return pd.DataFrame({"dewpoint_spread": temp - dewp})

    service = FeatureService(name="flights", features=[weather_view, weather_derived, plane_view, carrier_view])
    return [origin, tailnum, carrier, weather_view, weather_derived, plane_view, carrier_view, service]

