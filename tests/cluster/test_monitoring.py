"""The PrometheusRule and the Grafana dashboard against the metrics the dmlops predictor exports.

Its shape is checked here (and against the PrometheusRule CRD in tests/monitoring/test_alert_rules.py),
its rules with Prometheus's own ``promtool check rules``, and its alerts with ``promtool test rules`` on synthetic series (an
erroring, a slow and a drifting model fire; a healthy one does not). Every metric, label and label
value the rules and the dashboard query is one that dmlops.serving.metrics exports (or one Prometheus
adds when it scrapes a pod: namespace, pod, job, instance).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from dmlops.serving import metrics as serving_metrics
from image_imports import REPO

BASE = REPO / "manifests" / "base"
RULE_FILE = BASE / "prometheus-rule.yaml"
DASHBOARD = BASE / "grafana-dashboard.json"
SCRAPE_LABELS = {"namespace", "pod", "job", "instance"}
SEVERITIES = {"critical", "warning", "info"}
GRAFANA_VARIABLES = {"$namespace": ".*", "$model": ".*", "$__rate_interval": "5m", "$datasource": ""}


def prometheus_rule() -> dict:
    return yaml.safe_load(RULE_FILE.read_text())


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    queries += [v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return queries


def exported_series() -> dict[str, set[str]]:
    """Series names the predictor exports, with their label names (histograms: _bucket, _sum, _count)."""
    series: dict[str, set[str]] = {}
    for metric in vars(serving_metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = metric._labelnames  # prometheus_client keeps the declared label names here only
        # A child (all labels set, nothing observed) makes the metric's samples appear in collect().
        metric.labels(**{name: "x" for name in labels})
        for family in metric.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


def test_prometheus_rule_shape():
    rule = prometheus_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    alerts = []
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for item in group["rules"]:
            assert ("record" in item) != ("alert" in item), item
            assert isinstance(item["expr"], str) and item["expr"].strip()
            if "alert" in item:
                alerts.append(item["alert"])
                assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}
                assert item["labels"]["severity"] in SEVERITIES
                assert {"summary", "description"} <= set(item["annotations"])
                assert re.fullmatch(r"\d+[smh]", item["for"])
            else:
                assert set(item) <= {"record", "expr", "labels"}
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", item["record"]), "level:metric:operations"
    assert sorted(alerts) == sorted(["DmlopsServingErrorRateHigh", "DmlopsServingRejectedRateHigh",
                                     "DmlopsServingLatencyHigh", "DmlopsServingPredictionDrift",
                                     "DmlopsPredictionLogDropping"])


def _names_in(expression: str) -> set[str]:
    return set(re.findall(r"\b(dmlops(?::[a-z0-9_]+){2}|dmlops_[a-z0-9_]+)\b", expression))


def test_rules_and_dashboard_query_only_what_the_predictor_exports():
    exported = exported_series()
    recorded = {item["record"] for g in prometheus_rule()["spec"]["groups"] for item in g["rules"] if "record" in item}
    expressions = [item["expr"] for g in prometheus_rule()["spec"]["groups"] for item in g["rules"]]
    expressions += dashboard_queries()
    for expression in expressions:
        for name in _names_in(expression):
            assert name in exported or name in recorded, (
                f"{name} is neither exported by dmlops.serving.metrics ({sorted(exported)}) nor recorded by a rule"
            )
        names = _names_in(expression)
        known = set().union(*(exported.get(n, set()) for n in names)) | SCRAPE_LABELS
        if names & recorded:  # a recorded series keeps some of its sources' labels
            known |= set().union(*exported.values())
        for label, _, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', expression):
            assert label in known, f"label {label} in {expression!r} is not exported"
            if label == "outcome":
                assert value in serving_metrics.OUTCOMES, f"outcome {value!r}: the predictor reports {serving_metrics.OUTCOMES}"
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expression):
            for label in (part.strip() for part in group.split(",")):
                assert label in SCRAPE_LABELS | {"le"} | set().union(*exported.values()), (
                    f"grouping label {label} in {expression!r} is not exported"
                )


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule()["spec"]))
    result = run_promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    # Dashboard queries, with Grafana's variables filled in, as recording rules: promtool parses them.
    queries = []
    for query in dashboard_queries():
        if query.startswith("label_values("):
            query = query[len("label_values("):].rsplit(",", 1)[0]
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        queries.append(query)
    panels = tmp_path / "dashboard.yaml"
    panels.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}:check", "expr": q} for i, q in enumerate(queries)]}]}))
    result = run_promtool("check", "rules", str(panels))
    assert result.returncode == 0, result.stdout + result.stderr


def _requests(model: str, outcome: str, per_minute: int, minutes: int) -> dict:
    return {"series": f'dmlops_serving_requests_total{{namespace="ns",model="{model}",protocol="v1",outcome="{outcome}"}}',
            "values": f"0+{per_minute}x{minutes}"}


def _alert(name: str, model: str, severity: str, summary: str) -> dict:
    """An expected alert: its labels, its summary as the user reads it, its description filled in."""
    (rule,) = [r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"] if r.get("alert") == name]
    description = rule["annotations"]["description"]
    description = description.replace("{{ $labels.model }}", model).replace("{{ $labels.namespace }}", "ns")
    return {"exp_labels": {"namespace": "ns", "model": model, "severity": severity},
            "exp_annotations": {"summary": summary, "description": description}}


def test_alerts_fire_for_failing_slow_and_drifting_models_only(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule()["spec"]))
    day, hours = 24 * 60, 2 * 60
    latency = 'dmlops_serving_request_seconds_bucket{{namespace="ns",model="{}",protocol="v1",le="{}"}}'
    tests = [
        {   # 5% server errors on "bad", none on "good"; 10% rejected on "bad"
            "interval": "1m",
            "input_series": [
                _requests("bad", "ok", 85, 30), _requests("bad", "error", 5, 30), _requests("bad", "rejected", 10, 30),
                _requests("good", "ok", 100, 30), _requests("good", "error", 0, 30),
                _requests("good", "rejected", 1, 30),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "DmlopsServingErrorRateHigh", "exp_alerts": []},  # not yet for 5m
                {"eval_time": "12m", "alertname": "DmlopsServingErrorRateHigh",
                 "exp_alerts": [_alert("DmlopsServingErrorRateHigh", "bad", "critical",
                                      "bad in ns: 5% of requests fail")]},
                {"eval_time": "25m", "alertname": "DmlopsServingRejectedRateHigh",
                 "exp_alerts": [_alert("DmlopsServingRejectedRateHigh", "bad", "warning",
                                      "bad in ns: 10% of requests rejected")]},
            ],
        },
        {   # "slow" answers 90% of requests between 100 and 250 ms; "fast" all under 10 ms
            "interval": "1m",
            "input_series": [
                {"series": latency.format("slow", "0.01"), "values": "0+0x30"},
                {"series": latency.format("slow", "0.1"), "values": "0+10x30"},
                {"series": latency.format("slow", "0.25"), "values": "0+100x30"},
                {"series": latency.format("slow", "+Inf"), "values": "0+100x30"},
                {"series": latency.format("fast", "0.01"), "values": "0+100x30"},
                {"series": latency.format("fast", "0.1"), "values": "0+100x30"},
                {"series": latency.format("fast", "0.25"), "values": "0+100x30"},
                {"series": latency.format("fast", "+Inf"), "values": "0+100x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": "DmlopsServingLatencyHigh",
                 "exp_alerts": [_alert("DmlopsServingLatencyHigh", "slow", "warning",
                                      "slow in ns: p99 latency 248.3ms")]},
            ],
        },
        {   # 60 predictions a minute; "drifting" moves from a mean of 0.2 to 0.6 in the last 2 hours
            "interval": "1m",
            "input_series": [
                {"series": 'dmlops_serving_prediction_count{namespace="ns",model="drifting"}',
                 "values": f"0+60x{day + hours}"},
                {"series": 'dmlops_serving_prediction_sum{namespace="ns",model="drifting"}',
                 "values": f"0+12x{day - 1} {12 * day}+36x{hours}"},
                {"series": 'dmlops_serving_prediction_count{namespace="ns",model="steady"}',
                 "values": f"0+60x{day + hours}"},
                {"series": 'dmlops_serving_prediction_sum{namespace="ns",model="steady"}',
                 "values": f"0+12x{day + hours}"},
            ],
            "alert_rule_test": [
                {"eval_time": f"{day - 10}m", "alertname": "DmlopsServingPredictionDrift", "exp_alerts": []},
                {"eval_time": f"{day + hours}m", "alertname": "DmlopsServingPredictionDrift",
                 "exp_alerts": [_alert("DmlopsServingPredictionDrift", "drifting", "warning",
                                      "drifting in ns: mean prediction moved by 0.37")]},
            ],
        },
    ]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    result = run_promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_test_catches_a_rule_that_never_fires(tmp_path):
    """The promtool test above can fail: with the error threshold raised to 50% it does."""
    rule = prometheus_rule()
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            if item.get("alert") == "DmlopsServingErrorRateHigh":
                item["expr"] = item["expr"].replace("> 0.01", "> 0.5")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [_requests("bad", "ok", 95, 20), _requests("bad", "error", 5, 20)],
        "alert_rule_test": [{"eval_time": "15m", "alertname": "DmlopsServingErrorRateHigh",
                             "exp_alerts": [_alert("DmlopsServingErrorRateHigh", "bad", "critical",
                                                   "bad in ns: 5% of requests fail")]}],
    }]}))
    result = run_promtool("test", "rules", str(test_file))
    assert result.returncode != 0 and "DmlopsServingErrorRateHigh" in result.stdout + result.stderr


def test_dashboard_shape():
    board = dashboard()
    assert board["uid"] == "dmlops-serving" and board["panels"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    positions = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & positions, f"panel {panel['title']!r} overlaps another"
        positions |= cells
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"] and 'model=~"$model"' in target["expr"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
