"""Run a Katib Experiment on this machine with Optuna: same spec, same trial command, same metrics.

Each trial substitutes its parameters into the Experiment's trial template exactly as Katib does and
runs the primary container's command as local processes through :mod:`dmlops.platform.local` (a
PyTorchJob's replicas as torch workers, a TFJob's with TF_CONFIG, an MPIJob's through horovodrun, a
batch Job as one process). Metrics are read as Katib's collectors read them: every ``name=value`` line
the primary worker prints (StdOut) or writes to the metrics file (File) is an observation; the objective
is the min/max/latest of them per the metric strategy.

Katib algorithm names map to Optuna samplers: random → RandomSampler, grid → every grid point
enqueued in order (Optuna's GridSampler stops the study itself, which only works inside optimize()), tpe →
TPESampler, multivariate-tpe → TPESampler(multivariate=True), cmaes → CmaEsSampler, bayesianoptimization
→ GPSampler (Gaussian-process Bayesian optimization, in place of Katib's scikit-optimize service).
``medianstop`` maps to MedianPruner fed by each reported objective value: pruning starts once
``min_trials_required`` trials completed, at the ``start_step``-th report. Stop rules follow Katib: the
goal reached ends the search, failed trials beyond ``maxFailedTrialCount`` fail it, ``maxTrialCount``
finished trials (succeeded, failed, early stopped) end it.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import optuna

from dmlops.platform.local import WorkerGroupFailed, run_workers
from dmlops.training.jobs import kubelet_expand
from dmlops.tuning.experiment import MetricsCollector, primary_container, shell_words, substitute_trial_parameters
from dmlops.tuning.metrics import DEFAULT_METRICS_FORMAT, ObservationLog
from dmlops.tuning.results import (
    FAILED,
    GOAL_REACHED,
    MAX_TRIALS_REACHED,
    SUGGESTION_END,
    TrialRecord,
    TuningResult,
    finish,
)
from dmlops.tuning.spec import Parameter, SpecError, TuningSpec

_SEED = "random_state"
SAMPLER_SETTINGS = {
    "random": (_SEED,),
    "grid": (_SEED,),
    "tpe": (_SEED, "n_startup_trials", "n_ei_candidates"),
    "multivariate-tpe": (_SEED, "n_startup_trials", "n_ei_candidates"),
    "cmaes": (_SEED, "sigma", "restart_strategy"),
    "bayesianoptimization": (_SEED, "n_initial_points"),
}
LOCAL_ALGORITHMS = tuple(SAMPLER_SETTINGS)
_PYTHON = ("python", "python3")
_MPI_LAUNCHERS = ("mpirun", "mpiexec", "horovodrun")


def make_sampler(spec: TuningSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for the spec's Katib algorithm name and settings."""
    name, settings = spec.algorithm.name, spec.algorithm.settings
    if name not in SAMPLER_SETTINGS:
        raise SpecError(
            f"algorithm {name!r} has no local equivalent; the local backend supports {', '.join(LOCAL_ALGORITHMS)} "
            "(run it on Katib with backend='kubernetes', or pick one of these)"
        )
    unknown = sorted(set(settings) - set(SAMPLER_SETTINGS[name]))
    if unknown:
        raise SpecError(
            f"algorithm {name}: settings {unknown} are not supported locally; use {', '.join(SAMPLER_SETTINGS[name])}"
        )

    def integer(key: str) -> int | None:
        return None if key not in settings else int(settings[key])

    seed = integer(_SEED)
    if name in ("random", "grid"):  # grid points are enqueued in order (see LocalTuner), so none is sampled
        return optuna.samplers.RandomSampler(seed=seed)
    if name in ("tpe", "multivariate-tpe"):
        options = {key: integer(key) for key in ("n_startup_trials", "n_ei_candidates") if key in settings}
        return optuna.samplers.TPESampler(seed=seed, multivariate=name == "multivariate-tpe", **options)
    if name == "cmaes":
        restart = settings.get("restart_strategy")
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            sigma0=float(settings["sigma"]) if "sigma" in settings else None,
            restart_strategy=None if restart in (None, "", "none") else restart,
        )
    options = {"n_startup_trials": integer("n_initial_points")} if "n_initial_points" in settings else {}
    return optuna.samplers.GPSampler(seed=seed, **options)


