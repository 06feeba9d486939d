"""Katib v1beta1 (kubeflow/katib): Experiment -> Suggestion -> Trials, and metrics collection.

Behaviours, each from the upstream file named (paths under ``pkg/``):

| behaviour | upstream |
|---|---|
| defaults: parallelTrialCount 3, StdOut collector, success/failure conditions per trial kind, primaryPodLabels job-role=master for Kubeflow jobs (TrainJob: node, completion index 0) | apis/controller/experiments/v1beta1/experiment_defaults.go, constants.go |
| one Suggestion named after the Experiment, ``spec.requests`` = trials wanted; trials added while active < parallelTrialCount and total < maxTrialCount | controller.v1beta1/experiment/experiment_controller.go (ReconcileTrials) |
| random search: each parameter drawn uniformly from its feasibleSpace (double, int, discrete, categorical); with ``step``, hyperopt's ``quniform`` (the draw rounded to a multiple of step); trial names ``<experiment>-<8 random>`` | suggestion/v1beta1/hyperopt/base_service.py (random), controller.v1beta1/suggestion |
| Trial: labels katib.kubeflow.org/experiment, owner the Experiment; runSpec = trialSpec with ``${trialParameters.X}`` replaced and metadata name/namespace = the trial's | controller.v1beta1/experiment/manifest/generator.go |
| the Trial creates its runSpec (batch Job, PyTorchJob, TFJob, MPIJob, TrainJob) owned by the Trial; gjson success/failure conditions ``status.conditions.#(type=="X")#|#(status=="True")#`` decide; once the trial completed, the run is deleted (foreground) unless ``retainRun`` | controller.v1beta1/trial/trial_controller.go, trial/util/job_util.go |
| metrics: StdOut/File TEXT lines matched with the filters (default ``([\\w|-]+)\\s*=\\s*([+-]?\\d*(\\.\\d+)?([Ee][+-]?\\d+)?)``) on lines naming a metric; JSON lines need string values | metricscollector/v1beta1/file-metricscollector/file-metricscollector.go, common/const.go |
| observation per metric: min, max, latest; missing ones "unavailable" | controller.v1beta1/trial/trial_controller_util.go (getMetrics) |
| trial conditions Created, Running, Succeeded ("Trial has succeeded"), MetricsUnavailable ("Metrics are not available"), Failed ("Trial has failed") | controller.v1beta1/trial/trial_controller_util.go, trial_controller_status.go |
| experiment status: trial counts and lists, currentOptimalTrial, Succeeded when completed >= maxTrialCount, Failed when failed+metricsUnavailable >= maxFailedTrialCount, goal reached | controller.v1beta1/experiment/util/status_util.go |

The metrics reach the controller as Katib's sidecar would report them: the pod webhook
(``kubeharness.webhooks``) adds a ``metrics-logger-and-collector`` container that prints the metrics file
once the primary process ends; this controller parses that container's log (``read_log``).
"""

from __future__ import annotations

import copy
import json
import random
import re
import secrets
import string
from collections.abc import Callable

from kubeharness.controllers.base import Controller, Kube, Obj, condition_true, now, owner_reference, set_condition

