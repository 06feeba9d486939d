"""The alert rules on the monitor's pushed figures and on the prediction log, and the monitoring dashboard:
checked against the PrometheusRule CRD in crds/, against the series dmlops actually exports, and with
Prometheus's own promtool (``check rules``, and ``test rules`` on synthetic series: a degraded, drifting,
stale, label-losing or log-dropping model fires its alert, a healthy one does not)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from crds import crd_errors
from dmlops.data.drift import ColumnDrift, DriftReport
from dmlops.monitoring import metrics as monitoring_metrics
from dmlops.monitoring.feedback import FeedbackCounts
from dmlops.monitoring.monitor import MonitorReport
from dmlops.serving import metrics as serving_metrics

BASE = Path(__file__).resolve().parents[2] / "manifests" / "base"
MONITORING_RULE = BASE / "monitoring-rule.yaml"
SERVING_RULE = BASE / "prometheus-rule.yaml"
DASHBOARD = BASE / "grafana-monitoring-dashboard.json"
PUSHED_LABELS = {"job", "instance", "model"}  # the Pushgateway's grouping key and Prometheus's own
GRAFANA_VARIABLES = {"$namespace": ".*", "$model": ".*", "$__rate_interval": "5m"}


def rule(path) -> dict:
    return yaml.safe_load(path.read_text())


def pushed_series() -> dict[str, set[str]]:
    """The series the monitor and the feedback join push, with their label names."""
    drift = DriftReport("train", "log", 10, 10, [ColumnDrift("x", "numeric", "psi", 0.5, 0.2, True, [], [], [])])
    report = MonitorReport(rows=10, labelled_rows=5, feature_drift=drift,
                           prediction_drift={"method": "psi", "score": 0.3, "threshold": 0.2, "drifted": True},
                           realized_auc=0.7, realized_accuracy=0.7, estimated_auc=0.72, estimated_accuracy=0.7,
                           baseline_auc=0.8, label_lag_seconds={"p50": 60.0, "p95": 90.0}, max_auc_drop=0.05,
                           min_labelled_rows=1)
    counts = FeedbackCounts(10, 5, 3, 2, 0, 5, 0, 0)
    series: dict[str, set[str]] = {}
    for registry in (monitoring_metrics.monitor_registry(report), monitoring_metrics.feedback_registry(counts)):
        for family in registry.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def _names(expression: str) -> set[str]:
    return set(re.findall(r"\b(dmlops(?::[a-z0-9_]+){2}|dmlops_[a-z0-9_]+)\b", expression))


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; scripts/services.sh does it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", [MONITORING_RULE, SERVING_RULE], ids=lambda path: path.name)
def test_the_rules_validate_against_the_prometheusrule_crd(path):
    assert crd_errors(rule(path)) == []


def test_the_crd_check_catches_a_misplaced_field():
    broken = rule(MONITORING_RULE)
    broken["spec"]["groups"][1]["rules"][0]["severity"] = "critical"  # belongs under labels
    assert any("severity" in error for error in crd_errors(broken))


def test_rules_and_dashboard_query_only_series_that_are_pushed_or_exported():
    pushed = pushed_series()
    assert set(pushed) >= {monitoring_metrics.DRIFTED, monitoring_metrics.DEGRADED, monitoring_metrics.AUC,
                           monitoring_metrics.FEATURE_DRIFT, monitoring_metrics.FEEDBACK_JOINED_FRACTION,
                           monitoring_metrics.LAST_RUN}
    exported = {serving_metrics.LOG_ROWS_WRITTEN: {"model"}, serving_metrics.LOG_ROWS_DROPPED: {"model", "reason"}}
    groups = rule(MONITORING_RULE)["spec"]["groups"]
    recorded = {item["record"] for group in groups for item in group["rules"] if "record" in item}
    board = json.loads(DASHBOARD.read_text())
    expressions = [item["expr"] for group in groups for item in group["rules"]]
    expressions += [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for expression in expressions:
        names = _names(expression)
        for name in names:
            assert name in pushed or name in exported or name in recorded, f"{name} in {expression!r} is not pushed"
        labels = set().union(*(pushed.get(name, exported.get(name, set())) for name in names)) | PUSHED_LABELS
        for label, _, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', expression):
            assert label in labels | {"namespace"}, f"label {label} in {expression!r} is not pushed"
            if label == "kind":
                assert set(value.split("|")) <= set(monitoring_metrics.AUC_KINDS)
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expression):
            assert {part.strip() for part in group.split(",")} <= labels, f"grouping in {expression!r}"


def test_dashboard_panels_do_not_overlap_and_use_the_variables():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "dmlops-monitoring"
    cells = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        mine = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not mine & cells and grid["x"] + grid["w"] <= 24, panel["title"]
        cells |= mine
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all('model=~"$model"' in target["expr"] for target in panel["targets"]), panel["title"]


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule(MONITORING_RULE)["spec"]))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            query = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            queries.append(query)
    panels = tmp_path / "dashboard.yaml"
    panels.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}:check", "expr": query} for index, query in enumerate(queries)]}]}))
    result = promtool("check", "rules", str(panels))
    assert result.returncode == 0, result.stdout + result.stderr


def _pushed(name: str, model: str, values: str, job: str = "dmlops-monitor", **labels: str) -> dict:
    extra = "".join(f',{key}="{value}"' for key, value in labels.items())
    return {"series": f'{name}{{job="{job}",instance="",model="{model}"{extra}}}', "values": values}


def _expected(path, name: str, labels: dict, summary: str) -> dict:
    (item,) = [r for g in rule(path)["spec"]["groups"] for r in g["rules"] if r.get("alert") == name]
    description = item["annotations"]["description"]
    for key, value in labels.items():
        description = description.replace(f"{{{{ $labels.{key} }}}}", value)
    return {"exp_labels": {**labels, "severity": item["labels"]["severity"]},
            "exp_annotations": {"summary": summary, "description": description}}


def _log_rows(model: str, written_per_minute: int, dropped_per_minute: int) -> list[dict]:
    labels = f'namespace="ns",model="{model}"'
    return [{"series": f"dmlops_serving_rows_total{{{labels}}}", "values": f"0+{written_per_minute}x40"},
            {"series": f'dmlops_serving_log_rows_dropped_total{{{labels},reason="buffer_full"}}',
             "values": f"0+{dropped_per_minute}x40"}]


def alert_tests() -> list[dict]:
    scrapes = 30 * 12  # 30 hours
    return [
        {   # "worse": degraded and drifted; "fine": neither; "lossy": 80% of due labels joined
            "interval": "1m",
            "input_series": [
                _pushed("dmlops_monitor_degraded", "worse", "1x20"), _pushed("dmlops_monitor_drifted", "worse", "1x20"),
                _pushed("dmlops_monitor_degraded", "fine", "0x20"), _pushed("dmlops_monitor_drifted", "fine", "0x20"),
                _pushed("dmlops_feedback_joined_fraction", "lossy", "0.8x20", job="dmlops-feedback"),
                _pushed("dmlops_feedback_joined_fraction", "fine", "1x20", job="dmlops-feedback"),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "DmlopsModelDegraded", "exp_alerts": [
                    _expected(MONITORING_RULE, "DmlopsModelDegraded", {"model": "worse"},
                              "worse: performance degraded in the last monitored window")]},
                {"eval_time": "5m", "alertname": "DmlopsModelDrifted", "exp_alerts": [
                    _expected(MONITORING_RULE, "DmlopsModelDrifted", {"model": "worse"},
                              "worse: inputs or predictions drifted from the training reference")]},
                {"eval_time": "5m", "alertname": "DmlopsLabelsMissing", "exp_alerts": [
                    _expected(MONITORING_RULE, "DmlopsLabelsMissing", {"model": "lossy"},
                              "lossy: only 80% of due labels arrived")]},
            ],
        },
        {   # "old" ran at time 0 only; "fresh" runs all the time (promtool's clock starts at 0); the Pushgateway
            # keeps the last push, scraped every 5 minutes
            "interval": "5m",
            "input_series": [
                _pushed("dmlops_monitor_last_run_timestamp_seconds", "old", f"0x{scrapes}"),
                _pushed("dmlops_monitor_last_run_timestamp_seconds", "fresh", f"0+300x{scrapes}"),
            ],
            "alert_rule_test": [
                {"eval_time": "25h", "alertname": "DmlopsMonitorStale", "exp_alerts": []},
                {"eval_time": "27h", "alertname": "DmlopsMonitorStale", "exp_alerts": [
                    _expected(MONITORING_RULE, "DmlopsMonitorStale", {"model": "old"},
                              "old: the monitor last ran 1d 3h 0m 0s ago")]},
            ],
        },
    ]


def test_monitor_alerts_fire_for_the_troubled_models_only(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule(MONITORING_RULE)["spec"]))
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": alert_tests()}))
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def _log_drop_test(rules) -> dict:
    return {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": _log_rows("dropping", 1000, 5) + _log_rows("keeping", 1000, 0),
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "DmlopsPredictionLogDropping", "exp_alerts": []},  # not yet 10m
            {"eval_time": "30m", "alertname": "DmlopsPredictionLogDropping", "exp_alerts": [
                _expected(SERVING_RULE, "DmlopsPredictionLogDropping", {"namespace": "ns", "model": "dropping"},
                          "dropping in ns: 0.5% of predictions not logged")]},
        ],
    }]}


def test_the_prediction_log_alert_fires_when_rows_are_dropped(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule(SERVING_RULE)["spec"]))
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump(_log_drop_test(rules)))
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_tests_catch_a_rule_that_never_fires(tmp_path):
    """The promtool tests above can fail: with thresholds that never trip, they do."""
    monitoring = rule(MONITORING_RULE)
    for group in monitoring["spec"]["groups"]:
        for item in group["rules"]:
            if item.get("alert") == "DmlopsModelDegraded":
                item["expr"] = item["expr"].replace("== 1", "== 2")
    serving = rule(SERVING_RULE)
    for group in serving["spec"]["groups"]:
        for item in group["rules"]:
            if item.get("alert") == "DmlopsPredictionLogDropping":
                item["expr"] = item["expr"].replace("> 0.001", "> 0.5")
    for name, document in (("monitoring", monitoring), ("serving", serving)):
        rules = tmp_path / f"{name}.yaml"
        rules.write_text(yaml.safe_dump(document["spec"]))
        file = tmp_path / f"{name}-tests.yaml"
        tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": alert_tests()} \
            if name == "monitoring" else _log_drop_test(rules)
        file.write_text(yaml.safe_dump(tests))
        result = promtool("test", "rules", str(file))
        expected = "DmlopsModelDegraded" if name == "monitoring" else "DmlopsPredictionLogDropping"
        assert result.returncode != 0 and expected in result.stdout + result.stderr
