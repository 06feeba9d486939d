"""The Katib backend against the fake Kubernetes API: create or reattach, best trial from
status.currentOptimalTrial, trials table from the Trial resources, failure policy, timeout deletes."""

import pytest
from kubernetes import client

from dmlops.platform.errors import LaunchTimeout
from dmlops.platform.kubernetes import KubernetesLauncher
from dmlops.tuning import TuningFailed, TuningSpec, apply_policy, build_experiment, trial_job
from dmlops.tuning.katib import run_experiment
from dmlops.tuning.results import html_report, trials_table
from fake_kube import fake_kube  # noqa: F401  (fixture)

NAMESPACE, NAME = "kubeflow", "tune-flights-0123456789"
SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc", "additionalMetricNames": ["accuracy"]},
    "algorithm": {"algorithmName": "random"}, "parallelTrialCount": 2, "maxTrialCount": 2, "maxFailedTrialCount": 0,
    "parameters": [
        {"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": "0.0001", "max": "0.1"}},
        {"name": "batch_size", "parameterType": "int", "feasibleSpace": {"min": "64", "max": "512"}},
    ],
}


def experiment() -> dict:
    command = ["python", "-m", "dmlops.training.worker", "--learning-rate", "${trialParameters.learning_rate}",
               "--batch-size", "${trialParameters.batch_size}"]
    return build_experiment(TuningSpec.from_katib(SEARCH), NAME, NAMESPACE, trial_job("PyTorchJob", "image", command, 2))


def observation(auc: str, accuracy: str) -> dict:
    return {"metrics": [{"name": "auc", "min": "0.5", "max": auc, "latest": auc},
                        {"name": "accuracy", "min": "0.5", "max": accuracy, "latest": accuracy}]}


def operate(fake, final: str, reason: str) -> None:
    """Katib's part: two trials, their observations, the optimal trial, then the final condition."""
    fake.wait_for_object("experiments", NAMESPACE, NAME)
    api = client.CustomObjectsApi(fake.api_client())
    trials = [("tune-flights-a", "0.01", "128", "0.71", "0.80", "Succeeded"),
              ("tune-flights-b", "0.05", "256", "0.75", "0.82", "Succeeded" if final == "Succeeded" else "Failed")]
    for name, lr, batch, auc, accuracy, state in trials:
        api.create_namespaced_custom_object("kubeflow.org", "v1beta1", NAMESPACE, "trials", {
            "apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"katib.kubeflow.org/experiment": NAME}},
            "spec": {"parameterAssignments": [{"name": "learning_rate", "value": lr}, {"name": "batch_size", "value": batch}]},
        })
        fake.patch_status("trials", NAMESPACE, name, {"observation": observation(auc, accuracy)})
        fake.set_condition("trials", NAMESPACE, name, "Created")
        fake.set_condition("trials", NAMESPACE, name, state, message=f"trial {state.lower()}")
    best = trials[0] if final == "Failed" else trials[1]
    fake.patch_status("experiments", NAMESPACE, NAME, {"currentOptimalTrial": {
        "bestTrialName": best[0],
        "parameterAssignments": [{"name": "learning_rate", "value": best[1]}, {"name": "batch_size", "value": best[2]}],
        "observation": observation(best[3], best[4]),
    }})
    fake.set_condition("experiments", NAMESPACE, NAME, final, reason=reason, message=f"experiment {final.lower()}")


def launcher(fake) -> KubernetesLauncher:
    return KubernetesLauncher(fake.api_client(), poll_interval_s=0.05, watch_window_s=2, echo=lambda line: None)


def test_best_trial_comes_from_current_optimal_trial(fake_kube):
    fake_kube.in_background(operate, fake_kube, "Succeeded", "ExperimentMaxTrialsReached")
    result = run_experiment(experiment(), launcher(fake_kube), timeout_s=20)
    assert result.succeeded and result.reason == "ExperimentMaxTrialsReached"
    assert result.best_trial == "tune-flights-b"
    assert result.best_parameters == {"learning_rate": 0.05, "batch_size": 256}
    assert result.best_objective == 0.75
    assert [(t.name, t.state, t.objective, t.metrics["accuracy"]) for t in result.trials] == [
        ("tune-flights-a", "Succeeded", 0.71, 0.80), ("tune-flights-b", "Succeeded", 0.75, 0.82)]
    table = trials_table(result)
    assert table.column("param_batch_size").to_pylist() == [128, 256]
    assert "auc vs learning_rate" in html_report(result)
    assert fake_kube.count("POST", "/experiments") == 1


def test_a_retried_step_reattaches_instead_of_creating_a_second_experiment(fake_kube):
    api = client.CustomObjectsApi(fake_kube.api_client())
    api.create_namespaced_custom_object("kubeflow.org", "v1beta1", NAMESPACE, "experiments", experiment())
    fake_kube.in_background(operate, fake_kube, "Succeeded", "ExperimentGoalReached")
    result = run_experiment(experiment(), launcher(fake_kube), timeout_s=20)
    assert result.best_trial == "tune-flights-b"
    assert len(fake_kube.list("experiments", NAMESPACE)) == 1


def test_failed_experiment_follows_the_policy(fake_kube):
    fake_kube.in_background(operate, fake_kube, "Failed", "ExperimentFailed")
    result = run_experiment(experiment(), launcher(fake_kube), timeout_s=20)
    assert not result.succeeded and [t.state for t in result.trials] == ["Succeeded", "Failed"]
    with pytest.raises(TuningFailed, match="raise maxFailedTrialCount, or pass on_failure='use-best'"):
        apply_policy(result)
    assert apply_policy(result, on_failure="use-best").best_parameters == {"learning_rate": 0.01, "batch_size": 128}


def test_timeout_deletes_the_experiment(fake_kube):
    with pytest.raises(LaunchTimeout):
        run_experiment(experiment(), launcher(fake_kube), timeout_s=1)
    assert fake_kube.get("experiments", NAMESPACE, NAME) is None
    assert fake_kube.count("DELETE", f"/experiments/{NAME}") == 1
