"""The training-window component: a fresh training set and holdout for retraining."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def training_window(
    reference: Input[Dataset],
    train: Output[Dataset],
    holdout: Output[Dataset],
    label: str,
    time_column: str,
    labelled: Input[Dataset] = None,
    window_days: float = 90.0,
    holdout_fraction: float = 0.2,
    window_end: str = "",
) -> NamedTuple("WindowOutputs", [("reference_rows", int), ("production_rows", int), ("holdout_rows", int)]):
    """A rolling window of the training data plus the production rows whose labels arrived, and a holdout
    of the latest labelled production rows on which a new model and the serving one are compared.

    Args:
        reference: The training data (Parquet) with the label and a timestamp column.
        train: The window's training rows: the reference's columns; production rows take their
            prediction time as time_column and nulls for columns the prediction log lacks.
        holdout: The latest holdout_fraction of the window's labelled production rows (of the window's
            reference rows when there are none).
        label: The label column (in both inputs).
        time_column: The reference's timestamp column (UTC when it has no zone).
        labelled: The labelled production set from the feedback step (prediction_time, the logged
            features, the label); without it the window holds training data only.
        window_days: The window's length in days, ending at window_end.
        holdout_fraction: The share (0 to 1) of the latest labelled rows held out.
        window_end: The window's end (ISO 8601, UTC unless it says); "" ends after the latest row.

    Returns:
        reference_rows: Training-data rows in the window (train and holdout).
        production_rows: Labelled production rows in the window (train and holdout).
        holdout_rows: Rows in the holdout.
    """
    from collections import namedtuple
    from dataclasses import asdict
    from datetime import datetime, timezone

    from dmlops.data.window import training_window as make_window

    end = None
    if window_end:
        end = datetime.fromisoformat(window_end)
        end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    counts = make_window(reference.path, labelled.path if labelled is not None else "", train.path, holdout.path,
                         label=label, time_column=time_column, window_days=window_days,
                         holdout_fraction=holdout_fraction, window_end=end)
    train.metadata.update({"rows": counts.reference_rows + counts.production_rows - counts.holdout_rows,
                           **asdict(counts)})
    holdout.metadata["rows"] = counts.holdout_rows
    print(f"window {counts.window_start} .. {counts.window_end}: {counts.reference_rows} training rows, "
          f"{counts.production_rows} labelled production rows, {counts.holdout_rows} held out")
    return namedtuple("WindowOutputs", ["reference_rows", "production_rows", "holdout_rows"])(
        counts.reference_rows, counts.production_rows, counts.holdout_rows)
