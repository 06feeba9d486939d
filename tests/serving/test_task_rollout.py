"""The canary decision for each task kind without servers: answers read back per task, labels of a
classifier's replayed rows as class indices, and the quality gates of multiclass and regression models."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.serving.answers import answer_value, target_of, v1_predictions
from dmlops.serving.rollout import PROMOTE, ROLLBACK, RolloutPolicy, TrafficStats, judge, replay_requests, request_format
from dmlops.training.data import Target

WINE = Target("multiclass", classes=["barbera", "barolo", "grignolino"])


def answered(values: dict[int, object]) -> TrafficStats:
    scores = [max(value) if isinstance(value, list) else value for value in values.values()]
    return TrafficStats(requests=len(values), latencies_ms=[4.0] * len(values), predictions=scores,
                        row_predictions=values)


def test_answers_are_read_back_by_task():
    probabilities = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    document = {"predictions": v1_predictions(WINE, probabilities)}
    assert document["predictions"][0] == {"label": "barolo",
                                          "probabilities": {"barbera": 0.1, "barolo": 0.7, "grignolino": 0.2}}
    assert request_format("dmlops", target=WINE).decode(document) == probabilities.tolist()
    assert request_format("dmlops", target=Target("regression")).decode({"predictions": [152.5, -3.0]}) == [152.5, -3.0]
    with pytest.raises(ValueError, match=r"outside \[0, 1\]: 1.5"):
        request_format("dmlops").decode({"predictions": [0.5, 1.5]})
    with pytest.raises(ValueError, match="not a distribution"):
        answer_value(WINE, {"label": "barolo", "probabilities": {"barbera": 0.5, "barolo": 0.7, "grignolino": 0.2}})
    # a user's export answers its output row: logits become probabilities
    user = target_of({"task": "multiclass", "inputs": {}})
    assert answer_value(user, [0.0, 0.0]) == [0.5, 0.5] and answer_value(user, [0.25, 0.75]) == [0.25, 0.75]
    assert target_of({"inputs": {}}).task == "regression" and answer_value(target_of({}), [7.0]) == 7.0


def test_a_classifiers_replayed_labels_are_class_indices(tmp_path):
    path = tmp_path / "wine.parquet"
    pq.write_table(pa.table({"alcohol": [13.1, 12.4, 14.0], "cultivar": ["barolo", None, "barbera"]}), path)
    rows = replay_requests(str(path), ["alcohol"], 3, 1, "cultivar", WINE.classes)
    assert rows.batches == [[{"alcohol": 13.1}], [{"alcohol": 12.4}], [{"alcohol": 14.0}]]
    assert rows.labels[[0, 2]].tolist() == [1.0, 0.0] and np.isnan(rows.labels[1])


def test_a_multiclass_canary_is_judged_on_log_loss_and_accuracy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    sure = {row: np.roll([0.8, 0.1, 0.1], label).tolist() for row, label in enumerate(labels)}
    unsure = {row: (np.roll([0.4, 0.3, 0.3], label) if row % 4 else np.roll([0.3, 0.4, 0.3], label)).tolist()
              for row, label in enumerate(labels)}
    better = judge(RolloutPolicy(), answered({0: [0.5, 0.5, 0.0]}), answered(unsure), answered(sure),
                   labels.astype(np.float64), "multiclass")
    assert better.action == PROMOTE, better.reasons
    assert [gate.name for gate in better.gates] == ["error_rate", "p99_ms", "log_loss", "accuracy"]
    assert better.quality["canary"]["accuracy"] == 1.0 and better.quality["stable"]["accuracy"] == pytest.approx(0.75, abs=0.05)
    worse = judge(RolloutPolicy(), answered({0: [0.5, 0.5, 0.0]}), answered(sure), answered(unsure),
                  labels.astype(np.float64), "multiclass")
    assert worse.action == ROLLBACK
    assert [reason.split(" = ")[0] for reason in worse.reasons] == ["log_loss", "accuracy"]


def test_a_regression_canary_is_judged_on_rmse():
    rng = np.random.default_rng(1)
    labels = rng.normal(50, 10, 200)
    close = dict(enumerate((labels + rng.normal(0, 1, 200)).tolist()))
    far = dict(enumerate((labels + rng.normal(0, 5, 200)).tolist()))
    assert judge(RolloutPolicy(), answered({0: 50.0}), answered(far), answered(close), labels,
                 "regression").action == PROMOTE
    worse = judge(RolloutPolicy(), answered({0: 50.0}), answered(close), answered(far), labels, "regression")
    assert worse.action == ROLLBACK and worse.reasons[0].startswith("rmse = ")
