"""The kubernetes backend of training against the fake Kubernetes API, the test acting as the operator.

The PyTorchJob tests run the workers for real: the "operator" starts each replica's container command
with the container's env plus the rendezvous the training operator gives pods, and copies the master's
output into the master pod's log. Data and model live on an S3 server (moto), as on a cluster.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)  # the shared helpers tests/fake_kube.py and tests/crds.py

from crds import assert_valid  # noqa: E402
from fake_kube import fake_kube  # noqa: E402,F401  (fixture)

from dmlops.platform import JobFailed, resource_name  # noqa: E402
from dmlops.platform.storage import MINIO_SECRET, file_digests  # noqa: E402
from dmlops.platform.local import free_ports  # noqa: E402
from dmlops.training.config import TrainConfig  # noqa: E402
from dmlops.training.export import METADATA_FILE  # noqa: E402
from dmlops.training.jobs import GPU_RESOURCE, MPI_HOSTFILE, SSH_AUTH_MOUNT_PATH  # noqa: E402
from dmlops.training.launch import (  # noqa: E402
    WorkerResources,
    download_export,
    run_kubernetes,
    run_training,
    training_job,
)

NS = "team-a"
IMAGE = "ghcr.io/dmlops/torch-horovod:0.1.0"
RUN_ID, TASK = "run-5e0c", "train"
JOB_NAME = resource_name("train", RUN_ID, TASK)
GPU_WORKERS = WorkerResources(
    cpu="4", memory="16Gi", gpu=1,
    node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)
PLURALS = {"PyTorchJob": "pytorchjobs", "TFJob": "tfjobs", "MPIJob": "mpijobs", "TrainJob": "trainjobs"}


@pytest.fixture
def cluster(fake_kube, tmp_path, monkeypatch):  # noqa: F811
    """The fake API server as this process's cluster: a kubeconfig whose context namespace is NS."""
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield fake_kube
    fake_kube.raise_background_errors()


@pytest.fixture(scope="module")
def s3_data(s3_bucket, tabular) -> dict[str, str]:
    """The training and evaluation data on S3, where worker pods read them."""
    uris = {name: f"{s3_bucket}/data/{name}.parquet" for name in ("train", "eval")}
    for name, uri in uris.items():
        pq.write_table(pq.read_table(tabular[name]), uri)
    return uris


def make_config(s3_data, s3_bucket, export: str, **changes) -> TrainConfig:
    settings = dict(train_uri=s3_data["train"], eval_uri=s3_data["eval"], label="label",
                    export_uri=f"{s3_bucket}/{export}", epochs=1, batch_size=128, hidden_units=[8])
    return TrainConfig(**{**settings, **changes})