def _check_local(parameter: Parameter) -> None:
    if parameter.distribution in ("normal", "logNormal"):
        raise SpecError(
            f"parameter {parameter.name!r}: the {parameter.distribution} distribution has no local equivalent; "
            "use uniform or logUniform"
        )
    if parameter.distribution == "logUniform" and parameter.step is not None:
        raise SpecError(f"parameter {parameter.name!r}: a stepped logUniform space has no local equivalent; drop step")


def grid(spec: TuningSpec) -> dict[str, list]:
    """Every value of every parameter on Katib's grid (int/double from min to max by step)."""
    space = {}
    for parameter in spec.parameters:
        if parameter.type == "int":
            space[parameter.name] = list(range(int(parameter.min), int(parameter.max) + 1, int(parameter.step or 1)))
        elif parameter.type == "double":
            count = int(math.floor((parameter.max - parameter.min) / parameter.step + 1e-9)) + 1
            space[parameter.name] = [round(parameter.min + index * parameter.step, 12) for index in range(count)]
        else:
            space[parameter.name] = list(parameter.values)
    return space


def suggest(trial: optuna.Trial, parameter: Parameter) -> float | int | str:
    """Ask Optuna for one parameter value within its Katib feasible space."""
    log = parameter.distribution == "logUniform"
    if parameter.type == "double":
        return trial.suggest_float(parameter.name, parameter.min, parameter.max, step=parameter.step, log=log)
    if parameter.type == "int":
        return trial.suggest_int(parameter.name, int(parameter.min), int(parameter.max), step=int(parameter.step or 1), log=log)
    return trial.suggest_categorical(parameter.name, list(parameter.values))


@dataclass(frozen=True)
class LocalTrialLaunch:
    """How a trial's job kind runs locally: the local backend's launch kind, worker count and command."""

    launch_kind: str
    num_workers: int
    command: list[str]
    env: dict[str, str]
    primary_worker: str


def local_launch(trial_spec: dict[str, Any], container_name: str, python: str = sys.executable) -> LocalTrialLaunch:
    """Map a (substituted) trial job to the local backend, keeping the primary container's command.

    The command is read as the pod runs it: after the kubelet's ``$(VAR)`` expansion and, for
    ``sh -c "<quoted words>"``, as the words the shell passes on. ``python``/``python3`` at the head of the
    command becomes this interpreter; an MPIJob launcher's ``mpirun``/``horovodrun`` prefix is dropped,
    since the local backend starts horovodrun itself.
    """
    kind = trial_spec["kind"]
    spec = trial_spec.get("spec") or {}
    if kind == "Job":
        templates = {"Job": spec.get("template") or {}}
        launch_kind, count = "pytorch", 1
    else:
        key = {"PyTorchJob": "pytorchReplicaSpecs", "TFJob": "tfReplicaSpecs", "MPIJob": "mpiReplicaSpecs"}[kind]
        replicas = spec.get(key) or {}
        templates = {role: replica.get("template") or {} for role, replica in replicas.items()}
        if kind == "MPIJob":
            launch_kind = "mpi"
            worker = replicas.get("Worker") or {}
            count = int(worker.get("replicas", 1)) * int(spec.get("slotsPerWorker", 1))
        else:
            launch_kind = "pytorch" if kind == "PyTorchJob" else "tensorflow"
            count = sum(int(replica.get("replicas", 1)) for replica in replicas.values())
    container = next(
        (c for template in templates.values() for c in (template.get("spec") or {}).get("containers") or []
         if c.get("name") == container_name),
        None,
    )
    if container is None:
        raise SpecError(f"the trial spec has no container named {container_name!r}")
    env = {item["name"]: str(item.get("value", "")) for item in container.get("env") or [] if "value" in item}
    written = [*container.get("command", []), *container.get("args", [])]
    command = shell_words([kubelet_expand(part, env) for part in written])
    if not command:
        raise SpecError(f"container {container_name!r} has no command or args to run locally")
    if Path(command[0]).name in _MPI_LAUNCHERS:
        starts = [index for index, part in enumerate(command) if Path(part).name in _PYTHON]
        if not starts:
            raise SpecError(f"cannot find the python command inside the MPI launcher command {command}")
        command = command[starts[0]:]
    if Path(command[0]).name in _PYTHON:
        command = [python, *command[1:]]
    primary = "horovodrun" if launch_kind == "mpi" else "worker-0"
    return LocalTrialLaunch(launch_kind, count, command, env, primary)


