"""Every pod template dmlops builds opts out of Istio sidecar injection (a sidecar keeps a finished Job pod
running in Kubeflow's profile namespaces), unless the cluster settings ask for sidecars."""

import sys
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from crds import assert_valid  # noqa: E402

from dmlops.platform.mesh import ISTIO_SIDECAR_ENV  # noqa: E402
from dmlops.training.config import TrainConfig  # noqa: E402
from dmlops.training.jobs import Placement, batch_job, mpi_job, pytorch_job, tf_job, train_job  # noqa: E402
from dmlops.training.launch import WorkerResources, training_job  # noqa: E402
from dmlops.tuning.worker_search import worker_experiment  # noqa: E402

IMAGE = "ghcr.io/dmlops/torch-horovod:0.1.0"
COMMAND = ["python", "-m", "dmlops.training.worker"]
SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc"},
    "algorithm": {"algorithmName": "random"}, "maxTrialCount": 2, "parallelTrialCount": 1,
    "parameters": [{"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": "0.001", "max": "0.1"}}],
}


def pod_templates(resource: dict) -> list[dict]:
    """Every pod template of a Job, a Training Operator job, an MPIJob, a TrainJob's runtime patches, or
    the trial job of a Katib Experiment."""
    spec = resource["spec"]
    if resource["kind"] == "Experiment":
        return pod_templates(spec["trialTemplate"]["trialSpec"])
    if resource["kind"] == "Job":
        return [spec["template"]]
    if resource["kind"] == "TrainJob":
        return [job["template"]["spec"]["template"] for patch in spec.get("runtimePatches", [])
                for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]
    replicas = spec.get("pytorchReplicaSpecs") or spec.get("tfReplicaSpecs") or spec["mpiReplicaSpecs"]
    return [replica["template"] for replica in replicas.values()]


def built_resources() -> dict[str, dict]:
    """What dmlops builds: each job builder, the training step's jobs, and the tuning step's trials."""
    common = dict(image=IMAGE, workers=2, placement=Placement(labels={"dmlops.io/task": "train"}))
    resources = {
        "PyTorchJob": pytorch_job("train-a", "team-a", command=COMMAND, **common),
        "TFJob": tf_job("train-a", "team-a", command=COMMAND, **common),
        "MPIJob v2beta1": mpi_job("train-a", "team-a", command=COMMAND, **common),
        "MPIJob v1": mpi_job("train-a", "team-a", command=COMMAND, api_version="kubeflow.org/v1", **common),
        "TrainJob": train_job("train-a", "team-a", command=COMMAND, **common),
        "TrainJob placed": train_job("train-a", "team-a", command=COMMAND, image=IMAGE, placement=Placement(
            gpu=1, node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"})),
        "Job": batch_job("train-a", "team-a", command=COMMAND, image=IMAGE),
    }
    config = TrainConfig(train_uri="minio://mlpipeline/v2/a/train", label="label", export_uri="minio://mlpipeline/v2/a/m")
    for strategy in ("torch-ddp", "tf-multiworker", "horovod-torch"):
        config = TrainConfig(**{**config.__dict__, "strategy": strategy})
        resources[f"train {strategy}"] = training_job(config, 2, WorkerResources(gpu=1), IMAGE, "team-a", "train-b")
        resources[f"tune {strategy}"] = worker_experiment(SEARCH, config, "minio://mlpipeline/v2/a/trials",
                                                          name="tune-b", namespace="team-a", num_workers=2, image=IMAGE)
    config = TrainConfig(**{**config.__dict__, "strategy": "torch-ddp"})
    resources["train trainer"] = training_job(config, 2, WorkerResources(), IMAGE, "team-a", "train-b", job_api="trainer")
    resources["tune Job"] = worker_experiment(SEARCH, config, "s3://b/trials", name="tune-b", namespace="team-a",
                                              image=IMAGE)
    return resources


@pytest.mark.parametrize("name, resource", list(built_resources().items()))
def test_every_pod_template_opts_out_of_istio_sidecar_injection(name, resource, monkeypatch):
    templates = pod_templates(resource)
    assert templates, name
    for template in templates:
        assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}, name
    if resource["kind"] != "Job":  # batch/v1 has no CRD to check against; the others do
        assert_valid(resource)


def test_cluster_settings_that_ask_for_sidecars_leave_injection_to_the_namespace(monkeypatch):
    monkeypatch.setenv(ISTIO_SIDECAR_ENV, "true")
    for name, resource in built_resources().items():
        for template in pod_templates(resource):  # a TrainJob without placement has no patch at all
            assert "annotations" not in template.get("metadata", {}), name


def test_the_sidecar_setting_reaches_every_step_of_a_compiled_pipeline(tmp_path):
    import yaml
    from kfp import compiler, dsl

    from dmlops.platform.cluster_settings import ClusterSettings, apply_to_current_pipeline, build_pipeline

    @dsl.component(base_image="python:3.11")
    def step() -> None:
        pass

    @dsl.pipeline
    def pipeline():
        step()
        apply_to_current_pipeline()

    def environment(settings: ClusterSettings) -> list:
        compiler.Compiler().compile(build_pipeline(pipeline, settings), str(tmp_path / "pipeline.yaml"))
        (executor,) = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())["deploymentSpec"]["executors"].values()
        return executor["container"].get("env", [])

    assert environment(ClusterSettings(istio_sidecar=True)) == [{"name": ISTIO_SIDECAR_ENV, "value": "true"}]
    assert environment(ClusterSettings()) == []
