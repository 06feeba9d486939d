"""Components that derive columns and split datasets by time (DuckDB over Parquet)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from dmlops.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def derive_columns(
    dataset: Input[Dataset],
    columns: dict,
    output: Output[Dataset],
    quarantine: Output[Dataset],
    quarantine_when: str = "",
    quarantine_reason: str = "quarantined by rule",
):
    """Add or replace columns from SQL expressions (name -> expression); rows matching the SQL condition
    ``quarantine_when`` go to ``quarantine`` with ``quarantine_reason``. Rows in = rows out + quarantined.
    """
    from dmlops.data.transform import derive_columns as derive

    result = derive(
        dataset.path, output.path, quarantine.path,
        columns=columns, quarantine_when=quarantine_when, quarantine_reason=quarantine_reason,
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
):
    """Split a dataset by time without leakage: before ``eval_from`` trains, from ``eval_from`` + ``gap``
    evaluates; null times and rows inside the gap are quarantined with a reason.
    """
    from dmlops.data.transform import split_by_time as split

    result = split(
        dataset.path, train.path, eval.path, quarantine.path,
        time_column=time_column, eval_from=eval_from, gap=gap,
    )
    summary = result.metadata()
    train.metadata.update({"rows": result.rows_train, "time_min": result.train_time_min,
                           "time_max": result.train_time_max, "time_column": time_column})
    eval.metadata.update({"rows": result.rows_eval, "time_min": result.eval_time_min,
                          "time_max": result.eval_time_max, "time_column": time_column})
    quarantine.metadata.update({"rows": result.rows_quarantined, "split": summary})
