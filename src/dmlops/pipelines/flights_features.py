"""Flights features in Feast, and the sub-pipeline that builds point-in-time training and eval sets.

- ``weather`` by ``origin``: hourly observations, joined at the flight's scheduled hour (TTL 1 hour: the
  observation of that hour, else of the hour before; older weather is no value);
- ``weather_derived`` (on demand): dew-point spread ``temp - dewp``, a fog and low-visibility signal;
- ``plane`` by ``tailnum``: year, engines, seats, type and engine (no TTL: static attributes);
- ``carrier`` by ``carrier``: running flight count, delay rate and mean delays over the *training* flights
  of earlier days only (known one day after each day ends), so neither eval rows nor a row's own day leak in.
"""

from datetime import timedelta
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input

from dmlops.components.features import (feast_apply, feast_materialize, feast_online_features, feast_source,
                                        feast_training_set, running_means)
from dmlops.components.transform import derive_columns
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


class FeatureSets(NamedTuple):
    training_set: Dataset
    eval_set: Dataset


@dsl.pipeline(name="flights-features", description="Flights features in Feast: apply, materialize, point-in-time training and eval sets.")
def flights_features(
    train: Input[Dataset],
    eval: Input[Dataset],
    weather: Input[Dataset],
    planes: Input[Dataset],
    store: dict,
    timestamp_column: str = "time_hour",
    label_column: str = "label",
    materialize_start: str = "2013-01-01",
    materialize_end: str = "2014-01-02",
) -> FeatureSets:
    """From labelled train/eval flights (scheduled-departure time in ``timestamp_column``, label in
    ``label_column``), hourly weather and planes: carrier statistics from the training flights, apply the
    feature repo to ``store`` (a store spec, e.g. ``LOCAL_STORE``), materialize ``[materialize_start,
    materialize_end]`` and check one online lookup, and join point-in-time features to train and eval."""
    stamped_planes = derive_columns(dataset=planes, columns=PLANE_VALID_FROM).set_display_name("stamp planes")
    carriers = running_means(
        dataset=train, entity_column="carrier", time_column=timestamp_column,
        means={**CARRIER_MEANS, "delay_rate": label_column}, count_column=CARRIER_COUNT, available_after="1 day",
    ).set_display_name("carrier statistics (train)")
    applied = feast_apply(
        store=store, definitions=DEFINITIONS,
        arguments={
            "weather": feast_source(dataset=weather).set_display_name("weather source").output,
            "planes": feast_source(dataset=stamped_planes.outputs["output"]).set_display_name("planes source").output,
            "carriers": feast_source(dataset=carriers.outputs["output"]).set_display_name("carrier source").output,
        },
    ).set_display_name("feast apply")
    materialized = feast_materialize(
        store=store, start=materialize_start, end=materialize_end, incremental=False,
    ).after(applied).set_display_name("feast materialize")
    feast_online_features(
        store=store, features=FEATURES, entity_rows=SMOKE_ENTITY_ROWS,
    ).after(materialized).set_display_name("online lookup")
    train_set = feast_training_set(
        store=store, entities=train, features=FEATURES, timestamp_column=timestamp_column,
    ).after(applied).set_display_name("training set")
    eval_set = feast_training_set(
        store=store, entities=eval, features=FEATURES, timestamp_column=timestamp_column,
    ).after(applied).set_display_name("eval set")
    return FeatureSets(training_set=train_set.outputs["training_set"], eval_set=eval_set.outputs["training_set"])
