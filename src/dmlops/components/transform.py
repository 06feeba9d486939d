"""Components that derive columns and split datasets by time (DuckDB or Spark over Parquet)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def derive_columns(
    dataset: Input[Dataset],
    columns: dict,
    output: Output[Dataset],
    quarantine: Output[Dataset],
    quarantine_when: str = "",
    quarantine_reason: str = "quarantined by rule",
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Add or replace columns from SQL expressions (name -> expression); rows matching the SQL condition
    ``quarantine_when`` go to ``quarantine`` with ``quarantine_reason``. Rows in = rows out + quarantined.

    Args:
        dataset: The Parquet dataset to transform.
        columns: Output column name -> DuckDB SQL expression over the input columns, e.g.
            {"label": "arr_delay > 15"}; a name that already exists replaces that column in place.
        output: Every row not quarantined, with the derived columns, as Parquet. Metadata: rows_in,
            rows_out, rows_quarantined, quarantine_reasons, rows and derived_columns.
        quarantine: The quarantined rows (derived columns included) with a _reason column, as Parquet.
            Metadata: rows and reason.
        quarantine_when: A DuckDB SQL boolean expression; rows where it is true go to quarantine (null
            counts as false). "" quarantines nothing.
        quarantine_reason: The text written to the _reason column of the quarantined rows.
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same outputs either way.
            The expressions are in the engine's SQL: DuckDB SQL, or Spark SQL (identifiers in backticks).
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.
    """
    from dmlops.data.spark_application import spark_component

    if spark_component("derive_columns", {"dataset": dataset}, {"output": output, "quarantine": quarantine},
                       {"columns": columns, "quarantine_when": quarantine_when, "quarantine_reason": quarantine_reason},
                       engine=engine, backend=backend, run_id=run_id, task_name=task_name) is not None:
        return

    from dmlops.data.transform import derive_columns as derive

    result = derive(
        dataset.path, output.path, quarantine.path,
        columns=columns, quarantine_when=quarantine_when, quarantine_reason=quarantine_reason, engine=engine,
    )
    output.metadata.update(result.metadata())
    output.metadata.update({"rows": result.rows_out, "derived_columns": sorted(columns)})
    quarantine.metadata.update({"rows": result.rows_quarantined, "reason": quarantine_reason})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split_by_time(
    dataset: Input[Dataset],
    time_column: str,
    eval_from: str,
    train: Output[Dataset],
    eval: Output[Dataset],
    quarantine: Output[Dataset],
    gap: str = "",
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Split a dataset by time without leakage: before ``eval_from`` trains, from ``eval_from`` + ``gap``
    evaluates; null times and rows inside the gap are quarantined with a reason.

    Args:
        dataset: The Parquet dataset to split.
        time_column: The column holding each row's time (a timestamp or date, or text DuckDB casts to one).
        eval_from: The first time of the evaluation side, an ISO date or date-time (e.g. "2013-11-01");
            UTC when it has no zone.
        train: Rows before eval_from, as Parquet. Metadata: rows, time_min, time_max and time_column.
        eval: Rows at or after eval_from + gap, as Parquet. Metadata: rows, time_min, time_max and time_column.
        quarantine: Rows with a null time or inside the gap, with a _reason column, as Parquet. Metadata:
            rows and split (rows_in, rows_train, rows_eval, rows_quarantined and both time ranges).
        gap: A DuckDB interval (e.g. "1 day") left out after eval_from so that evaluation rows do not
            overlap what training saw; "" leaves no gap.
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same outputs either way.
            With spark, gap is a fixed length (weeks down to microseconds, e.g. "1 day").
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.
    """
    from dmlops.data.spark_application import spark_component

    if spark_component("split_by_time", {"dataset": dataset}, {"train": train, "eval": eval, "quarantine": quarantine},
                       {"time_column": time_column, "eval_from": eval_from, "gap": gap},
                       engine=engine, backend=backend, run_id=run_id, task_name=task_name) is not None:
        return

    from dmlops.data.transform import split_by_time as split

    result = split(
        dataset.path, train.path, eval.path, quarantine.path,
        time_column=time_column, eval_from=eval_from, gap=gap, engine=engine,
    )
    summary = result.metadata()
    train.metadata.update({"rows": result.rows_train, "time_min": result.train_time_min,
                           "time_max": result.train_time_max, "time_column": time_column})
    eval.metadata.update({"rows": result.rows_eval, "time_min": result.eval_time_min,
                          "time_max": result.eval_time_max, "time_column": time_column})
    quarantine.metadata.update({"rows": result.rows_quarantined, "split": summary})