def container_env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def run_pytorch_job(fake, name: str, outcome: list) -> None:
    """The training operator's part for a PyTorchJob: one process per replica with the pod's command and
    env plus MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK, the master's output as its pod log, then the
    job's final condition."""
    job = fake.wait_for_object("pytorchjobs", NS, name)
    fake.set_condition("pytorchjobs", NS, name, "Created", reason="PyTorchJobCreated")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    pods = [(role, index, replicas[role]["template"]["spec"]["containers"][0])
            for role in ("Master", "Worker") if role in replicas for index in range(replicas[role]["replicas"])]
    (port,) = free_ports(1)
    processes = []
    for rank, (role, index, container) in enumerate(pods):
        pod = f"{name}-{role.lower()}-{index}"
        labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": role.lower(),
                  "training.kubeflow.org/replica-index": str(index)}
        fake.add_pod(NS, pod, labels, (container["name"],), "Running")
        command = [sys.executable if part == "python" else part for part in container["command"]]
        env = {**os.environ, **container_env(container), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": str(len(pods)), "RANK": str(rank), "OMP_NUM_THREADS": "1"}
        processes.append((pod, subprocess.Popen([*command, *container["args"]], env=env, text=True,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    fake.set_condition("pytorchjobs", NS, name, "Running", reason="PyTorchJobRunning")
    master_pod, master = processes[0]
    for line in master.stdout:
        fake.log(NS, master_pod, line.rstrip("\n"))
    codes = [process.wait(timeout=120) for _, process in processes]
    for (pod, _), code in zip(processes, codes):
        fake.set_pod_phase(NS, pod, "Succeeded" if code == 0 else "Failed")
    fake.set_condition("pytorchjobs", NS, name, "Running", status="False")
    if any(codes):
        fake.set_condition("pytorchjobs", NS, name, "Failed", reason="BackoffLimitExceeded",
                           message=f"PyTorchJob {name} is failed: exit codes {codes}")
    else:
        fake.set_condition("pytorchjobs", NS, name, "Succeeded", reason="PyTorchJobSucceeded")
    outcome.append(codes)


def test_torch_ddp_runs_as_one_pytorchjob_whose_workers_export_the_model(cluster, s3_data, s3_bucket, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="dmlops.platform.kubernetes")
    config = make_config(s3_data, s3_bucket, "models/ddp")
    outcome = []
    cluster.in_background(run_pytorch_job, cluster, JOB_NAME, outcome)

    exported = run_training(config, 2, backend="kubernetes", image=IMAGE, run_id=RUN_ID, task_name=TASK,
                            timeout=180)

    assert outcome == [[0, 0]]
    (job,) = cluster.list("pytorchjobs", NS)
    assert [created["kind"] for created in cluster.created] == ["PyTorchJob"]
    assert_valid({key: job[key] for key in ("apiVersion", "kind", "metadata", "spec")})
    assert job["metadata"]["name"] == JOB_NAME
    assert job["metadata"]["labels"] == {"dmlops.io/run-id": RUN_ID, "dmlops.io/task": TASK}
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert (master["restartPolicy"], job["spec"]["runPolicy"]["backoffLimit"]) == ("ExitCode", 1)
    container = master["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["command"] == ["python", "-m", "dmlops.training.worker"]
    assert container_env(container)["AWS_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]

    # the master's own output, streamed through the pod log API into the launcher's log lines
    prefix = f"[{JOB_NAME}-master-0] "
    streamed = [line[len(prefix):] for line in caplog.messages if line.startswith(prefix)]
    assert exported["framework"] == "torch"
    assert {"workers=2", f"auc={exported['metrics']['auc']:.6g}",
            f"exported torch model to {config.export_uri}"} <= set(streamed), streamed

    # what the train component does next: the export into the Output[Model]'s local path
    local = tmp_path / "model"
    download_export(config.export_uri, str(local))
    assert json.loads((local / METADATA_FILE).read_text())["files"] == file_digests(local, exclude=METADATA_FILE) == exported["files"]


def test_a_retried_step_reattaches_to_its_job_instead_of_creating_a_second(cluster, s3_data, s3_bucket, caplog):
    caplog.set_level(logging.INFO, logger="dmlops.platform.kubernetes")
    config = make_config(s3_data, s3_bucket, "models/retried")
    first_attempt = training_job(config, 1, WorkerResources(), IMAGE, NS, JOB_NAME,
                                 labels={"dmlops.io/run-id": RUN_ID, "dmlops.io/task": TASK})
    from kubernetes import client

    client.CustomObjectsApi(cluster.api_client()).create_namespaced_custom_object(
        "kubeflow.org", "v1", NS, "pytorchjobs", first_attempt)
    outcome = []
    cluster.in_background(run_pytorch_job, cluster, JOB_NAME, outcome)

    exported = run_training(config, 1, backend="kubernetes", image=IMAGE, run_id=RUN_ID, task_name=TASK,
                            timeout=180)

    assert outcome == [[0]]
    assert len(cluster.created) == 1 and len(cluster.list("pytorchjobs", NS)) == 1
    assert any("already created by an earlier attempt of this task; reattaching" in line for line in caplog.messages)
    assert f"[{JOB_NAME}-master-0] auc={exported['metrics']['auc']:.6g}" in caplog.messages


def test_a_failed_job_fails_the_step_with_the_operator_reason(cluster, s3_data, s3_bucket):
    config = make_config(s3_data, s3_bucket, "models/failed", strategy="tf-multiworker")

    def operator():
        cluster.wait_for_object("tfjobs", NS, JOB_NAME)
        cluster.set_condition("tfjobs", NS, JOB_NAME, "Failed", reason="BackoffLimitExceeded",
                              message="TFJob train is failed because 1 Chief replica(s) failed.")

    cluster.in_background(operator)
    with pytest.raises(JobFailed) as failure:
        run_training(config, 2, backend="kubernetes", image=IMAGE, run_id=RUN_ID, task_name=TASK, timeout=30)
    assert failure.value.reason == "BackoffLimitExceeded"
    assert "1 Chief replica(s) failed" in failure.value.message
    assert failure.value.resource.kind == "TFJob" and failure.value.resource.name == JOB_NAME


def pod_specs(job: dict) -> dict[str, dict]:
    """Each replica role's pod spec (TrainJob: the runtime patch of its ``node`` job)."""
    spec = job["spec"]
    if job["kind"] == "TrainJob":
        (patch,) = spec["runtimePatches"]
        return {jobs["name"]: jobs["template"]["spec"]["template"]["spec"]
                for jobs in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]}
    replicas = spec.get("pytorchReplicaSpecs") or spec.get("tfReplicaSpecs") or spec["mpiReplicaSpecs"]
    return {role: replica["template"]["spec"] for role, replica in replicas.items()}


@pytest.mark.parametrize("strategy, job_api, kind, roles", [
    ("torch-ddp", "training-operator", "PyTorchJob", {"Master", "Worker"}),
    ("torch-ddp", "trainer", "TrainJob", {"node"}),
    ("tf-multiworker", "training-operator", "TFJob", {"Chief", "Worker"}),
    ("horovod-torch", "training-operator", "MPIJob", {"Launcher", "Worker"}),
    ("horovod-tf", "training-operator", "MPIJob", {"Launcher", "Worker"}),
])
def test_each_strategy_creates_one_valid_job_with_the_worker_placement(cluster, strategy, job_api, kind, roles):
    config = TrainConfig(train_uri="gs://b/train.parquet", eval_uri="gs://b/eval.parquet", label="label",
                         export_uri="gs://b/model", strategy=strategy, device="cuda")

    def operator():
        cluster.wait_for_object(PLURALS[kind], NS, JOB_NAME)
        done = "Complete" if kind == "TrainJob" else "Succeeded"
        cluster.set_condition(PLURALS[kind], NS, JOB_NAME, done)

    cluster.in_background(operator)
    run_kubernetes(config, 3, GPU_WORKERS, IMAGE, "", "", max_restarts=2, timeout=30, run_id=RUN_ID,
                   task_name=TASK, job_api=job_api)

    assert [created["kind"] for created in cluster.created] == [kind]
    (job,) = cluster.list(PLURALS[kind], NS)
    assert_valid({key: job[key] for key in ("apiVersion", "kind", "metadata", "spec")})
    specs = pod_specs(job)
    assert set(specs) == roles
    for role, pod in specs.items():
        # the MPI launcher runs horovodrun, not training: it does not ask for the workers' GPU nodes
        assert pod.get("nodeSelector") == (None if role == "Launcher" else GPU_WORKERS.node_selector)
        assert pod["tolerations"] == GPU_WORKERS.tolerations
    training_containers = [pod["containers"][0] for role, pod in specs.items() if role not in ("Launcher", "node")]
    limits = [job["spec"]["trainer"]["resourcesPerNode"]["limits"]] if kind == "TrainJob" else [
        container["resources"]["limits"] for container in training_containers]
    assert limits and all(limit == {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "1"} for limit in limits)
    args = job["spec"]["trainer"]["args"] if kind == "TrainJob" else None
    if kind == "TrainJob":
        assert job["spec"]["trainer"]["command"] == ["torchrun", "--module", "dmlops.training.worker"]
        assert job["spec"]["trainer"]["numNodes"] == 3 and job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    elif kind == "MPIJob":
        assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["spec"]["sshAuthMountPath"] == SSH_AUTH_MOUNT_PATH
        worker = specs["Worker"]["containers"][0]
        assert "command" not in worker and "args" not in worker  # the image's CMD: sshd on port 2222
        launcher = specs["Launcher"]["containers"][0]
        assert launcher["command"][:8] == ["horovodrun", "--gloo", "-np", "3", "--hostfile", MPI_HOSTFILE,
                                           "--ssh-port", "2222"]
        args = launcher["command"][8:]
        assert GPU_RESOURCE not in launcher["resources"]["limits"]
    else:
        args = training_containers[0]["args"]
    assert args[args.index("--strategy") + 1] == strategy and args[args.index("--device") + 1] == "cuda"


@pytest.mark.parametrize("strategy", ["horovod-torch", "horovod-tf"])
def test_the_mpijob_launcher_does_not_ask_for_a_gpu_node(strategy):
    config = TrainConfig(train_uri="s3://b/train", label="label", export_uri="s3://b/model", strategy=strategy,
                         device="cuda")
    job = training_job(config, 2, GPU_WORKERS, IMAGE, NS, JOB_NAME)
    assert_valid(job)
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "nodeSelector" not in launcher and GPU_RESOURCE not in launcher["containers"][0]["resources"]["limits"]
    assert worker["nodeSelector"] == GPU_WORKERS.node_selector
    assert worker["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "1"


def test_kfp_minio_uris_become_s3_with_credentials_from_the_kfp_secret():
    config = TrainConfig(train_uri="minio://mlpipeline/v2/artifacts/p/r/split/train", label="label",
                         export_uri="minio://mlpipeline/v2/artifacts/p/r/train/model",
                         checkpoint_uri="minio://mlpipeline/v2/artifacts/p/r/train/model-checkpoints")
    job = training_job(config, 2, WorkerResources(), IMAGE, NS, JOB_NAME)
    assert_valid(job)
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--export-uri") + 1] == "s3://mlpipeline/v2/artifacts/p/r/train/model"
    assert args[args.index("--train-uri") + 1] == "s3://mlpipeline/v2/artifacts/p/r/split/train"
    env = {item["name"]: item for item in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": MINIO_SECRET, "key": "accesskey"}}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]  # the credentials stay in the Secret
    assert env["AWS_ENDPOINT_URL"]["value"].startswith("http")


@pytest.mark.parametrize("change, message", [
    ({"train_uri": "/tmp/outputs/train_data/data"}, "train_uri=.*cannot read this pod's local paths"),
    ({"image": ""}, "no worker image; pass .*TORCH_IMAGE"),
    ({"job_api": "v3"}, "unknown job_api 'v3'"),
    ({"strategy": "horovod-torch", "job_api": "trainer"}, "'trainer' runs torch-ddp only"),
    ({"gpu": 4}, "one training process per pod uses one GPU; for 2 workers with 4 GPUs each ask for 8 workers "
                 "with 1 GPU"),
])
def test_bad_arguments_are_refused_before_anything_is_created(change, message):
    image, job_api = change.pop("image", IMAGE), change.pop("job_api", "training-operator")
    resources = WorkerResources(gpu=change.pop("gpu", 0))
    config = TrainConfig(**{"train_uri": "gs://b/t", "label": "label", "export_uri": "gs://b/m", **change})
    with pytest.raises(ValueError, match=message):
        training_job(config, 2, resources, image, NS, JOB_NAME, job_api=job_api)


@pytest.mark.parametrize("strategy, replicas, primary, policy", [
    ("torch-ddp", "pytorchReplicaSpecs", "Master", "ExitCode"),
    ("tf-multiworker", "tfReplicaSpecs", "Chief", "ExitCode"),
    ("horovod-torch", "mpiReplicaSpecs", "Launcher", "OnFailure"),  # horovodrun exits 1 for any failed worker
])
def test_a_permanent_worker_error_is_not_restarted_by_the_operator(strategy, replicas, primary, policy):
    from dmlops.training.config import RunConfig

    run = RunConfig(export_uri="gs://b/m", entrypoint="team.models:train", entrypoint_args={"epochs": 2},
                    strategy=strategy)
    job = training_job(run, 2, WorkerResources(), IMAGE, NS, JOB_NAME, max_restarts=2)
    assert_valid(job)
    roles = job["spec"][replicas]
    assert {role["restartPolicy"] for role in roles.values() if "restartPolicy" in role} == {policy}
    assert roles[primary]["restartPolicy"] == policy
    never = training_job(run, 2, WorkerResources(), IMAGE, NS, JOB_NAME, max_restarts=0)
    assert never["spec"][replicas][primary]["restartPolicy"] == "Never"
    container = roles[primary]["template"]["spec"]["containers"][0]
    words = [*container.get("command", []), *container.get("args", [])]
    assert words[words.index("--entrypoint") + 1] == "team.models:train" and words[-2:] == ["--epochs", "2"]
