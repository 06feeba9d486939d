"""Run an Experiment on Katib through the platform launcher and read its outcome.

The launcher creates the Experiment (or reattaches to the one an earlier attempt of the same task
created), waits on its ``Succeeded``/``Failed`` condition with a timeout and deletes it when the step is
cancelled. The best trial is read from ``status.currentOptimalTrial``; the trials table from the
experiment's ``Trial`` resources (label ``katib.kubeflow.org/experiment``).
"""

from __future__ import annotations

from typing import Any

from dmlops.platform.errors import JobFailed
from dmlops.platform.kubernetes import KubernetesLauncher
from dmlops.tuning.results import FAILED, TrialRecord, TuningResult
from dmlops.tuning.spec import TuningSpec

GROUP, VERSION = "kubeflow.org", "v1beta1"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
_TRIAL_STATES = ("Succeeded", "Failed", "EarlyStopped", "Killed", "MetricsUnavailable", "Running")


def _metric_value(metric: dict[str, Any], strategy: str) -> float | None:
    """A Katib observation metric's value for the strategy (``latest`` when min/max are unavailable)."""
    for key in (strategy, "latest"):
        try:
            return float(metric[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _observed(spec: TuningSpec, observation: dict[str, Any] | None) -> dict[str, float | None]:
    metrics = {metric.get("name"): metric for metric in (observation or {}).get("metrics") or []}
    return {
        name: _metric_value(metrics[name], spec.objective.strategy(name)) if name in metrics else None
        for name in spec.objective.metric_names
    }


def trial_record(spec: TuningSpec, trial: dict[str, Any]) -> TrialRecord:
    """A Katib ``Trial`` resource as a trial record (its last true condition is its state)."""
    status = trial.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    known = [c for c in conditions if c.get("type") in _TRIAL_STATES]
    state = known[-1] if known else {"type": "Running", "message": ""}
    assignments = {item["name"]: item["value"] for item in (trial.get("spec") or {}).get("parameterAssignments") or []}
    metrics = _observed(spec, status.get("observation"))
    return TrialRecord(
        name=trial["metadata"]["name"],
        parameters=spec.cast_assignments(assignments),
        state=state["type"],
        objective=metrics[spec.objective.metric],
        metrics=metrics,
        observations=len((status.get("observation") or {}).get("metrics") or []),
        message=state.get("message", ""),
    )


def experiment_result(spec: TuningSpec, experiment: dict[str, Any], trials: list[dict[str, Any]]) -> TuningResult:
    """The outcome of a finished Experiment: its condition, trials and ``status.currentOptimalTrial``."""
    status = experiment.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    final = next((c for c in reversed(conditions) if c.get("type") in ("Succeeded", "Failed")), None)
    optimal = status.get("currentOptimalTrial") or {}
    best_name = optimal.get("bestTrialName") or None
    assignments = {item["name"]: item["value"] for item in optimal.get("parameterAssignments") or []}
    best_objective = _observed(spec, optimal.get("observation"))[spec.objective.metric]
    records = sorted((trial_record(spec, trial) for trial in trials), key=lambda record: record.name)
    return TuningResult(
        experiment=experiment["metadata"]["name"],
        objective_type=spec.objective.type,
        objective_metric=spec.objective.metric,
        goal=spec.objective.goal,
        succeeded=bool(final) and final["type"] == "Succeeded",
        reason=(final or {}).get("reason", FAILED),
        message=(final or {}).get("message", "the experiment has no final condition"),
        trials=records,
        best_trial=best_name if best_objective is not None else None,
        best_parameters=spec.cast_assignments(assignments) if best_objective is not None else {},
        best_objective=best_objective,
    )


def run_experiment(experiment: dict[str, Any], launcher: KubernetesLauncher, *, timeout_s: float) -> TuningResult:
    """Create or reattach to ``experiment`` and wait until Katib finishes it; a failed experiment is
    returned with ``succeeded=False`` (the caller's policy decides), a timeout or cancellation raises."""
    spec = TuningSpec.from_katib(experiment["spec"])
    name, namespace = experiment["metadata"]["name"], experiment["metadata"]["namespace"]
    try:
        launcher.run(experiment, timeout_s=timeout_s, stream_logs=False)
    except JobFailed as failure:
        if failure.reason == "Deleted":
            raise
        launcher.echo(f"experiment {namespace}/{name} failed: {failure.reason}: {failure.message}")
    finished = launcher.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", name)
    trials = launcher.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "trials", label_selector=f"{EXPERIMENT_LABEL}={name}"
    ).get("items") or []
    return experiment_result(spec, finished, trials)
