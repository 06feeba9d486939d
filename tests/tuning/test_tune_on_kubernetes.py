"""The tune component on backend "kubernetes", against the fake Kubernetes API with the test acting as Katib:
the Experiment it creates is read back and checked as the trial pods would run it."""

import shlex

import pytest
from kfp import dsl

from crds import assert_valid
from dmlops.components.tuning import tune
from dmlops.tuning.experiment import primary_container
from fake_kube import fake_kube  # noqa: F401  (fixture)

NS = "team-a"
MINIO_SECRET = "mlpipeline-minio-artifact"  # the Secret KFP keeps in every profile namespace
ARTIFACTS = "minio://mlpipeline/v2/artifacts/flights/run-7/"
SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc"},
    "algorithm": {"algorithmName": "random"}, "parallelTrialCount": 1, "maxTrialCount": 1,
    "parameters": [{"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": "0.001", "max": "0.1"}}],
}


@pytest.fixture
def cluster(fake_kube, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield fake_kube
    fake_kube.raise_background_errors()


def artifact(kind, task_output: str, folder):
    """An artifact at KFP's default store (minio://mlpipeline/...) whose local file is under ``folder``."""
    made = kind(uri=ARTIFACTS + task_output)
    made._custom_path = str(folder / task_output.replace("/", "-"))  # KFP's launcher mounts it at a local path
    return made


def katib_finishes(fake) -> None:
    """Katib's part: the experiment's best trial and its final condition."""
    experiment = fake.wait_for(lambda: next(iter(fake.list("experiments", NS)), None))
    name = experiment["metadata"]["name"]
    fake.patch_status("experiments", NS, name, {"currentOptimalTrial": {
        "bestTrialName": f"{name}-a",
        "parameterAssignments": [{"name": "learning_rate", "value": "0.01"}],
        "observation": {"metrics": [{"name": "auc", "min": "0.7", "max": "0.8", "latest": "0.8"}]},
    }})
    fake.set_condition("experiments", NS, name, "Succeeded", reason="ExperimentMaxTrialsReached", message="done")


def tune_on_cluster(fake, folder, **inputs) -> dict:
    """Run the tune component's body with KFP's default artifact URIs; return the Experiment it created."""
    fake.in_background(katib_finishes, fake)
    tune.python_func(
        train_data=artifact(dsl.Dataset, "split/train", folder), eval_data=artifact(dsl.Dataset, "split/eval", folder),
        label="label", search_space=SEARCH, best_parameters=artifact(dsl.Artifact, "tune/best_parameters", folder),
        trials=artifact(dsl.Dataset, "tune/trials", folder), report=artifact(dsl.HTML, "tune/report", folder),
        metrics=artifact(dsl.Metrics, "tune/metrics", folder), backend="kubernetes", trial_image="image:1",
        timeout_seconds=30, **inputs,
    )
    (experiment,) = fake.list("experiments", NS)
    assert_valid(experiment)
    return experiment


def trial_argument(experiment: dict, flag: str) -> str:
    container = primary_container(experiment)
    command = [*container["command"], *container.get("args", [])]
    if command[:2] == ["sh", "-c"]:
        command = shlex.split(command[2])
    return command[command.index(flag) + 1]


def test_trial_pods_read_kfp_minio_artifacts_as_s3_with_the_kfp_secret(cluster, tmp_path):
    experiment = tune_on_cluster(cluster, tmp_path)
    assert trial_argument(experiment, "--train-uri") == "s3://mlpipeline/v2/artifacts/flights/run-7/split/train"
    assert trial_argument(experiment, "--eval-uri") == "s3://mlpipeline/v2/artifacts/flights/run-7/split/eval"
    assert trial_argument(experiment, "--export-uri") == (
        "s3://mlpipeline/v2/artifacts/flights/run-7/tune/trials-models/${trialParameters.trialName}")
    env = {item["name"]: item for item in primary_container(experiment)["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": MINIO_SECRET, "key": "accesskey"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": MINIO_SECRET, "key": "secretkey"}}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio-service.kubeflow:9000"


@pytest.mark.parametrize("gpu, device", [(1, "cuda"), (0, "cpu")])
def test_trials_given_a_gpu_train_on_cuda(cluster, tmp_path, gpu, device):
    experiment = tune_on_cluster(cluster, tmp_path, worker_gpu=gpu)
    assert trial_argument(experiment, "--device") == device
    resources = primary_container(experiment)["resources"]["limits"]
    assert resources.get("nvidia.com/gpu") == (str(gpu) if gpu else None)


def test_a_trial_budget_katib_would_refuse_fails_the_step_before_any_experiment(cluster, tmp_path):
    search = {**SEARCH, "maxTrialCount": 6, "maxFailedTrialCount": 2}
    with pytest.raises(ValueError, match=r"spec.maxFailedTrialCount \(2\) must not exceed spec.maxTrialCount \(1\)"):
        tune.python_func(
            train_data=artifact(dsl.Dataset, "split/train", tmp_path), eval_data=artifact(dsl.Dataset, "split/eval", tmp_path),
            label="label", search_space=search, best_parameters=artifact(dsl.Artifact, "tune/best_parameters", tmp_path),
            trials=artifact(dsl.Dataset, "tune/trials", tmp_path), report=artifact(dsl.HTML, "tune/report", tmp_path),
            metrics=artifact(dsl.Metrics, "tune/metrics", tmp_path), backend="kubernetes", trial_image="image:1",
            max_trial_count=1, timeout_seconds=5,
        )
    assert cluster.list("experiments", NS) == [] and cluster.count("POST", "/experiments") == 0
