"""Feast components: register definitions, materialize, point-in-time training sets, online lookups.

Every component takes ``store``, a store spec (see ``dmlops.features.config``), so steps in separate pods
open the same registry, offline and online store.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from dmlops.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_source(dataset: Input[Dataset]) -> str:
    """The location of a Parquet Dataset for a Feast file source (a path locally, an object-store URI on a
    cluster), to pass in ``feast_apply``'s ``arguments``."""
    from dmlops.features.repo import source_location

    return source_location(dataset.uri)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_apply(store: dict, definitions: str, arguments: dict, report: Output[Markdown]):
    """Register the Feast objects returned by the function ``definitions`` ("package.module:function")
    called with ``arguments``. Idempotent; the report lists what was created, updated or unchanged."""
    from dmlops.features.repo import apply

    result = apply(store, definitions, arguments)
    report.metadata.update(result.metadata())
    with open(report.path, "w") as handle:
        handle.write(result.markdown())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_materialize(
    store: dict,
    end: str,
    report: Output[Markdown],
    start: str = "",
    views: list = [],
    incremental: bool = True,
):
    """Load the latest feature values up to ``end`` into the online store. ``incremental``: each view from
    the end of its range tracked in the registry (``start`` for a view never materialized), so a retry
    neither skips nor repeats; else the whole ``[start, end]``."""
    from dmlops.features.materialize import materialize

    result = materialize(store, end=end, start=start, views=views or None, incremental=incremental)
    report.metadata.update(result.metadata())
    with open(report.path, "w") as handle:
        handle.write(result.markdown())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_training_set(
    store: dict,
    entities: Input[Dataset],
    features: list,
    timestamp_column: str,
    training_set: Output[Dataset],
    report: Output[Markdown],
    full_feature_names: bool = True,
):
    """Join point-in-time-correct feature values (``"view:feature"`` references) to every entity row as of
    its ``timestamp_column``. Entity rows in = rows out; rows with no value inside a view's TTL keep nulls
    and are counted per view."""
    from dmlops.features.retrieval import build_training_set

    result = build_training_set(
        store, entities.path, training_set.path,
        features=features, timestamp_column=timestamp_column, full_feature_names=full_feature_names,
    )
    training_set.metadata.update({"rows": result.rows_out, **result.metadata()})
    report.metadata.update(result.metadata())
    with open(report.path, "w") as handle:
        handle.write(result.markdown())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_online_features(
    store: dict,
    features: list,
    entity_rows: list,
    values: Output[Artifact],
    report: Output[Markdown],
):
    """Look up feature values in the online store for entity rows (dicts of join keys): a smoke test of
    materialization and serving. Writes the values as JSON and a table; counts missing values."""
    import json

    from dmlops.features.retrieval import online_features

    result = online_features(store, features, entity_rows)
    columns = list(result)
    missing = sum(value is None for column in columns for value in result[column])
    values.metadata.update({"rows": len(entity_rows), "missing_values": missing})
    with open(values.path, "w") as handle:
        json.dump(result, handle, indent=1, default=str)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(result[column][row]) for column in columns) + " |" for row in range(len(entity_rows))]
    report.metadata.update({"rows": len(entity_rows), "missing_values": missing})
    with open(report.path, "w") as handle:
        handle.write(f"# Online features: {len(entity_rows)} entity rows, {missing} missing values\n\n")
        handle.write("\n".join(lines) + "\n")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def running_means(
    dataset: Input[Dataset],
    entity_column: str,
    time_column: str,
    means: dict,
    count_column: str,
    output: Output[Dataset],
    period: str = "1 day",
    available_after: str = "0 seconds",
):
    """Per entity and period: the row count and the means of SQL expressions (name -> expression) over all
    rows up to the period's end, stamped ``event_timestamp`` when known (period end + ``available_after``):
    a point-in-time feature source that never sees the rows it is joined to."""
    from dmlops.features.aggregates import running_means as compute

    result = compute(
        dataset.path, output.path, entity_column=entity_column, time_column=time_column, means=means,
        count_column=count_column, period=period, available_after=available_after,
    )
    output.metadata.update({"rows": result.rows_out, **result.metadata()})
