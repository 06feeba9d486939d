"""The flights feature steps: carrier statistics from training flights, Feast apply, materialize, an online
smoke lookup, and point-in-time training and eval sets.

``flights_features`` adds its tasks to the pipeline that calls it (rather than being a nested pipeline), so
cluster settings applied to a pipeline's tasks reach these steps too."""

from typing import NamedTuple

from kfp.dsl.pipeline_channel import PipelineChannel

from dmlops.components.features import (feast_apply, feast_materialize, feast_online_features, feast_source,
                                        feast_training_set, running_means)
from dmlops.components.transform import derive_columns
from dmlops.pipelines.flights_features import (CARRIER_COUNT, CARRIER_MEANS, DEFINITIONS, FEATURES, PLANE_VALID_FROM,
                                               SMOKE_ENTITY_ROWS)


class FeatureSets(NamedTuple):
    """The point-in-time training and eval sets (Dataset outputs of the pipeline being built)."""

    training_set: PipelineChannel
    eval_set: PipelineChannel


def flights_features(
    train: PipelineChannel,
    eval: PipelineChannel,
    weather: PipelineChannel,
    planes: PipelineChannel,
    store: dict | PipelineChannel,
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
