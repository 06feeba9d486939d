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
- Spark Operator v1beta2 ``SparkApplication``: no conditions; a state machine in
  ``status.applicationState.state`` (kubeflow/spark-operator ``api/v1beta2/sparkapplication_types.go``,
  ApplicationStateType). Only ``COMPLETED`` and ``FAILED`` are final (``pkg/util/sparkapplication.go``
  IsTerminated): ``SUBMISSION_FAILED``, ``FAILING`` and ``SUCCEEDING`` move on to ``FAILED``,
  ``PENDING_RERUN`` or ``COMPLETED`` as the restart policy says
  (``internal/controller/sparkapplication/controller.go``, reconcileFailedSubmission/Failing/Succeeding
  SparkApplication), and ``errorMessage`` says why (the spark-submit error, "driver container failed with
  ExitCode: N, Reason: R" or "driver pod not found": controller.go submitSparkApplication and
  updateDriverState). The driver pod is ``status.driverInfo.podName``, ``<name>-driver`` unless the spec
  names another (``pkg/util/sparkapplication.go`` GetDriverPodName); spark-submit labels it
  ``spark-role=driver`` and the operator ``sparkoperator.k8s.io/app-name=<name>``
  (``internal/controller/sparkapplication/submission.go`` driverConfOption); its container is
  ``spark-kubernetes-driver`` (``pkg/common/spark.go`` SparkDriverContainerName).
- KServe v1beta1 ``InferenceService``: condition ``Ready``; a model that failed to load shows in
  ``status.modelStatus``. Predictor pods carry ``serving.kserve.io/inferenceservice`` and
  ``component=predictor``. ``status.observedGeneration`` is not the InferenceService's: KServe copies it
  from the Knative Service or the Deployment (kserve ``pkg/apis/serving/v1beta1/inference_service_status.go``,
  PropagateStatus and PropagateRawStatus), so an update counts as rolled out only by its own evidence
  (:class:`RevisionRollout`, :class:`DeploymentRollout`), per the ``serving.kserve.io/deploymentMode``
  annotation (``Serverless``/``Knative`` by default, ``RawDeployment``/``Standard``):

  - Knative: PropagateStatus copies the Knative Service's ``latestCreatedRevisionName``,
    ``latestReadyRevisionName`` and ``traffic`` into ``status.components.predictor``. Knative makes a
    revision per change of the predictor's template (anything but ``canaryTrafficPercent``, which only
    splits traffic: kserve ``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``).
    Rolled out: a new revision when the template changed, created = ready, and the latest revision has
    the traffic asked (``canaryTrafficPercent``, else 100).
  - Standard: the predictor is the Deployment ``<name>-predictor`` (kserve ``pkg/constants/constants.go``
    PredictorServiceName; ``reconcilers/raw/raw_kube_reconciler.go``) updated in place; PropagateRawStatus
    keeps ``Ready`` True from the old ReplicaSet while it rolls. Rolled out: the Deployment changed
    (generation) when the spec did, and finished as ``kubectl rollout status`` judges (observed
    generation, updated = desired = available replicas; kubernetes ``pkg/kubectl/.../rollout_status.go``).
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


Resource = dict[str, Any]


def _dig(resource: Resource | None, *path: str) -> Any:
    node: Any = resource or {}
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


@dataclass(frozen=True)
class RevisionRollout:
    """Knative mode: ``status.components.<component>`` names the revisions and traffic of a component;
    ``spec.<component>.<traffic_field>`` asks a share of the traffic for its latest revision (absent: 100)."""

    component: str
    traffic_field: str

    def _template(self, resource: Resource) -> Resource:
        spec = dict(resource.get("spec") or {})
        spec[self.component] = {
            key: value for key, value in (spec.get(self.component) or {}).items() if key != self.traffic_field
        }
        return spec

    def updated(
        self, before: Resource | None, after: Resource, dependent: Resource | None = None,
        dependent_before: Resource | None = None,
    ) -> bool:
        """Whether the status of ``after`` (updated from ``before``; None if just created) is about the
        update: a new revision exists if the template changed."""
        if before is None or self._template(before) == self._template(after):
            return True
        created = _dig(after, "status", "components", self.component, "latestCreatedRevision")
        return bool(created) and created != _dig(before, "status", "components", self.component, "latestCreatedRevision")

    def pending(
        self, before: Resource | None, after: Resource, dependent: Resource | None = None,
        dependent_before: Resource | None = None,
    ) -> str | None:
        """What the rollout of ``after`` still waits for, or None when it is rolled out."""
        component = _dig(after, "status", "components", self.component) or {}
        created, ready = component.get("latestCreatedRevision"), component.get("latestReadyRevision")
        if not created:
            return "a first revision"
        if not self.updated(before, after):
            return f"a new revision (latest is still {created})"
        if created != ready:
            return f"revision {created} to be ready (latest ready: {ready or 'none'})"
        asked = _dig(after, "spec", self.component, self.traffic_field)
        asked = 100 if asked is None else asked
        routed = sum(
            entry.get("percent") or 0
            for entry in component.get("traffic") or []
            if entry.get("revisionName") == ready and entry.get("latestRevision")
        )
        if routed != asked:
            return f"{asked}% of the traffic on revision {ready} (now {routed}%)"
        return None


