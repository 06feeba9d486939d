"""Feast components: register definitions, materialize, point-in-time training sets, online lookups.

Every component takes ``store``, a store spec (see ``dmlops.features.config``), so steps in separate pods
open the same registry, offline and online store.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_store(backend: str, store: dict, registry: str = "", redis_connection: str = "") -> dict:
    """The Feast store spec the feature steps of a run on ``backend`` use: ``store`` locally; on Kubernetes,
    where each step is its own pod and the pods share no files, ``store`` if it is already shared
    (registry on object storage or SQL, Redis online store), else the cluster store of its project at
    ``registry`` and ``redis_connection``; the step fails, naming what to give, when neither is there.

    Args:
        backend: "local", "kubernetes" or "auto" (kubernetes inside a Kubernetes pod, else local).
        store: The store spec to use locally, or a shared one (dmlops.features.config.local_store_spec or
            cluster_store_spec).
        registry: Kubernetes: the registry's gs:// or s3:// URI, or a SQLAlchemy URL (SQL registry).
        redis_connection: Kubernetes: the Redis online store, host:port[,password=${REDIS_PASSWORD}]
            (${VAR} is read from the steps' environment).

    Returns:
        Output: The store spec every feature step opens.
    """
    from dmlops.features.config import store_for_backend

    return store_for_backend(backend, store, registry=registry, redis_connection=redis_connection)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_source(dataset: Input[Dataset]) -> str:
    """The location of a Parquet Dataset for a Feast file source (a path locally, an object-store URI on a
    cluster), to pass in ``feast_apply``'s ``arguments``.

    Args:
        dataset: The Parquet dataset a Feast file source will read.

    Returns:
        Output: The dataset's path or URI as the offline store reads it (a KFP minio:// URI becomes s3://).
    """
    from dmlops.features.repo import source_location

    return source_location(dataset.uri)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feast_apply(store: dict, definitions: str, arguments: dict, report: Output[Markdown]):
    """Register the Feast objects returned by the function ``definitions`` ("package.module:function")
    called with ``arguments``. Idempotent; the report lists what was created, updated or unchanged.

    Args:
        store: The store spec, a feature_store.yaml as a dict (dmlops.features.config.local_store_spec or
            cluster_store_spec); ${VAR} in a value is read from the environment when the store opens.
        definitions: The function that returns the Feast objects (entities, sources, feature views,
            feature services), as "package.module:function" importable in the step's image.
        arguments: Keyword arguments (name -> string) for that function, e.g. source locations from
            feast_source; {} calls it without arguments.
        report: A Markdown table of each object (kind, name, change). Metadata: project, the count of
            each change (created, updated, unchanged, "kept (not in definitions)") and changes.
    """
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
    neither skips nor repeats; else the whole ``[start, end]``.

    Args:
        store: The store spec, a feature_store.yaml as a dict (dmlops.features.config.local_store_spec or
            cluster_store_spec); ${VAR} in a value is read from the environment when the store opens.
        end: The last event time to load (inclusive), an ISO date or date-time; UTC when it has no zone.
        report: A Markdown table per view: the range written now, its status and the range tracked
            afterwards. Metadata: incremental, end and views (view, start, end, status, tracked_until).
        start: The first event time to load, an ISO date or date-time; needed without incremental, and
            for a view never materialized. "" means none.
        views: The feature views to materialize; [] materializes every online feature view of the project.
        incremental: True continues each view from its tracked range; False writes all of [start, end].
    """
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
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Join point-in-time-correct feature values (``"view:feature"`` references) to every entity row as of
    its ``timestamp_column``. Entity rows in = rows out; rows with no value inside a view's TTL keep nulls
    and are counted per view.

    Args:
        store: The store spec, a feature_store.yaml as a dict (dmlops.features.config.local_store_spec or
            cluster_store_spec); ${VAR} in a value is read from the environment when the store opens.
        entities: The entity rows as Parquet: the join keys the features need and timestamp_column, no
            null times; every column is kept in the output.
        features: Feature references "view:feature" (on-demand views too), e.g. ["weather:temp"].
        timestamp_column: The entity rows' event-time column; each row gets the values known at that time.
        training_set: The entity rows in order with a column per feature, as Parquet. Metadata: rows,
            rows_in, rows_out, feature_columns, null_values, rows_without_values (per view), join_method.
        report: A Markdown summary: the join method, rows with no value per view, nulls per feature column.
            Metadata as training_set's, without rows.
        full_feature_names: True names feature columns "view__feature"; False names them "feature".
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same training set either
            way. Spark joins Parquet file sources only, where duckdb falls back to Feast's own join.
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.
    """
    from dmlops.data.spark_application import spark_component

    if spark_component("feast_training_set", {"entities": entities}, {"training_set": training_set, "report": report},
                       {"store": store, "features": features, "timestamp_column": timestamp_column,
                        "full_feature_names": full_feature_names},
                       engine=engine, backend=backend, run_id=run_id, task_name=task_name) is not None:
        return

    from dmlops.features.retrieval import build_training_set

    result = build_training_set(
        store, entities.path, training_set.path,
        features=features, timestamp_column=timestamp_column, full_feature_names=full_feature_names,
        engine=engine,
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
    materialization and serving. Writes the values as JSON and a table; counts missing values.

    Args:
        store: The store spec, a feature_store.yaml as a dict (dmlops.features.config.local_store_spec or
            cluster_store_spec); ${VAR} in a value is read from the environment when the store opens.
        features: Feature references "view:feature", e.g. ["weather:temp"].
        entity_rows: One dict of join keys per lookup, e.g. [{"origin": "JFK"}].
        values: The values as JSON, column -> one value per entity row (columns "view__feature" and the
            join keys). Metadata: rows and missing_values (null values found).
        report: The values as a Markdown table. Metadata: rows and missing_values.
    """
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
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Per entity and period: the row count and the means of SQL expressions (name -> expression) over all
    rows up to the period's end, stamped ``event_timestamp`` when known (period end + ``available_after``):
    a point-in-time feature source that never sees the rows it is joined to.

    Args:
        dataset: The Parquet rows to aggregate; rows with a null entity or time are left out and counted.
        entity_column: The entity's key column, e.g. "tailnum"; also the key column of the output.
        time_column: The column holding each row's time (a timestamp, or text DuckDB casts to one).
        means: Output column name -> DuckDB SQL expression over the input columns whose running mean to
            compute (nulls are left out), e.g. {"delay_rate": "label"}.
        count_column: The name of the output column with the entity's row count up to the period's end.
        output: One row per entity and period with data: entity_column, event_timestamp, count_column
            and the means, as Parquet. Metadata: rows, rows_in, rows_used, rows_skipped_null_key_or_time,
            rows_out, entities, timestamp_min and timestamp_max.
        period: A DuckDB interval, the length of the time buckets, e.g. "1 day" or "1 hour".
        available_after: A DuckDB interval added to the period's end before a value counts as known,
            e.g. "6 hours" for a late batch job; "0 seconds" means as soon as the period ends.
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same output either way.
            With spark, means are Spark SQL and period and available_after fixed lengths (weeks down to
            microseconds).
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.
    """
    from dmlops.data.spark_application import spark_component

    if spark_component("running_means", {"dataset": dataset}, {"output": output},
                       {"entity_column": entity_column, "time_column": time_column, "means": means,
                        "count_column": count_column, "period": period, "available_after": available_after},
                       engine=engine, backend=backend, run_id=run_id, task_name=task_name) is not None:
        return

    from dmlops.features.aggregates import running_means as compute

    result = compute(
        dataset.path, output.path, entity_column=entity_column, time_column=time_column, means=means,
        count_column=count_column, period=period, available_after=available_after, engine=engine,
    )
    output.metadata.update({"rows": result.rows_out, **result.metadata()})
