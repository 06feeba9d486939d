"""The compiled flights pipeline run with kfp.local's DockerRunner: every task in a container of the image
its YAML names, as that image's non-root user, sharing only the pipeline root (as KFP's pods share only
the artifact store), end to end to the trained model served by the serve image as KServe runs it."""

import contextlib
import io
import json
import re
import time
from pathlib import Path

import pytest
import requests
import yaml
from kfp import components, local

from dmlops.features.config import local_store_spec
from dmlops.platform.local import free_ports

from image_imports import REPO

pytestmark = [pytest.mark.images, pytest.mark.slow]

PIPELINE_YAML = REPO / "pipelines" / "flights.yaml"
COMPONENT_YAMLS = sorted((REPO / "components").rglob("*.yaml"))
SERVING_RUNTIME = REPO / "manifests" / "cluster" / "cluster-serving-runtime.yaml"


def pipeline_spec() -> dict:
    return yaml.safe_load(PIPELINE_YAML.read_text())


def executors_by_task(spec: dict) -> dict[str, str]:
    """{task name: executor label} over the root DAG and every sub-DAG (task names are unique per run
    folder only within a DAG, as kfp.local names them)."""
    found = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for task, body in dag["tasks"].items():
            component = spec["components"][body["componentRef"]["name"]]
            if "executorLabel" in component:
                found[task] = component["executorLabel"]
    return found


@pytest.fixture(scope="module")
def docker_run(built, tmp_path_factory):
    """The flights pipeline from pipelines/flights.yaml under DockerRunner: (run folder, printed output,
    wall seconds)."""
    for family in ("base", "torch-horovod", "serve"):
        built(family)
    root = tmp_path_factory.mktemp("docker-runs")
    # The pipeline root is the only folder every task's container shares (mounted at the same path); the
    # images' user (uid 1000, group 0) writes there, as it would on a volume a cluster gives any uid.
    root.chmod(0o777)
    store = local_store_spec(str(root / "feature_store"), project="flights")
    flights = components.load_component_from_file(str(PIPELINE_YAML))
    local.init(runner=local.DockerRunner(), pipeline_root=str(root), raise_on_error=True)
    printed = io.StringIO()
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(printed):
            flights(feature_store=store, endpoint="flights-docker")
    except RuntimeError:
        print(printed.getvalue()[-20_000:])  # the failed task's container log, which kfp.local printed
        raise
    seconds = time.monotonic() - started
    (run_dir,) = [path for path in root.iterdir() if path.is_dir() and path.name != "feature_store"]
    print(f"flights under DockerRunner: {seconds:.0f} s")
    return run_dir, printed.getvalue(), seconds


def metadata(run_dir: Path) -> dict:
    steps = {}
    for path in run_dir.rglob("executor_output.json"):
        artifacts = json.loads(path.read_text()).get("artifacts", {})
        steps[path.parent.name] = {name: entry["artifacts"][0]["metadata"] for name, entry in artifacts.items()}
    return steps


def test_every_task_ran_in_the_image_its_yaml_names(docker_run):
    run_dir, printed, _ = docker_run
    spec = pipeline_spec()
    executors = spec["deploymentSpec"]["executors"]
    expected: dict[str, int] = {}
    for label in executors_by_task(spec).values():
        reference = executors[label]["container"]["image"]
        expected[reference] = expected.get(reference, 0) + 1
    started = {reference: printed.count(f"Found image {reference!r}") for reference in expected}
    assert started == expected
    assert set(expected) == {f"ghcr.io/dmlops/{family}:0.1.0" for family in ("base", "torch-horovod", "serve")}
    done = {path.parent.name for path in run_dir.rglob("executor_output.json")}
    assert set(executors_by_task(spec)) <= done


def test_every_flights_component_yaml_ran_in_its_image(docker_run):
    """Each checked-in component YAML the flights pipeline uses is, container for container, one the run
    ran; the others (monitoring, registry, privacy, ...) name one of the images the run used."""
    run_dir, _, _ = docker_run
    spec = pipeline_spec()
    executors = spec["deploymentSpec"]["executors"]
    done = {path.parent.name for path in run_dir.rglob("executor_output.json")}
    ran = {label for task, label in executors_by_task(spec).items() if task in done}
    images = {executor["container"]["image"] for executor in executors.values()}
    used = 0
    for path in COMPONENT_YAMLS:
        container = yaml.safe_load(path.read_text())["deploymentSpec"]["executors"]
        ((_, own),) = container.items()
        assert own["container"]["image"] in images, f"{path.relative_to(REPO)}: an image the run did not use"
        if any(executor["container"] == own["container"] for executor in executors.values()):
            used += 1
            matches = [label for label in ran if executors[label]["container"] == own["container"]]
            assert matches, f"{path.relative_to(REPO)}: no task of the DockerRunner run had its image and command"
    assert used >= 15, f"only {used} component YAMLs are flights tasks"


def test_flights_results_under_docker(docker_run):
    run_dir, printed, _ = docker_run
    steps = metadata(run_dir)
    assert steps["ingest"]["dataset"]["rows"] == 336_776
    labelled = steps["derive-columns"]
    assert labelled["output"]["rows"] + labelled["quarantine"]["rows"] == 336_776
    split = steps["split-by-time"]
    assert steps["feast-training-set"]["training_set"]["rows"] == split["train"]["rows"]
    assert steps["feast-training-set-2"]["training_set"]["rows"] == split["eval"]["rows"]
    assert steps["tune"]["trials"]["rows"] == 2
    assert 0.5 < steps["evaluate"]["metrics"]["auc"] <= 1.0
    # deploy (backend local) started the predictor in the serve image and smoke-tested it; that server
    # ends with the task's container, so the model is served again below as KServe would serve it.
    assert steps["deploy"]["metrics"]["decision"] == "first-deploy"


def test_trained_model_is_served_by_the_serve_image(docker_run, built, docker_client):
    """The serve image runs the ClusterServingRuntime's own command and args on the trained model mounted
    at /mnt/models (where KServe's storage initializer puts it), and answers the deploy step's request."""
    run_dir, printed, _ = docker_run
    model_dir = next(path.parent for path in run_dir.glob("train/model/metadata.json"))
    container_spec = yaml.safe_load(SERVING_RUNTIME.read_text())["spec"]["containers"][0]
    assert container_spec["image"] == built("serve")
    args = [arg.replace("{{.Name}}", "flights-delay") for arg in container_spec["args"]]
    (port,) = free_ports(1)
    args = [f"--http_port={port}" if arg.startswith("--http_port=") else arg for arg in args]
    curl = next(line.strip() for line in printed.splitlines() if line.strip().startswith("curl "))  # indented by kfp.local
    body = re.search(r"-d '(.+)' http", curl).group(1).replace("'\\''", "'")
    server = docker_client.containers.run(
        built("serve"), entrypoint=container_spec["command"], command=args, detach=True, user="1000",
        network_mode="host", volumes={str(model_dir): {"bind": "/mnt/models", "mode": "ro"}},
        cap_drop=["ALL"], security_opt=["no-new-privileges"],
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models/flights-delay"
        deadline = time.monotonic() + 120
        while True:
            server.reload()
            assert server.status == "running", server.logs().decode(errors="replace")[-3000:]
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, server.logs().decode(errors="replace")[-3000:]
            time.sleep(0.5)
        answer = requests.post(f"{url}:predict", data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == 200, answer.text
        (probability,) = answer.json()["predictions"]
        assert 0.0 <= probability <= 1.0
    finally:
        server.remove(force=True)
