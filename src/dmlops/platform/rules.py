"""Completion rules: per custom-resource kind, which status means done, failed or ready, and which pod
speaks for the job (whose log the launcher streams).

Condition types and pod labels are those the upstream controllers set:

- Trainer v2 ``TrainJob``: conditions ``Complete`` / ``Failed``; pods belong to the JobSet of the same
  name (``jobset.sigs.k8s.io/jobset-name``), rank 0 is completion index 0 of replicated job ``node``
  (or the ``launcher`` job of MPI runtimes).
- Training Operator v1 ``PyTorchJob`` / ``TFJob`` / ``MPIJob``: conditions ``Succeeded`` / ``Failed``; pods
  carry ``training.kubeflow.org/job-name``, ``replica-type`` (lower case) and ``replica-index``; the log
  is that of master 0 (PyTorchJob), chief or master 0 (TFJob) or the launcher (MPIJob).
- mpi-operator v2beta1 ``MPIJob``: the same conditions; the launcher pod carries
  ``training.kubeflow.org/job-role=launcher``.
- Katib v1beta1 ``Experiment``: conditions ``Succeeded`` / ``Failed``; its trials have their own pods.
- KServe v1beta1 ``InferenceService``: condition ``Ready`` once ``status.observedGeneration`` caught up;
  a model that failed to load shows in ``status.modelStatus``. Predictor pods carry
  ``serving.kserve.io/inferenceservice`` and ``component=predictor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmlops.platform.errors import InvalidResource

Status = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """A final state read from a resource's status."""

    succeeded: bool
    condition: str
    reason: str
    message: str


@dataclass(frozen=True)
class CompletionRule:
    """How to wait on one kind of custom resource.

    ``done`` are condition types that end the wait successfully when True, ``failed`` those that end it
    with a failure. ``log_pods`` are label selectors (``{name}`` is the resource name) tried in order to
    find the pod whose log to stream. With ``follow_generation`` the status counts only once
    ``status.observedGeneration`` has reached ``metadata.generation`` (resources that are updated in place).
    ``status_failure`` reads failures that are not a condition.
    """

    api_version: str
    kind: str
    plural: str
    done: tuple[str, ...]
    failed: tuple[str, ...] = ()
    log_pods: tuple[str, ...] = ()
    log_container: str | None = None
    follow_generation: bool = False
    status_failure: Callable[[Status], Outcome | None] | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def observed(self, resource: dict[str, Any]) -> bool:
        """Whether the status describes the current spec (always, unless ``follow_generation``)."""
        if not self.follow_generation:
            return True
        generation = (resource.get("metadata") or {}).get("generation")
        observed = (resource.get("status") or {}).get("observedGeneration")
        return generation is None or (observed is not None and observed >= generation)

    def outcome(self, resource: dict[str, Any]) -> Outcome | None:
        """The final state of ``resource``, or None while it is still in progress."""
        if not self.observed(resource):
            return None
        status = resource.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        for condition_type in self.failed:
            if condition_type in conditions:
                found = conditions[condition_type]
                return Outcome(False, condition_type, found.get("reason", ""), found.get("message", ""))
        if self.status_failure is not None:
            failure = self.status_failure(status)
            if failure is not None:
                return failure
        for condition_type in self.done:
            if condition_type in conditions:
                found = conditions[condition_type]
                return Outcome(True, condition_type, found.get("reason", ""), found.get("message", ""))
        return None


def true_conditions(resource: dict[str, Any]) -> list[str]:
    """The condition types that are True, in status order (for progress messages)."""
    status = resource.get("status") or {}
    return [c.get("type", "") for c in status.get("conditions") or [] if c.get("status") == "True"]


def inference_service_failure(status: Status) -> Outcome | None:
    """KServe reports a model that cannot load in ``modelStatus``, not in a condition."""
    model_status = status.get("modelStatus") or {}
    transition = model_status.get("transitionStatus")
    if transition not in ("BlockedByFailedLoad", "InvalidSpec"):
        return None
    info = model_status.get("lastFailureInfo") or {}
    return Outcome(False, transition, info.get("reason", transition), info.get("message", ""))


_JOB_NAME = "training.kubeflow.org/job-name={name}"
_TRAINING_OPERATOR_CONDITIONS = {"done": ("Succeeded",), "failed": ("Failed",)}

RULES: dict[tuple[str, str], CompletionRule] = {
    (rule.api_version, rule.kind): rule
    for rule in (
        CompletionRule(
            "trainer.kubeflow.org/v1alpha1",
            "TrainJob",
            "trainjobs",
            done=("Complete",),
            failed=("Failed",),
            log_pods=(
                "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=launcher",
                "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
                "batch.kubernetes.io/job-completion-index=0",
            ),
            log_container="node",
        ),
        CompletionRule(
            "kubeflow.org/v1",
            "PyTorchJob",
            "pytorchjobs",
            **_TRAINING_OPERATOR_CONDITIONS,
            log_pods=(_JOB_NAME + ",training.kubeflow.org/replica-type=master,training.kubeflow.org/replica-index=0",),
            log_container="pytorch",
        ),
        CompletionRule(
            "kubeflow.org/v1",
            "TFJob",
            "tfjobs",
            **_TRAINING_OPERATOR_CONDITIONS,
            log_pods=(
                _JOB_NAME + ",training.kubeflow.org/replica-type=chief,training.kubeflow.org/replica-index=0",
                _JOB_NAME + ",training.kubeflow.org/replica-type=master,training.kubeflow.org/replica-index=0",
            ),
            log_container="tensorflow",
        ),
        CompletionRule(
            "kubeflow.org/v1",
            "MPIJob",
            "mpijobs",
            **_TRAINING_OPERATOR_CONDITIONS,
            log_pods=(_JOB_NAME + ",training.kubeflow.org/replica-type=launcher",),
        ),
        CompletionRule(
            "kubeflow.org/v2beta1",
            "MPIJob",
            "mpijobs",
            **_TRAINING_OPERATOR_CONDITIONS,
            log_pods=(_JOB_NAME + ",training.kubeflow.org/job-role=launcher",),
        ),
        CompletionRule("kubeflow.org/v1beta1", "Experiment", "experiments", **_TRAINING_OPERATOR_CONDITIONS),
        CompletionRule(
            "serving.kserve.io/v1beta1",
            "InferenceService",
            "inferenceservices",
            done=("Ready",),
            log_pods=("serving.kserve.io/inferenceservice={name},component=predictor",),
            log_container="kserve-container",
            follow_generation=True,
            status_failure=inference_service_failure,
        ),
    )
}


def rule_for(resource: dict[str, Any]) -> CompletionRule:
    """The completion rule for a resource dict's apiVersion and kind."""
    key = (resource.get("apiVersion", ""), resource.get("kind", ""))
    if key not in RULES:
        known = ", ".join(f"{kind} ({api_version})" for api_version, kind in RULES)
        raise InvalidResource(f"no completion rule for kind {key[1]!r} of apiVersion {key[0]!r}; known: {known}")
    return RULES[key]
