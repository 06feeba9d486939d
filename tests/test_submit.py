"""`dmlops submit` against an HTTP-level fake of the Kubeflow Pipelines v2beta1 REST API, and cluster
settings (secrets, PVCs, nodes, GPUs, retries) compiled into the pipeline's Kubernetes platform spec."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from dmlops.cli import cron_with_seconds, main
from dmlops.pipelines import PIPELINES
from dmlops.platform.cluster_settings import ClusterSettings, build_pipeline

REPO = Path(__file__).resolve().parents[1]
SETTINGS = """
secret_env:
  - secret: gcs-credentials
    keys: {service-account.json: GOOGLE_APPLICATION_CREDENTIALS_JSON}
secret_volumes:
  - {secret: aws-credentials, mount_path: /var/secrets/aws}
pvc_mounts:
  - {pvc: dmlops-checkpoints, mount_path: /checkpoints}
node_selector: {pool: cpu}
tolerations:
  - {key: dedicated, operator: Equal, value: ml, effect: NoSchedule}
retries: 2
"""


class FakePipelinesAPI(BaseHTTPRequestHandler):
    """Records every request; answers like KFP's API server for experiments, runs and recurring runs."""

    requests: list = []
    experiments: dict = {}

    def _reply(self, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiments": list(self.experiments.values())})
        self._reply({})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            experiment = {"experiment_id": f"exp-{len(self.experiments) + 1}", "display_name": body["display_name"]}
            self.experiments[experiment["experiment_id"]] = experiment
            return self._reply(experiment)
        if self.path == "/apis/v2beta1/runs":
            return self._reply({"run_id": "run-1", "display_name": body["display_name"]})
        if self.path == "/apis/v2beta1/recurringruns":
            return self._reply({"recurring_run_id": "rec-1", "display_name": body["display_name"]})
        self._reply({})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api():
    FakePipelinesAPI.requests = []
    FakePipelinesAPI.experiments = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePipelinesAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", FakePipelinesAPI
    server.shutdown()


@pytest.fixture
def settings_file(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(SETTINGS)
    return path


def _posts(api, path):
    return [body for method, url, body in api.requests if method == "POST" and url == path]


def test_submit_starts_a_run_with_settings_and_parameters(kfp_api, settings_file):
    host, api = kfp_api
    assert main(["submit", "flights", "--host", host, "--experiment", "nightly", "--settings", str(settings_file),
                 "--param", "eval_from=2013-12-01"]) == 0
    (experiment,) = _posts(api, "/apis/v2beta1/experiments")
    assert experiment["display_name"] == "nightly"
    (run,) = _posts(api, "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"eval_from": "2013-12-01"}
    submitted = run["pipeline_spec"]
    assert submitted["pipeline_spec"]["pipelineInfo"]["name"] == "flights"
    executors = submitted["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(submitted["pipeline_spec"]["deploymentSpec"]["executors"])
    assert executors, "cluster settings did not reach the submitted pipeline"
    for config in executors.values():
        assert config["secretAsEnv"][0]["secretName"] == "gcs-credentials"
        assert config["secretAsVolume"][0]["mountPath"] == "/var/secrets/aws"
        assert config["pvcMount"][0]["mountPath"] == "/checkpoints"
        assert config["nodeSelector"]["labels"] == {"pool": "cpu"}
        assert config["tolerations"][0]["key"] == "dedicated"


def test_submit_with_schedule_creates_a_recurring_run_in_the_existing_experiment(kfp_api):
    host, api = kfp_api
    api.experiments["exp-7"] = {"experiment_id": "exp-7", "display_name": "dmlops"}
    assert main(["submit", "flights", "--host", host, "--schedule", "30 2 * * *"]) == 0
    assert _posts(api, "/apis/v2beta1/experiments") == []
    (recurring,) = _posts(api, "/apis/v2beta1/recurringruns")
    assert recurring["experiment_id"] == "exp-7"
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"


def test_cron_fields():
    assert cron_with_seconds("*/5 * * * * *") == "*/5 * * * * *"
    with pytest.raises(SystemExit, match="5 or 6 fields"):
        cron_with_seconds("daily")


def test_unknown_setting_names_the_file(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("node_selectors: {pool: cpu}\n")
    with pytest.raises(ValueError, match="cluster.yaml: unknown settings \\['node_selectors'\\]"):
        ClusterSettings.from_yaml(path)


def test_settings_leave_the_checked_in_pipeline_untouched(tmp_path, settings_file):
    with_settings = tmp_path / "with.yaml"
    compiler.Compiler().compile(build_pipeline(PIPELINES["flights"], ClusterSettings.from_yaml(settings_file)),
                                str(with_settings))
    documents = list(yaml.safe_load_all(with_settings.read_text()))
    assert len(documents) == 2 and "platforms" in documents[1]
    checked_in = list(yaml.safe_load_all((REPO / "pipelines" / "flights.yaml").read_text()))
    assert len(checked_in) == 1


SECRET_PATTERNS = {
    "AWS access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GCP service account key": re.compile(r'"private_key_id"\s*:'),
    "GitHub token": re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"),
    "password assignment": re.compile(r"(?i)(password|passwd|secret_key|api_key|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{12,}"),
    "URL with credentials": re.compile(r"[a-z]+://[^/\s:@]+:[^/\s@]+@"),
}


def test_compiled_yaml_holds_no_secrets():
    files = [*(REPO / "components").rglob("*.yaml"), *(REPO / "pipelines").rglob("*.yaml")]
    assert files
    findings = [
        f"{path.relative_to(REPO)}: {name}"
        for path in files
        for name, pattern in SECRET_PATTERNS.items()
        if pattern.search(path.read_text())
    ]
    assert findings == []


def test_secret_scan_catches_a_planted_key():
    planted = 'env: {AWS_ACCESS_KEY_ID: "AKIAABCDEFGHIJKLMNOP", password: "hunter2hunter2x"}'
    caught = {name for name, pattern in SECRET_PATTERNS.items() if pattern.search(planted)}
    assert caught == {"AWS access key", "password assignment"}


def test_retrain_is_scheduled_with_its_parameters(kfp_api, settings_file):
    host, api = kfp_api
    assert main(["submit", "retrain", "--host", host, "--schedule", "0 * * * *", "--settings", str(settings_file),
                 "--param", "reference_uri=gs://bucket/train", "--param", "predictions_uri=gs://bucket/log",
                 "--param", "labels_uri=gs://bucket/labels", "--param", "registry=http://dmlops-mlflow:5000"]) == 0
    (recurring,) = _posts(api, "/apis/v2beta1/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 * * * *"
    assert recurring["runtime_config"]["parameters"]["registry"] == "http://dmlops-mlflow:5000"
    spec = recurring["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "retrain"
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"]
    assert {"exec-feedback", "exec-monitor", "exec-training-window", "exec-train", "exec-register-model",
            "exec-deploy"} <= set(executors)
    # cluster settings reach every container step of both branches (importers run no container)
    containers = {name for name in executors if not name.startswith("exec-importer")}
    assert set(spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == containers
    assert {"exec-train", "exec-train-2", "exec-deploy", "exec-deploy-2"} <= containers