class _TrialOutput:
    """The text sink for a trial's processes: keeps the log, feeds the primary worker's lines to the
    observation log and the pruner (the local equivalent of Katib's metrics collector sidecar)."""

    def __init__(self, log_file: TextIO, primary: str, on_line: Callable[[str], None] | None, echo: TextIO | None):
        self.log_file = log_file
        self.prefix = f"[{primary}] "
        self.on_line = on_line
        self.echo = echo
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.log_file.write(text)
            if self.echo is not None:
                self.echo.write(text)
            if self.on_line is not None:
                for line in text.splitlines():
                    if line.startswith(self.prefix):
                        self.on_line(line[len(self.prefix):])
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.log_file.flush()


class LocalTuner:
    """Run an Experiment dict's search with Optuna, trials as local processes under ``workdir``."""

    def __init__(
        self,
        experiment: dict[str, Any],
        workdir: str | Path,
        *,
        trial_timeout_s: float | None = None,
        python: str = sys.executable,
        echo: TextIO | None = None,
    ):
        self.experiment = experiment
        self.name = experiment["metadata"]["name"]
        self.spec = TuningSpec.from_katib(experiment["spec"])
        for parameter in self.spec.parameters:
            _check_local(parameter)
        self.collector = MetricsCollector.from_katib(experiment["spec"].get("metricsCollectorSpec"))
        self.container_name = primary_container(experiment)["name"]
        self.workdir = Path(workdir)
        self.trial_timeout_s = trial_timeout_s
        self.python = python
        self.echo = echo
        self.sampler = make_sampler(self.spec)
        self.budget = self._budget()
        early = self.spec.early_stopping
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=early.min_trials_required, n_warmup_steps=early.start_step - 1)
            if early else optuna.pruners.NopPruner()
        )
        direction = "maximize" if self.spec.objective.type == "maximize" else "minimize"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(study_name=self.name, direction=direction, sampler=self.sampler, pruner=pruner)
        if self.spec.algorithm.name == "grid":
            space = grid(self.spec)
            for point in itertools.islice(itertools.product(*space.values()), self.budget):
                self.study.enqueue_trial(dict(zip(space, point)))
        self.records: list[TrialRecord] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def _budget(self) -> int:
        """How many trials to start: maxTrialCount, capped by the grid size for grid search."""
        if self.spec.algorithm.name == "grid":
            size = math.prod(len(values) for values in grid(self.spec).values())
            return min(size, self.spec.max_trial_count or size)
        if self.spec.max_trial_count is None:
            raise SpecError("spec.maxTrialCount is required locally (a local search cannot run until stopped by hand)")
        return self.spec.max_trial_count

    def run(self) -> TuningResult:
        """Run trials, ``parallelTrialCount`` at a time, until a Katib stop rule ends the search."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = 0
        running: dict[Future, threading.Event] = {}
        outcome: tuple[bool, str, str] | None = None
        with ThreadPoolExecutor(max_workers=self.spec.parallel_trial_count, thread_name_prefix="trial") as pool:
            while True:
                while outcome is None and started < self.budget and len(running) < self.spec.parallel_trial_count:
                    stop = threading.Event()
                    running[pool.submit(self._run_trial, started, stop)] = stop
                    started += 1
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()  # a bug in the tuner itself surfaces here
                if outcome is None:
                    outcome = self._stop_rule(started)
                    if outcome is not None:
                        for stop in running.values():  # Katib kills the trials still running
                            stop.set()
        if outcome is None:
            outcome = (True, SUGGESTION_END, "every suggestion of the algorithm was tried")
        self.records.sort(key=lambda record: int(record.name.rsplit("-", 1)[1]))
        return finish(self.spec, self.name, self.records, *outcome)

    def _stop_rule(self, started: int) -> tuple[bool, str, str] | None:
        """Katib's order: goal reached, then too many failed trials, then maxTrialCount finished."""
        with self.lock:
            records = list(self.records)
        objective = self.spec.objective
        if any(objective.reaches_goal(record.objective) for record in records):
            return True, GOAL_REACHED, "Experiment has succeeded because Objective goal has reached"
        failed = sum(record.state in ("Failed", "MetricsUnavailable") for record in records)
        if self.spec.max_failed_trial_count is not None and failed > self.spec.max_failed_trial_count:
            return False, FAILED, (
                f"Experiment has failed because max failed count has reached ({failed} failed trials, "
                f"maxFailedTrialCount {self.spec.max_failed_trial_count})"
            )
        finished = sum(record.state != "Killed" for record in records)
        if self.spec.max_trial_count is not None and finished >= self.spec.max_trial_count:
            return True, MAX_TRIALS_REACHED, "Experiment has succeeded because max trial count has reached"
        return None

    def _run_trial(self, index: int, stop: threading.Event) -> None:
        name = f"{self.name}-{index}"
        with self.lock:
            trial = self.study.ask()
            values = {parameter.name: suggest(trial, parameter) for parameter in self.spec.parameters}
        trial_dir = self.workdir / name
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial_spec = substitute_trial_parameters(self.experiment, {k: str(v) for k, v in values.items()}, name)
        launch = local_launch(trial_spec, self.container_name, self.python)
        command = launch.command
        metrics_path = None
        if self.collector.kind == "File":  # the container's path, kept per trial under its folder
            metrics_path = trial_dir / self.collector.path.lstrip("/")
            metrics_path.parent.mkdir(parents=True, exist_ok=True)
            command = [str(metrics_path) if part == self.collector.path else part for part in command]
        observations = ObservationLog(
            self.spec.objective.metric_names,
            self.collector.metrics_format or (DEFAULT_METRICS_FORMAT,),
            self.collector.file_format,
        )
        pruned = threading.Event()
        steps = [0]

        def on_line(line: str) -> None:
            for metric, value in observations.feed(line):
                if metric != self.spec.objective.metric or pruned.is_set():
                    continue
                with self.lock:
                    trial.report(value, steps[0])
                    steps[0] += 1
                    if trial.should_prune():
                        pruned.set()
                        stop.set()

        clock = time.monotonic()
        message = ""
        with open(trial_dir / "output.log", "w") as log_file:
            sink = _TrialOutput(log_file, launch.primary_worker, on_line if metrics_path is None else None, self.echo)
            try:
                run_workers(
                    launch.launch_kind, launch.num_workers, command, env=launch.env,
                    timeout=self.trial_timeout_s, output=sink, stop=stop,
                )
                failed = False
            except WorkerGroupFailed as error:
                failed = True
                message = str(error).splitlines()[0]
        if metrics_path is not None and metrics_path.exists():
            for line in metrics_path.read_text().splitlines():
                on_line(line)
        record = self._record(name, values, observations, failed, pruned.is_set(), stop.is_set(), message)
        record.seconds = time.monotonic() - clock
        with self.lock:
            if record.state == "Succeeded":
                self.study.tell(trial, record.objective)
            elif record.state == "EarlyStopped":
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.records.append(record)

    def _record(
        self, name: str, values: dict[str, Any], observations: ObservationLog,
        failed: bool, pruned: bool, stopped: bool, message: str,
    ) -> TrialRecord:
        objective = self.spec.objective
        metrics = {metric: observations.value(metric, objective.strategy(metric)) for metric in objective.metric_names}
        value = metrics[objective.metric]
        if pruned:
            state, message = "EarlyStopped", message or "stopped by medianstop: objective worse than the median"
        elif stopped:
            state, message = "Killed", "stopped because the experiment completed"
        elif failed:
            state = "Failed"
        elif value is None:
            state = "MetricsUnavailable"
            message = f"the trial finished but never reported {objective.metric}=<number>"
        else:
            state = "Succeeded"
        return TrialRecord(
            name=name, parameters=values, state=state, objective=value, metrics=metrics,
            observations=len(observations.values[objective.metric]), message=message,
        )