@dataclass(frozen=True)
class DeploymentRollout:
    """Standard mode: the component runs as the Deployment ``name_format`` (``{name}`` is the resource's)."""

    name_format: str

    def updated(
        self, before: Resource | None, after: Resource, dependent: Resource | None = None,
        dependent_before: Resource | None = None,
    ) -> bool:
        """Whether the Deployment (``dependent``; ``dependent_before`` before the update) took the update:
        its generation moved if the spec changed."""
        if before is None or before.get("spec") == after.get("spec"):
            return True
        generation = _dig(dependent, "metadata", "generation") or 0
        return generation > (_dig(dependent_before, "metadata", "generation") or 0)

    def pending(
        self, before: Resource | None, after: Resource, dependent: Resource | None = None,
        dependent_before: Resource | None = None,
    ) -> str | None:
        """What the rollout still waits for, or None when the Deployment has rolled out."""
        if dependent is None:
            return "its Deployment"
        if not self.updated(before, after, dependent, dependent_before):
            return "its Deployment to be updated"
        generation = _dig(dependent, "metadata", "generation") or 0
        status = dependent.get("status") or {}
        desired = _dig(dependent, "spec", "replicas")
        desired = 1 if desired is None else desired
        if (status.get("observedGeneration") or 0) < generation:
            return "the Deployment's controller to see the update"
        updated = status.get("updatedReplicas") or 0
        if updated < desired or (status.get("replicas") or 0) > updated:
            return f"{updated} of {desired} pods updated, {status.get('replicas') or 0} running"
        if (status.get("availableReplicas") or 0) < updated:
            return f"{status.get('availableReplicas') or 0} of {updated} updated pods available"
        return None


Rollout = RevisionRollout | DeploymentRollout


@dataclass(frozen=True)
class CompletionRule:
    """How to wait on one kind of custom resource.

    ``done`` are condition types that end the wait successfully when True, ``failed`` those that end it
    with a failure. ``log_pods`` are label selectors (``{name}`` is the resource name) tried in order to
    find the pod whose log to stream. ``status_failure`` reads failures that are not a condition;
    ``state_outcome`` reads the final state of a kind whose status is a state machine, not conditions.
    ``rollouts`` (long-lived resources updated in place) say, per value of the ``mode_annotation``
    (absent: ``default_mode``), when an update is rolled out.
    """

    api_version: str
    kind: str
    plural: str
    done: tuple[str, ...]
    failed: tuple[str, ...] = ()
    log_pods: tuple[str, ...] = ()
    log_container: str | None = None
    status_failure: Callable[[Status], Outcome | None] | None = None
    state_outcome: Callable[[Status], Outcome | None] | None = None
    rollouts: tuple[tuple[str, Rollout], ...] = ()
    mode_annotation: str = ""
    default_mode: str = ""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def rollout(self, resource: dict[str, Any]) -> Rollout | None:
        """How an update of ``resource`` shows it is rolled out (None: its conditions say it)."""
        if not self.rollouts:
            return None
        mode = ((resource.get("metadata") or {}).get("annotations") or {}).get(self.mode_annotation)
        modes = dict(self.rollouts)
        return modes.get(mode or self.default_mode)

    def outcome(self, resource: dict[str, Any]) -> Outcome | None:
        """The final state of ``resource``, or None while it is still in progress."""
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
        if self.state_outcome is not None:
            return self.state_outcome(status)
        for condition_type in self.done:
            if condition_type in conditions:
                found = conditions[condition_type]
                return Outcome(True, condition_type, found.get("reason", ""), found.get("message", ""))
        return None


def true_conditions(resource: dict[str, Any]) -> list[str]:
    """The condition types that are True, in status order, or the application state of a kind that has
    one instead (for progress messages)."""
    status = resource.get("status") or {}
    state = _dig(status, "applicationState", "state")
    if state:
        return [state]
    return [c.get("type", "") for c in status.get("conditions") or [] if c.get("status") == "True"]


def inference_service_failure(status: Status) -> Outcome | None:
    """KServe reports a model that cannot load in ``modelStatus``, not in a condition."""
    model_status = status.get("modelStatus") or {}
    transition = model_status.get("transitionStatus")
    if transition not in ("BlockedByFailedLoad", "InvalidSpec"):
        return None
    info = model_status.get("lastFailureInfo") or {}
    return Outcome(False, transition, info.get("reason", transition), info.get("message", ""))


SPARK_COMPLETED, SPARK_FAILED = "COMPLETED", "FAILED"


def spark_application_state(status: Status) -> Outcome | None:
    """A SparkApplication's final state (``COMPLETED`` or ``FAILED``) with the operator's ``errorMessage``;
    None in every other state (``FAILING`` and ``SUBMISSION_FAILED`` are final only under some restart
    policies, and the operator then moves them on to ``FAILED``)."""
    application = status.get("applicationState") or {}
    state = application.get("state")
    if state not in (SPARK_COMPLETED, SPARK_FAILED):
        return None
    return Outcome(state == SPARK_COMPLETED, state, state, application.get("errorMessage", ""))


_KNATIVE_PREDICTOR = RevisionRollout("predictor", "canaryTrafficPercent")
_STANDARD_PREDICTOR = DeploymentRollout("{name}-predictor")
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
            "sparkoperator.k8s.io/v1beta2",
            "SparkApplication",
            "sparkapplications",
            done=(),
            log_pods=("spark-role=driver,sparkoperator.k8s.io/app-name={name}",),
            log_container="spark-kubernetes-driver",
            state_outcome=spark_application_state,
        ),
        CompletionRule(
            "serving.kserve.io/v1beta1",
            "InferenceService",
            "inferenceservices",
            done=("Ready",),
            log_pods=("serving.kserve.io/inferenceservice={name},component=predictor",),
            log_container="kserve-container",
            status_failure=inference_service_failure,
            rollouts=(
                ("Serverless", _KNATIVE_PREDICTOR),
                ("Knative", _KNATIVE_PREDICTOR),
                ("RawDeployment", _STANDARD_PREDICTOR),
                ("Standard", _STANDARD_PREDICTOR),
            ),
            mode_annotation="serving.kserve.io/deploymentMode",
            default_mode="Serverless",
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
