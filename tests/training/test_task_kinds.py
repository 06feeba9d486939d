"""The tabular trainer's task kinds without a framework: the task inferred from the label, labels encoded
and the metrics of each task."""

import numpy as np
import pyarrow as pa
import pytest

from dmlops.data.errors import DataError
from dmlops.training.data import Target, fit_target, infer_task
from dmlops.training.metrics import multiclass_metrics, regression_metrics, task_metrics


@pytest.mark.parametrize(("values", "task"), [
    ([True, False], "binary"), ([0, 1, 1], "binary"), ([0.0, 1.0], "binary"), (["a", "b", "c"], "multiclass"),
    ([1, 2, 3, 2], "multiclass"), (list(range(30)), "regression"), ([0.5, 1.5, 2.0], "regression"),
])
def test_the_task_is_inferred_from_the_label(values, task):
    assert infer_task(pa.table({"y": values}), "y", "f") == task


def test_a_multiclass_label_is_encoded_by_its_sorted_classes_and_back():
    table = pa.table({"y": ["setosa", "virginica", "versicolor", "setosa"]})
    target = fit_target(table, "y", "", "f")
    assert target.task == "multiclass" and target.classes == ["setosa", "versicolor", "virginica"]
    assert target.encode(table, "y", "f").tolist() == [0, 2, 1, 0] and target.outputs == 3
    assert target.decode(np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]])).tolist() == ["virginica", "setosa"]
    assert Target.from_dict(target.to_dict()) == target
    with pytest.raises(DataError, match=r"'y' is 'unknown' at row 1, not one of the classes"):
        target.encode(pa.table({"y": ["setosa", "unknown"]}), "y", "f")
    with pytest.raises(DataError, match=r"only the class \['a'\]"):
        fit_target(pa.table({"y": ["a", "a"]}), "y", "multiclass", "f")


def test_a_regression_label_is_standardised_and_a_binary_task_refuses_other_values():
    table = pa.table({"y": [10.0, 30.0, 10.0, 30.0]})
    target = fit_target(table, "y", "regression", "f")
    assert (target.mean, target.std) == (20.0, 10.0)
    assert target.encode(table, "y", "f").tolist() == [-1.0, 1.0, -1.0, 1.0]
    with pytest.raises(DataError, match=r"must be 0 or 1 but is 10.0 at row 0 .*choose task 'multiclass'"):
        fit_target(table, "y", "binary", "f")
    with pytest.raises(DataError, match=r"label 'y' is null in 1 rows"):
        fit_target(pa.table({"y": [1.0, None]}), "y", "", "f")
    assert Target.from_dict(None) == Target("binary")  # exports made before task kinds


def test_multiclass_metrics():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1],
                              [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    metrics = multiclass_metrics(labels, probabilities, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    # per class F1: a 2/3, b 0.8, c 1
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.8, 0.7, 0.8, 0.4])))
    assert metrics["auc_ovr"] == 1.0  # every class ranked above the others
    assert metrics["classes"] == ["a", "b", "c"]


def test_regression_metrics_and_the_task_dispatch():
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 4.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(0.125)) and metrics["mae"] == pytest.approx(0.25)
    assert metrics["r2"] == pytest.approx(1 - 0.5 / 5.0)
    assert task_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 2.0]))["task"] == "regression"
    assert task_metrics("binary", np.array([0, 1]), np.array([0.2, 0.9]))["auc"] == 1.0
    with pytest.raises(ValueError, match="unknown task"):
        task_metrics("ranking", np.array([1.0]), np.array([1.0]))