GROUP, VERSION = "kubeflow.org", "v1beta1"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
TRIAL_LABEL = "katib.kubeflow.org/trial"
SIDECAR = "metrics-logger-and-collector"
DEFAULT_METRICS_FILE = "/var/log/katib/metrics.log"
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
UNAVAILABLE = "unavailable"
_CONDITION = re.compile(r'^status\.conditions\.#\(type=="([^"]+)"\)#\|#\(status=="([^"]+)"\)#$')
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")
_JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
_KUBEFLOW_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
KUBEFLOW_JOB_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob", "PaddleJob", "JAXJob", "TrainJob")
KUBEFLOW_PRIMARY = {"training.kubeflow.org/job-role": "master"}
TRAINJOB_PRIMARY = {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"}
# plural of each kind a trial may run, by apiVersion and kind
RUN_KINDS = {("batch/v1", "Job"): "jobs", ("kubeflow.org/v1", "PyTorchJob"): "pytorchjobs",
             ("kubeflow.org/v1", "TFJob"): "tfjobs", ("kubeflow.org/v1", "MPIJob"): "mpijobs",
             ("kubeflow.org/v2beta1", "MPIJob"): "mpijobs", ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainjobs"}


def defaulted(experiment: Obj) -> Obj:
    """The Experiment as Katib's defaulting webhook stores it (experiment_defaults.go)."""
    spec = copy.deepcopy(experiment["spec"])
    spec.setdefault("parallelTrialCount", 3)
    spec.setdefault("resumePolicy", "Never")
    spec.setdefault("metricsCollectorSpec", {"collector": {"kind": "StdOut"}})
    collector = spec["metricsCollectorSpec"]
    if collector["collector"]["kind"] == "StdOut":
        collector.setdefault("source", {}).setdefault("fileSystemPath", {"path": DEFAULT_METRICS_FILE, "kind": "File"})
    template = spec["trialTemplate"]
    kind = template.get("trialSpec", {}).get("kind", "")
    if kind == "Job":
        template.setdefault("successCondition", _JOB_SUCCESS)
        template.setdefault("failureCondition", _FAILED)
    elif kind in KUBEFLOW_JOB_KINDS:
        template.setdefault("successCondition", _JOB_SUCCESS if kind == "TrainJob" else _KUBEFLOW_SUCCESS)
        template.setdefault("failureCondition", _FAILED)
        if not template.get("primaryPodLabels"):
            template["primaryPodLabels"] = dict(TRAINJOB_PRIMARY if kind == "TrainJob" else KUBEFLOW_PRIMARY)
    return {**experiment, "spec": spec}


def evaluate(condition: str, obj: Obj) -> bool:
    """A gjson trial condition of the form Katib's defaults use, evaluated on ``obj``."""
    match = _CONDITION.match(condition)
    if match is None:
        raise ValueError(f"trial condition {condition!r}: only status.conditions.#(type==..)#|#(status==..)# is simulated")
    kind, status = match.groups()
    return any(c.get("type") == kind and c.get("status") == status for c in (obj.get("status") or {}).get("conditions") or [])


def sample(parameter: Obj, rng: random.Random) -> str:
    """One random value of a Katib parameter, as a string (as the suggestion service returns it)."""
    space = parameter.get("feasibleSpace") or {}
    kind = parameter["parameterType"]
    if kind in ("double", "int") and space.get("step"):
        # hyperopt.hp.quniform(min, max, step): round(uniform(min, max) / step) * step; an int is truncated
        value = round(rng.uniform(float(space["min"]), float(space["max"])) / float(space["step"])) * float(space["step"])
        return str(int(value) if kind == "int" else value)
    if kind == "double":
        return str(rng.uniform(float(space["min"]), float(space["max"])))
    if kind == "int":
        return str(rng.randint(int(space["min"]), int(space["max"])))
    return str(rng.choice(space["list"]))


def parse_metrics(text: str, names: list[str], collector: Obj) -> list[tuple[str, str]]:
    """The (name, value) metric logs Katib's file metrics collector finds in ``text``, in order."""
    source = collector.get("source") or {}
    file_format = (source.get("fileSystemPath") or {}).get("format") or "TEXT"
    found = []
    if file_format == "JSON":
        for line in text.splitlines():
            if line:
                record = json.loads(line)
                found += [(name, record[name]) for name in names if isinstance(record.get(name), str)]
        return found
    filters = [re.compile(f) for f in ((source.get("filter") or {}).get("metricsFormat") or [DEFAULT_FILTER])]
    for line in text.splitlines():
        if not any(name in line for name in names):
            continue
        for metric_filter in filters:
            for match in metric_filter.finditer(line):
                if match.lastindex and match.lastindex >= 2 and match.group(1).strip() in names:
                    found.append((match.group(1).strip(), match.group(2).strip()))
    return found


def observation(logs: list[tuple[str, str]], names: list[str]) -> Obj:
    """min/max/latest per metric, "unavailable" where a metric never appeared (getMetrics)."""
    metrics = {name: {"name": name, "min": UNAVAILABLE, "max": UNAVAILABLE, "latest": UNAVAILABLE} for name in names}
    for name, value in logs:
        metric = metrics[name]
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            if metric["min"] == UNAVAILABLE:
                metric["min"] = metric["max"] = value
            elif number < float(metric["min"]):
                metric["min"] = value
            elif number > float(metric["max"]):
                metric["max"] = value
        metric["latest"] = value
    return {"metrics": list(metrics.values())}


class Katib(Controller):
    """Experiment, Suggestion (random search) and Trial controllers."""

    watches = ((GROUP, VERSION, "experiments"), (GROUP, VERSION, "suggestions"), (GROUP, VERSION, "trials"),
               ("kubeflow.org", "v1", "pytorchjobs"), ("kubeflow.org", "v1", "tfjobs"),
               ("kubeflow.org", "v2beta1", "mpijobs"), ("trainer.kubeflow.org", "v1alpha1", "trainjobs"))
    owns = ("pods", "jobs")

    def __init__(self, kube: Kube, read_log: Callable[[str, str, str], str] | None = None, seed: int | None = None):
        super().__init__(kube)
        self.read_log = read_log or kube.pod_log
        self.rng = random.Random(seed)

    def reconcile_all(self) -> None:
        self.each(GROUP, VERSION, "experiments", self.reconcile_experiment)
        self.each(GROUP, VERSION, "suggestions", self.reconcile_suggestion)
        self.each(GROUP, VERSION, "trials", self.reconcile_trial)

    # --- Experiment -------------------------------------------------------------------------------------

    def reconcile_experiment(self, experiment: Obj) -> None:
        experiment = defaulted(experiment)
        meta, spec = experiment["metadata"], experiment["spec"]
        if condition_true(experiment, "Succeeded") or condition_true(experiment, "Failed"):
            return
        status = copy.deepcopy(experiment.get("status") or {})
        conditions = status.setdefault("conditions", [])
        status.setdefault("startTime", meta.get("creationTimestamp"))
        set_condition(conditions, "Created", "True", "ExperimentCreated", "Experiment is created")
        trials = [t for t in self.kube.list_custom(GROUP, VERSION, "trials")
                  if t["metadata"]["namespace"] == meta["namespace"]
                  and (t["metadata"].get("labels") or {}).get(EXPERIMENT_LABEL) == meta["name"]]
        self._summarize(experiment, trials, status)
        active = status["trialsRunning"] + status["trialsPending"]
        completed = status["trialsSucceeded"] + status["trialsFailed"] + status["trialMetricsUnavailable"]
        if not condition_true({"status": status}, "Succeeded") and not condition_true({"status": status}, "Failed"):
            wanted = min(spec["parallelTrialCount"] - active, spec.get("maxTrialCount", 1 << 30) - completed - active)
            if wanted > 0:
                self._request_trials(experiment, trials, len(trials) + wanted)
        if status != (experiment.get("status") or {}):
            self.kube.patch_status(experiment, "experiments", status)

    def _summarize(self, experiment: Obj, trials: list[Obj], status: Obj) -> None:
        spec = experiment["spec"]
        lists = {"succeededTrialList": [], "failedTrialList": [], "metricsUnavailableTrialList": [],
                 "runningTrialList": [], "pendingTrialList": []}
        objective = spec["objective"]
        best_name, best_value = None, None
        for trial in sorted(trials, key=lambda t: t["metadata"]["name"]):
            name = trial["metadata"]["name"]
            if condition_true(trial, "Failed"):
                lists["failedTrialList"].append(name)
            elif condition_true(trial, "Succeeded"):
                lists["succeededTrialList"].append(name)
            elif condition_true(trial, "MetricsUnavailable"):
                lists["metricsUnavailableTrialList"].append(name)
            elif condition_true(trial, "Running"):
                lists["runningTrialList"].append(name)
            else:
                lists["pendingTrialList"].append(name)
            value = self._objective_value(trial, objective)
            if value is not None and (best_value is None or (
                    value < best_value if objective["type"] == "minimize" else value > best_value)):
                best_name, best_value = trial, value
        for key, value in lists.items():
            if value:
                status[key] = value
            else:
                status.pop(key, None)
        status.update(trials=len(trials), trialsSucceeded=len(lists["succeededTrialList"]),
                      trialsFailed=len(lists["failedTrialList"]), trialsRunning=len(lists["runningTrialList"]),
                      trialsPending=len(lists["pendingTrialList"]),
                      trialMetricsUnavailable=len(lists["metricsUnavailableTrialList"]))
        if best_name is not None:
            status["currentOptimalTrial"] = {"bestTrialName": best_name["metadata"]["name"],
                                             "parameterAssignments": best_name["spec"]["parameterAssignments"],
                                             "observation": best_name["status"]["observation"]}
        self._experiment_conditions(experiment, status, best_value)

    def _objective_value(self, trial: Obj, objective: Obj) -> float | None:
        """The trial's objective by the metric strategy (default min for minimize, max for maximize)."""
        name = objective["objectiveMetricName"]
        strategy = next((s.get("value") for s in objective.get("metricStrategies") or [] if s.get("name") == name),
                        None) or {"minimize": "min", "maximize": "max"}[objective["type"]]
        for metric in ((trial.get("status") or {}).get("observation") or {}).get("metrics") or []:
            if metric["name"] == name:
                value = metric.get(strategy, UNAVAILABLE)
                return None if value == UNAVAILABLE else float(value)
        return None

    def _experiment_conditions(self, experiment: Obj, status: Obj, best: float | None) -> None:
        spec, conditions = experiment["spec"], status["conditions"]
        goal = spec["objective"].get("goal")
        completed = status["trialsSucceeded"] + status["trialsFailed"] + status["trialMetricsUnavailable"]
        failed = status["trialsFailed"] + status["trialMetricsUnavailable"]
        reached = goal is not None and best is not None and (
            best <= goal if spec["objective"]["type"] == "minimize" else best >= goal)
        if reached:
            outcome = ("Succeeded", "ExperimentGoalReached", "Experiment has succeeded because Objective goal has reached")
        elif spec.get("maxFailedTrialCount") is not None and failed and failed >= spec["maxFailedTrialCount"]:
            outcome = ("Failed", "ExperimentFailed", "Experiment has failed because max failed count has reached")
        elif spec.get("maxTrialCount") is not None and completed >= spec["maxTrialCount"]:
            outcome = ("Succeeded", "ExperimentMaxTrialsReached",
                       "Experiment has succeeded because max trial count has reached")
        else:
            set_condition(conditions, "Running", "True", "ExperimentRunning", "Experiment is running")
            return
        running = next((c for c in conditions if c["type"] == "Running"), None)
        if running is not None:
            set_condition(conditions, "Running", "False", running["reason"], running["message"])
        set_condition(conditions, outcome[0], "True", outcome[1], outcome[2])
        status["completionTime"] = status.get("completionTime") or now()

    def _request_trials(self, experiment: Obj, trials: list[Obj], requests: int) -> None:
        meta = experiment["metadata"]
        suggestion = self.kube.get_custom(GROUP, VERSION, "suggestions", meta["namespace"], meta["name"])
        if suggestion is None:
            self.kube.create_custom(GROUP, VERSION, "suggestions", meta["namespace"], {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Suggestion",
                "metadata": {"name": meta["name"], "labels": {EXPERIMENT_LABEL: meta["name"]},
                             "ownerReferences": [owner_reference(experiment)]},
                "spec": {"algorithm": experiment["spec"]["algorithm"], "requests": requests,
                         "resumePolicy": experiment["spec"]["resumePolicy"]}})
            return
        if suggestion["spec"].get("requests", 0) < requests:
            self.kube.custom.patch_namespaced_custom_object(GROUP, VERSION, meta["namespace"], "suggestions",
                                                            meta["name"], {"spec": {"requests": requests}})
        existing = {t["metadata"]["name"] for t in trials}
        for assignment in (suggestion.get("status") or {}).get("suggestions") or []:
            if assignment["name"] not in existing and len(existing) < requests:
                self._create_trial(experiment, assignment)
                existing.add(assignment["name"])

    def _create_trial(self, experiment: Obj, assignment: Obj) -> None:
        meta, spec = experiment["metadata"], experiment["spec"]
        template = spec["trialTemplate"]
        name, namespace = assignment["name"], meta["namespace"]
        assigned = {p["name"]: p["value"] for p in assignment["parameterAssignments"]}
        assigned.update({"${trialSpec.Name}": name, "${trialSpec.Namespace}": namespace,
                         "${trialSpec.Kind}": template["trialSpec"].get("kind", ""),
                         "${trialSpec.APIVersion}": template["trialSpec"].get("apiVersion", "")})
        values = {}
        for parameter in template.get("trialParameters") or []:
            if parameter["reference"] not in assigned:  # manifest/generator.go refuses to build the trial
                raise ValueError(f"Unable to find parameter {parameter['reference']} in parameter assignment")
            values[parameter["name"]] = assigned[parameter["reference"]]

        def substitute(value: object) -> object:
            if isinstance(value, str):
                return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
            if isinstance(value, dict):
                return {k: substitute(v) for k, v in value.items()}
            if isinstance(value, list):
                return [substitute(v) for v in value]
            return value

        run_spec = substitute(copy.deepcopy(template["trialSpec"]))
        run_spec.setdefault("metadata", {}).update(name=name, namespace=namespace)
        trial_spec = {"objective": spec["objective"], "parameterAssignments": assignment["parameterAssignments"],
                      "runSpec": run_spec, "metricsCollector": spec["metricsCollectorSpec"],
                      "primaryContainerName": template["primaryContainerName"],
                      "successCondition": template["successCondition"], "failureCondition": template["failureCondition"],
                      "retainRun": template.get("retain", False)}
        if template.get("primaryPodLabels"):
            trial_spec["primaryPodLabels"] = template["primaryPodLabels"]
        self.kube.create_custom(GROUP, VERSION, "trials", namespace, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Trial",
            "metadata": {"name": name, "labels": {EXPERIMENT_LABEL: meta["name"]},
                         "ownerReferences": [owner_reference(experiment)]},
            "spec": trial_spec})

    # --- Suggestion (random search) ---------------------------------------------------------------------

    def reconcile_suggestion(self, suggestion: Obj) -> None:
        meta = suggestion["metadata"]
        experiment = self.kube.get_custom(GROUP, VERSION, "experiments", meta["namespace"], meta["name"])
        if experiment is None:
            return
        status = copy.deepcopy(suggestion.get("status") or {})
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "Created", "True", "SuggestionCreated", "Suggestion is created")
        set_condition(conditions, "DeploymentReady", "True", "DeploymentReady", "Deployment is ready")
        set_condition(conditions, "Running", "True", "SuggestionRunning", "Suggestion is running")
        suggestions = status.setdefault("suggestions", [])
        alphabet = string.ascii_lowercase + string.digits
        while len(suggestions) < suggestion["spec"].get("requests", 0):
            name = f"{meta['name']}-{''.join(secrets.choice(alphabet) for _ in range(8))}"
            suggestions.append({"name": name, "parameterAssignments": [
                {"name": p["name"], "value": sample(p, self.rng)} for p in experiment["spec"]["parameters"]]})
        status["suggestionCount"] = len(suggestions)
        if status != (suggestion.get("status") or {}):
            self.kube.patch_status(suggestion, "suggestions", status)

    # --- Trial -----------------------------------------------------------------------------------------

    def reconcile_trial(self, trial: Obj) -> None:
        meta, spec = trial["metadata"], trial["spec"]
        if any(condition_true(trial, kind) for kind in ("Succeeded", "Failed", "MetricsUnavailable")):
            if not spec.get("retainRun"):
                self._delete_run(trial)
            return
        status = copy.deepcopy(trial.get("status") or {})
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "Created", "True", "TrialCreated", "Trial is created")
        status.setdefault("startTime", meta.get("creationTimestamp"))
        run = self._run(trial)
        if run is None:
            self.kube.patch_status(trial, "trials", status)
            return
        if evaluate(spec["failureCondition"], run) or evaluate(spec["successCondition"], run):
            status["completionTime"] = status.get("completionTime") or now()
        if evaluate(spec["failureCondition"], run):
            self._finish(conditions, "Failed", "TrialFailed", "Trial has failed")
        elif evaluate(spec["successCondition"], run):
            names = [spec["objective"]["objectiveMetricName"], *(spec["objective"].get("additionalMetricNames") or [])]
            status["observation"] = observation(self._metric_logs(trial, names), names)
            objective = status["observation"]["metrics"][0]
            if objective["latest"] == UNAVAILABLE:
                self._finish(conditions, "MetricsUnavailable", "MetricsUnavailable", "Metrics are not available")
            else:
                self._finish(conditions, "Succeeded", "TrialSucceeded", "Trial has succeeded")
        else:
            set_condition(conditions, "Running", "True", "TrialRunning", "Trial is running")
        if status != (trial.get("status") or {}):
            self.kube.patch_status(trial, "trials", status)

    def _finish(self, conditions: list[Obj], kind: str, reason: str, message: str) -> None:
        running = next((c for c in conditions if c["type"] == "Running"), None)
        if running is not None:
            set_condition(conditions, "Running", "False", running["reason"], running["message"])
        set_condition(conditions, kind, "True", reason, message)

    def _run(self, trial: Obj) -> Obj | None:
        """The trial's run object, created (owned by the Trial) when missing; None until it exists."""
        run_spec = copy.deepcopy(trial["spec"]["runSpec"])
        namespace, name = trial["metadata"]["namespace"], trial["metadata"]["name"]
        plural = RUN_KINDS[(run_spec["apiVersion"], run_spec["kind"])]
        if run_spec["kind"] == "Job":
            existing = self.kube.read("Job", namespace, name)
        else:
            group, _, version = run_spec["apiVersion"].rpartition("/")
            existing = self.kube.get_custom(group, version, plural, namespace, name)
        if existing is not None:
            return existing
        run_spec["metadata"]["ownerReferences"] = [owner_reference(trial)]
        if run_spec["kind"] == "Job":
            self.kube.create("Job", namespace, run_spec)
        else:
            group, _, version = run_spec["apiVersion"].rpartition("/")
            self.kube.create_custom(group, version, plural, namespace, run_spec)
        return None

    def _delete_run(self, trial: Obj) -> None:
        """A completed trial's run is deleted (foreground) unless retainRun (trial_controller.go)."""
        run_spec = trial["spec"]["runSpec"]
        namespace, name = trial["metadata"]["namespace"], trial["metadata"]["name"]
        group, _, version = run_spec["apiVersion"].rpartition("/")
        plural = RUN_KINDS[(run_spec["apiVersion"], run_spec["kind"])]
        existing = (self.kube.read("Job", namespace, name) if run_spec["kind"] == "Job"
                    else self.kube.get_custom(group, version, plural, namespace, name))
        if existing is None or existing["metadata"].get("deletionTimestamp"):
            return
        options = {"propagation_policy": "Foreground"}
        if run_spec["kind"] == "Job":
            self.kube.batch.delete_namespaced_job(name, namespace, **options)
        else:
            self.kube.custom.delete_namespaced_custom_object(group, version, namespace, plural, name, **options)

    def _metric_logs(self, trial: Obj, names: list[str]) -> list[tuple[str, str]]:
        """The metrics the collector sidecars of the trial's primary pods printed."""
        selector = ",".join([f"{TRIAL_LABEL}={trial['metadata']['name']}"] + [
            f"{k}={v}" for k, v in (trial["spec"].get("primaryPodLabels") or {}).items()])
        logs = []
        for pod in self.kube.pods(trial["metadata"]["namespace"], selector):
            text = self.read_log(pod["metadata"]["namespace"], pod["metadata"]["name"], SIDECAR)
            logs += parse_metrics(text, names, trial["spec"].get("metricsCollector") or {})
        return logs
