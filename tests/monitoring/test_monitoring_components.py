"""feedback and monitor as another team uses them: loaded from their YAML, run with kfp.local, their
drifted / degraded outputs deciding a dsl.If branch, their figures pushed to a real Pushgateway."""

import json
from datetime import timedelta

import pyarrow.parquet as pq
import requests
from kfp import dsl, local

from component_yaml import load_yaml_component
from monitoring_data import START, traffic, write_labels, write_log, write_reference


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def retrain_marker(reason: str) -> str:
    return reason


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def passed_on(value: bool) -> bool:
    return value


def test_feedback_then_monitor_from_yaml_decide_a_branch(tmp_path, pushgateway):
    feedback = load_yaml_component("monitoring", "feedback")
    monitor = load_yaml_component("monitoring", "monitor")
    records, labels = traffic(1500, seed=21, shift=1.5, label_noise=0.6)
    write_log(tmp_path / "log", records)
    write_labels(tmp_path / "labels.parquet", labels[:1200])  # the last 300 labels have not arrived
    write_reference(tmp_path / "train.parquet")

    @dsl.pipeline(name="monitoring-from-yaml")
    def watch(log: str, labels_uri: str, reference_uri: str, gateway: str):
        arrived = dsl.importer(artifact_uri=labels_uri, artifact_class=dsl.Dataset)
        reference = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Dataset)
        joined = feedback(predictions_uri=log, labels=arrived.output, max_label_delay_hours=8.0,
                          as_of=(START + timedelta(hours=30)).isoformat(), model="delay", pushgateway=gateway)
        checked = monitor(reference=reference.output, predictions_uri=log, labelled=joined.outputs["labelled"],
                          window_start=START.isoformat(), window_end=(START + timedelta(days=2)).isoformat(),
                          model="delay", pushgateway=gateway)
        # kfp.local (2.17, kfp/local/orchestrator/enhanced_dag_orchestrator.py) resolves a condition on a
        # task output only when the output is named Output; on a cluster checked.outputs["degraded"] works
        # directly. The pass-through step gives kfp.local the same boolean under that name.
        degraded = passed_on(value=checked.outputs["degraded"])
        with dsl.If(degraded.output == True):  # noqa: E712  (KFP compares the output)
            retrain_marker(reason="degraded")

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    watch(log=str(tmp_path / "log"), labels_uri=str(tmp_path / "labels.parquet"),
          reference_uri=str(tmp_path / "train.parquet"), gateway=pushgateway)

    steps = {path.parent.name: json.loads(path.read_text()) for path in root.rglob("executor_output.json")}
    # one a minute for 25 h; at START + 30 h the labels are due (8 h) for those before START + 22 h: of the
    # 300 unlabelled (from START + 20 h), 120 expired, 180 pending
    assert {name: steps["feedback"]["parameterValues"][name] for name in ("joined", "pending", "expired")} == \
        {"joined": 1200, "pending": 180, "expired": 120}
    feedback_metrics = steps["feedback"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert feedback_metrics["joined_fraction"] == 1200 / 1320 and feedback_metrics["unmatched_labels"] == 0
    assert pq.read_metadata(next(root.rglob("feedback/labelled"))).num_rows == 1200
    assert steps["monitor"]["parameterValues"] == {"drifted": True, "degraded": True}
    monitor_metrics = steps["monitor"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert monitor_metrics["labelled_rows"] == 1200 and monitor_metrics["rows"] == 1500
    assert "DEGRADED" in next(root.rglob("monitor/html")).read_text()
    assert steps["retrain-marker"]["parameterValues"]["Output"] == "degraded"
    pushed = requests.get(f"{pushgateway}/metrics", timeout=5).text
    assert 'dmlops_feedback_rows{instance="",job="dmlops-feedback",model="delay",state="expired"} 120' in pushed
    assert 'dmlops_monitor_degraded{instance="",job="dmlops-monitor",model="delay"} 1' in pushed
