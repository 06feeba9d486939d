"""Components that infer a schema, validate a dataset against it, and measure drift between datasets."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def infer_schema(
    dataset: Input[Dataset],
    schema: Output[Artifact],
    max_categories: int = 50,
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Infer the schema of a Parquet dataset: types, nullability, numeric ranges, the allowed values of
    string columns and a row-count range, as a JSON document to review and keep in git.

    Args:
        dataset: The Parquet dataset to profile.
        schema: The inferred schema, a dmlops schema JSON document to pass to validate or ingest.
            Metadata: columns (count), types (column -> type) and row_count (the allowed range).
        max_categories: String columns with at most this many distinct values get allowed_values; those
            with more get no allowed-values check.
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same schema either way.
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.
    """
    from dmlops.data.spark_application import spark_component

    if spark_component("infer_schema", {"dataset": dataset}, {"schema": schema}, {"max_categories": max_categories},
                       engine=engine, backend=backend, run_id=run_id, task_name=task_name) is not None:
        return

    from dmlops.data.validation import infer_schema as infer
    from dmlops.data.validation import schema_json

    document = infer(dataset.path, max_categories=max_categories, engine=engine)
    with open(schema.path, "w", encoding="utf-8") as file:
        file.write(schema_json(document))
    schema.metadata.update({
        "columns": len(document["columns"]),
        "types": {name: rules.get("type", "") for name, rules in document["columns"].items()},
        "row_count": document["row_count"],
    })


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    report: Output[Artifact],
    metrics: Output[Metrics],
    html: Output[HTML],
    fail_on: str = "error",
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Validate a Parquet dataset against a schema: types, required columns, null fractions, ranges,
    allowed values, uniqueness, row count and SQL expressions, with per-column statistics.

    Args:
        dataset: The Parquet dataset to validate.
        schema: The schema JSON (from infer_schema, or edited and imported).
        report: The full report (JSON): findings with example rows, and per-column statistics. Metadata:
            passed, rows, checks, errors and warnings.
        metrics: rows, checks, errors, warnings, passed (1 or 0) and ``null_fraction.<column>`` for each column.
        html: The report as a page: summary, findings and per-column histograms.
        fail_on: Fail the step on findings of this severity: "error", "warn" (errors and warnings) or
            "never" (only write the report).
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same report either way.
            The schema's expressions are in the engine's SQL: DuckDB SQL, or Spark SQL (identifiers in backticks).
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.
    """
    from dmlops.data.spark_application import spark_component

    if spark_component("validate", {"dataset": dataset, "schema": schema}, {"report": report, "html": html},
                       {"fail_on": fail_on}, metrics=metrics,
                       engine=engine, backend=backend, run_id=run_id, task_name=task_name) is not None:
        return

    import json

    from dmlops.data.validation import validate as check

    result = check(dataset.path, schema.path, engine=engine)
    with open(report.path, "w", encoding="utf-8") as file:
        json.dump(result.to_dict(), file, indent=2)
    report.metadata.update({"passed": result.passed, "rows": result.rows, "checks": result.checks,
                            "errors": len(result.errors), "warnings": len(result.warnings)})
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(html.path, "w", encoding="utf-8") as file:
        file.write(result.to_html())
    print(result.summary())
    result.raise_for(fail_on)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compare(
    reference: Input[Dataset],
    current: Input[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    html: Output[HTML],
    columns: list = [],
    psi_threshold: float = 0.2,
    categorical_threshold: float = 0.1,
    categorical_method: str = "jensen-shannon",
    engine: str = "duckdb",
    backend: str = "auto",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> NamedTuple("DriftOutputs", [("drifted", bool)]):
    """Measure drift or training/serving skew of each column of a current dataset against a reference:
    PSI for numeric columns, Jensen-Shannon distance or chi-square p-value for categorical ones.

    Args:
        reference: The reference Parquet dataset (e.g. the training data).
        current: The Parquet dataset to compare (e.g. new or serving data).
        report: The drift report (JSON): score, threshold and both distributions per column. Metadata:
            drifted, drifted_columns and skipped (column -> why it was not compared).
        metrics: drifted (1 or 0), drifted_columns, columns_compared, reference_rows, current_rows and each
            column's score as ``<method>.<column>``.
        html: The report as a page with both distributions of each column side by side.
        columns: Columns to compare; empty compares every numeric and categorical column in both, except
            time columns.
        psi_threshold: A numeric column drifts when its population stability index is above this (0 means
            the same distribution; 0.2 is a common limit for a significant shift).
        categorical_threshold: A categorical column drifts when its Jensen-Shannon distance (0 to 1) is
            above this, or, with chi-square, when its p-value is below it.
        categorical_method: "jensen-shannon" or "chi-square".
        engine: "duckdb" (in this step's process) or "spark" (Apache Spark: a SparkApplication on Kubernetes, see
            backend; else embedded local[*], or the master in DMLOPS_SPARK_MASTER); the same report either way.
        backend: Where engine "spark" runs: "kubernetes" as a SparkApplication of the Spark Operator that
            reads and writes the artifacts at their URIs, "local" in this step, "auto" kubernetes inside a
            Kubernetes pod, else local. Unused by duckdb.
        run_id: engine "spark" on kubernetes: the pipeline run's id; with task_name it names the
            SparkApplication so a retried step reattaches.
        task_name: engine "spark" on kubernetes: the task's name in the pipeline.

    Returns:
        drifted: True when at least one compared column drifted beyond its threshold.
    """
    import json
    from collections import namedtuple

    from dmlops.data.spark_application import spark_component

    ran = spark_component("compare", {"reference": reference, "current": current}, {"report": report, "html": html},
                          {"columns": columns, "psi_threshold": psi_threshold,
                           "categorical_threshold": categorical_threshold, "categorical_method": categorical_method},
                          metrics=metrics, engine=engine, backend=backend, run_id=run_id, task_name=task_name)
    if ran is not None:
        return namedtuple("DriftOutputs", ["drifted"])(ran["drifted"])

    from dmlops.data.drift import compare as measure

    result = measure(
        reference.path, current.path, columns=list(columns) or None, psi_threshold=psi_threshold,
        categorical_threshold=categorical_threshold, categorical_method=categorical_method, engine=engine,
    )
    with open(report.path, "w", encoding="utf-8") as file:
        json.dump(result.to_dict(), file, indent=2)
    report.metadata.update({"drifted": result.drifted, "drifted_columns": result.drifted_columns,
                            "skipped": result.skipped})
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(html.path, "w", encoding="utf-8") as file:
        file.write(result.to_html())
    print(result.summary())
    return namedtuple("DriftOutputs", ["drifted"])(result.drifted)
