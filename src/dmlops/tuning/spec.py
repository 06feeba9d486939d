"""A hyperparameter search space with Katib semantics (kubeflow.org/v1beta1 ``ExperimentSpec``).

The spec is read from, and written back to, the same camelCase dict a Katib Experiment carries under
``spec`` (``parameters``, ``objective``, ``algorithm``, ``earlyStopping``, ``parallelTrialCount``,
``maxTrialCount``, ``maxFailedTrialCount``, ``resumePolicy``), so a search space moves between a Katib
YAML file, the KFP component and the local tuner unchanged. Katib keeps feasible-space bounds as
strings; here they are typed, and every error names the field and what to do. Whatever Katib's
validating webhook refuses is refused here first (katib pkg/webhook/v1beta1/experiment/validator/
validator.go, ValidateExperiment), checked against the spec after Katib's defaults
(pkg/apis/controller/experiments/v1beta1/experiment_defaults.go: parallelTrialCount 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PARAMETER_TYPES = ("double", "int", "categorical", "discrete")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
OBJECTIVE_TYPES = ("maximize", "minimize")
METRIC_STRATEGIES = ("min", "max", "latest")
RESUME_POLICIES = ("Never", "LongRunning", "FromVolume")
KATIB_ALGORITHMS = (
    "random", "grid", "tpe", "multivariate-tpe", "cmaes", "bayesianoptimization", "sobol", "hyperband", "pbt",
)
EARLY_STOPPING_SETTINGS = {"medianstop": ("min_trials_required", "start_step")}
DEFAULT_PARALLEL_TRIAL_COUNT = 3  # Katib's default for spec.parallelTrialCount


class SpecError(ValueError):
    """A search-space spec that Katib (or the local tuner) would reject; the message names the field."""


def _number(text: Any, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"{where}: {text!r} must be finite")
    return value


def _integer(text: Any, where: str) -> int:
    value = _number(text, where)
    if value != int(value):
        raise SpecError(f"{where}: {text!r} must be a whole number for an int parameter")
    return int(value)


def _katib_number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter: ``double``/``int`` with ``min``/``max`` (optional ``step``, distribution), or
    ``categorical``/``discrete`` with a list of values."""

    name: str
    type: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    values: tuple = ()
    distribution: str = "uniform"

    def __post_init__(self) -> None:
        where = f"parameter {self.name!r}"
        if not self.name:
            raise SpecError("a parameter has no name; every entry of spec.parameters needs one")
        if self.type not in PARAMETER_TYPES:
            raise SpecError(f"{where}: parameterType {self.type!r} is unknown; use one of {', '.join(PARAMETER_TYPES)}")
        if self.distribution not in DISTRIBUTIONS:
            raise SpecError(
                f"{where}: feasibleSpace.distribution {self.distribution!r} is unknown; use one of {', '.join(DISTRIBUTIONS)}"
            )
        if self.type in ("double", "int"):
            if self.min is None or self.max is None:
                raise SpecError(f"{where}: a {self.type} parameter needs feasibleSpace.min and feasibleSpace.max")
            if self.values:
                raise SpecError(f"{where}: a {self.type} parameter takes min/max, not feasibleSpace.list")
            if self.min >= self.max:
                raise SpecError(f"{where}: feasibleSpace.min ({self.min}) must be below max ({self.max})")
            if self.step is not None and self.step <= 0:
                raise SpecError(f"{where}: feasibleSpace.step must be positive, got {self.step}")
            if self.distribution in ("logUniform", "logNormal") and self.min <= 0:
                raise SpecError(f"{where}: a {self.distribution} distribution needs min > 0, got {self.min}")
        else:
            if not self.values:
                raise SpecError(f"{where}: a {self.type} parameter needs a non-empty feasibleSpace.list")
            if self.min is not None or self.max is not None or self.step is not None:
                raise SpecError(f"{where}: a {self.type} parameter takes feasibleSpace.list, not min/max/step")
            if len(set(self.values)) != len(self.values):
                raise SpecError(f"{where}: feasibleSpace.list has duplicates: {list(self.values)}")

    @classmethod
    def from_katib(cls, entry: dict[str, Any], index: int) -> Parameter:
        """Read one entry of Katib's ``spec.parameters``."""
        name = entry.get("name", "")
        where = f"spec.parameters[{index}] ({name or 'unnamed'})"
        unknown = set(entry) - {"name", "parameterType", "feasibleSpace"}
        if unknown:
            raise SpecError(f"{where}: unknown fields {sorted(unknown)}; use name, parameterType, feasibleSpace")
        kind = entry.get("parameterType", "")
        space = dict(entry.get("feasibleSpace") or {})
        unknown = set(space) - {"min", "max", "step", "list", "distribution"}
        if unknown:
            raise SpecError(f"{where}.feasibleSpace: unknown fields {sorted(unknown)}; use min, max, step, list, distribution")
        convert = _integer if kind == "int" else _number
        bounds = {
            key: convert(space[key], f"{where}.feasibleSpace.{key}")
            for key in ("min", "max", "step") if space.get(key) not in (None, "")
        }
        values: tuple = ()
        if space.get("list"):
            values = tuple(str(value) for value in space["list"])
            if kind == "discrete":
                values = tuple(_discrete(value, f"{where}.feasibleSpace.list") for value in values)
        try:
            return cls(name=name, type=kind, values=values, distribution=space.get("distribution") or "uniform", **bounds)
        except SpecError as error:
            raise SpecError(f"spec.parameters[{index}]: {error}") from None

    def to_katib(self) -> dict[str, Any]:
        """This parameter as an entry of Katib's ``spec.parameters`` (strings in feasibleSpace)."""
        space: dict[str, Any] = {}
        if self.type in ("double", "int"):
            space["min"] = _katib_number(self.min)
            space["max"] = _katib_number(self.max)
            if self.step is not None:
                space["step"] = _katib_number(self.step)
        else:
            space["list"] = [_katib_number(value) if self.type == "discrete" else str(value) for value in self.values]
        space["distribution"] = self.distribution
        return {"name": self.name, "parameterType": self.type, "feasibleSpace": space}

    def cast(self, text: str) -> float | int | str:
        """A value of this parameter, from the string Katib assigns to a trial."""
        if self.type == "int":
            return _integer(text, f"parameter {self.name!r}")
        if self.type == "double":
            return _number(text, f"parameter {self.name!r}")
        if self.type == "discrete":
            return _discrete(text, f"parameter {self.name!r}")
        return str(text)


def _discrete(text: Any, where: str) -> float | int:
    value = _number(text, where)
    return int(value) if value == int(value) and "." not in str(text) and "e" not in str(text).lower() else value


@dataclass(frozen=True)
class Objective:
    """What a trial is scored on: ``type`` maximize/minimize, the objective metric, an optional goal
    (reaching it ends the search), extra metrics to record, and how each metric's many reported values
    reduce to one (``min``, ``max`` or ``latest``; Katib's defaults follow the objective type)."""

    type: str
    metric: str
    goal: float | None = None
    additional_metrics: tuple[str, ...] = ()
    metric_strategies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in OBJECTIVE_TYPES:
            raise SpecError(f"spec.objective.type {self.type!r} is unknown; use maximize or minimize")
        if not self.metric:
            raise SpecError("spec.objective.objectiveMetricName is empty; name the metric the trials print")
        if self.metric in self.additional_metrics:
            raise SpecError(f"spec.objective.additionalMetricNames repeats the objective metric {self.metric!r}")
        for name, strategy in self.metric_strategies.items():
            if strategy not in METRIC_STRATEGIES:
                raise SpecError(
                    f"spec.objective.metricStrategies[{name}]: {strategy!r} is unknown; use one of {', '.join(METRIC_STRATEGIES)}"
                )
            if name not in self.metric_names:
                raise SpecError(f"spec.objective.metricStrategies names {name!r}, which is not an objective or additional metric")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (self.metric, *self.additional_metrics)

    def strategy(self, name: str) -> str:
        """How ``name``'s reported values reduce to one, as Katib defaults it: min when minimizing,
        max when maximizing, unless ``metricStrategies`` says otherwise."""
        return self.metric_strategies.get(name, "max" if self.type == "maximize" else "min")

    def better(self, candidate: float, incumbent: float | None) -> bool:
        """Whether ``candidate`` beats ``incumbent`` (strictly, as Katib's best-trial choice)."""
        if incumbent is None:
            return True
        return candidate > incumbent if self.type == "maximize" else candidate < incumbent

    def reaches_goal(self, value: float | None) -> bool:
        if self.goal is None or value is None:
            return False
        return value >= self.goal if self.type == "maximize" else value <= self.goal

    @classmethod
    def from_katib(cls, objective: dict[str, Any]) -> Objective:
        unknown = set(objective) - {"type", "goal", "objectiveMetricName", "additionalMetricNames", "metricStrategies"}
        if unknown:
            raise SpecError(f"spec.objective: unknown fields {sorted(unknown)}")
        goal = objective.get("goal")
        return cls(
            type=objective.get("type", ""),
            metric=objective.get("objectiveMetricName", ""),
            goal=None if goal is None else _number(goal, "spec.objective.goal"),
            additional_metrics=tuple(objective.get("additionalMetricNames") or ()),
            metric_strategies={item["name"]: item["value"] for item in objective.get("metricStrategies") or ()},
        )

    def to_katib(self) -> dict[str, Any]:
        objective: dict[str, Any] = {"type": self.type, "objectiveMetricName": self.metric}
        if self.goal is not None:
            objective["goal"] = self.goal
        if self.additional_metrics:
            objective["additionalMetricNames"] = list(self.additional_metrics)
        if self.metric_strategies:
            objective["metricStrategies"] = [{"name": name, "value": value} for name, value in self.metric_strategies.items()]
        return objective


@dataclass(frozen=True)
class Algorithm:
    """A named search algorithm (Katib's ``algorithmName``) and its string settings."""

    name: str
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in KATIB_ALGORITHMS:
            raise SpecError(
                f"spec.algorithm.algorithmName {self.name!r} is not a Katib algorithm; use one of {', '.join(KATIB_ALGORITHMS)}"
            )


@dataclass(frozen=True)
class EarlyStopping:
    """Katib early stopping: ``medianstop`` stops a trial whose objective, after ``start_step`` reported
    values, is worse than the median of the completed trials (once ``min_trials_required`` have completed)."""

    name: str = "medianstop"
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in EARLY_STOPPING_SETTINGS:
            raise SpecError(
                f"spec.earlyStopping.algorithmName {self.name!r} is unknown; use one of {', '.join(EARLY_STOPPING_SETTINGS)}"
            )
        unknown = set(self.settings) - set(EARLY_STOPPING_SETTINGS[self.name])
        if unknown:
            raise SpecError(
                f"spec.earlyStopping.algorithmSettings: unknown {sorted(unknown)} for {self.name}; "
                f"use {', '.join(EARLY_STOPPING_SETTINGS[self.name])}"
            )
        for name in ("min_trials_required", "start_step"):
            if name in self.settings and _integer(self.settings[name], f"spec.earlyStopping {name}") < 1:
                raise SpecError(f"spec.earlyStopping {name} must be at least 1, got {self.settings[name]}")

    @property
    def min_trials_required(self) -> int:
        return int(self.settings.get("min_trials_required", 3))

    @property
    def start_step(self) -> int:
        return int(self.settings.get("start_step", 4))


def _settings(entries: Any, where: str) -> dict[str, str]:
    settings = {}
    for entry in entries or ():
        if "name" not in entry:
            raise SpecError(f"{where}: every setting needs a name, got {entry}")
        settings[entry["name"]] = str(entry.get("value", ""))
    return settings


@dataclass(frozen=True)
class TuningSpec:
    """Parameters, objective, algorithm, trial budget, early stopping and resume policy of a search."""

    parameters: tuple[Parameter, ...]
    objective: Objective
    algorithm: Algorithm = field(default_factory=lambda: Algorithm("random"))
    parallel_trial_count: int = DEFAULT_PARALLEL_TRIAL_COUNT
    max_trial_count: int | None = None
    max_failed_trial_count: int | None = None
    early_stopping: EarlyStopping | None = None
    resume_policy: str = "Never"

    def __post_init__(self) -> None:
        if not self.parameters:
            raise SpecError("spec.parameters is empty; give at least one parameter to tune")
        names = [parameter.name for parameter in self.parameters]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SpecError(f"spec.parameters: duplicate names {duplicates}")
        if self.parallel_trial_count < 1:
            raise SpecError(f"spec.parallelTrialCount must be at least 1, got {self.parallel_trial_count}")
        if self.max_trial_count is not None and self.max_trial_count < 1:
            raise SpecError(f"spec.maxTrialCount must be at least 1, got {self.max_trial_count}")
        if self.max_trial_count is not None and self.parallel_trial_count > self.max_trial_count:
            raise SpecError(
                f"spec.parallelTrialCount ({self.parallel_trial_count}, Katib's default when unset is "
                f"{DEFAULT_PARALLEL_TRIAL_COUNT}) must not exceed spec.maxTrialCount ({self.max_trial_count}); "
                "lower parallelTrialCount or raise maxTrialCount"
            )
        if self.max_failed_trial_count is not None and self.max_failed_trial_count < 0:
            raise SpecError(f"spec.maxFailedTrialCount must be >= 0, got {self.max_failed_trial_count}")
        if (self.max_failed_trial_count is not None and self.max_trial_count is not None
                and self.max_failed_trial_count > self.max_trial_count):
            raise SpecError(
                f"spec.maxFailedTrialCount ({self.max_failed_trial_count}) must not exceed spec.maxTrialCount "
                f"({self.max_trial_count}); lower maxFailedTrialCount or raise maxTrialCount"
            )
        if self.resume_policy not in RESUME_POLICIES:
            raise SpecError(f"spec.resumePolicy {self.resume_policy!r} is unknown; use one of {', '.join(RESUME_POLICIES)}")
        if self.algorithm.name == "grid":
            unstepped = [p.name for p in self.parameters if p.type == "double" and p.step is None]
            if unstepped:
                raise SpecError(f"algorithm grid needs feasibleSpace.step for double parameters {unstepped}")

    def parameter(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(f"no parameter {name!r}; the spec has {[p.name for p in self.parameters]}")

    def cast_assignments(self, assignments: dict[str, str]) -> dict[str, float | int | str]:
        """Typed values from Katib's string parameter assignments."""
        return {name: self.parameter(name).cast(value) for name, value in assignments.items()}

    @classmethod
    def from_katib(cls, spec: dict[str, Any]) -> TuningSpec:
        """Read Katib's ``Experiment.spec`` (only the search fields; a trialTemplate, if present, is ignored)."""
        if not isinstance(spec, dict):
            raise SpecError(f"a tuning spec must be a dict shaped like a Katib Experiment spec, got {type(spec).__name__}")
        known = {
            "parameters", "objective", "algorithm", "earlyStopping", "parallelTrialCount", "maxTrialCount",
            "maxFailedTrialCount", "resumePolicy", "trialTemplate", "metricsCollectorSpec",
        }
        unknown = set(spec) - known
        if unknown:
            raise SpecError(f"spec: unknown fields {sorted(unknown)}; known fields are {sorted(known)}")
        if "objective" not in spec:
            raise SpecError("spec.objective is missing; say which metric to maximize or minimize")
        algorithm = spec.get("algorithm") or {"algorithmName": "random"}
        early = spec.get("earlyStopping")

        def count(key: str) -> int | None:
            return None if spec.get(key) is None else _integer(spec[key], f"spec.{key}")

        parallel = count("parallelTrialCount")
        return cls(
            parameters=tuple(Parameter.from_katib(entry, index) for index, entry in enumerate(spec.get("parameters") or ())),
            objective=Objective.from_katib(spec["objective"]),
            algorithm=Algorithm(
                algorithm.get("algorithmName", ""),
                _settings(algorithm.get("algorithmSettings"), "spec.algorithm.algorithmSettings"),
            ),
            parallel_trial_count=DEFAULT_PARALLEL_TRIAL_COUNT if parallel is None else parallel,
            max_trial_count=count("maxTrialCount"),
            max_failed_trial_count=count("maxFailedTrialCount"),
            early_stopping=None if not early else EarlyStopping(
                early.get("algorithmName", ""),
                _settings(early.get("algorithmSettings"), "spec.earlyStopping.algorithmSettings"),
            ),
            resume_policy=spec.get("resumePolicy") or "Never",
        )

    def to_katib(self) -> dict[str, Any]:
        """The search fields of Katib's ``Experiment.spec``."""
        spec: dict[str, Any] = {
            "objective": self.objective.to_katib(),
            "algorithm": {"algorithmName": self.algorithm.name},
            "parallelTrialCount": self.parallel_trial_count,
            "resumePolicy": self.resume_policy,
            "parameters": [parameter.to_katib() for parameter in self.parameters],
        }
        if self.algorithm.settings:
            spec["algorithm"]["algorithmSettings"] = [
                {"name": name, "value": value} for name, value in self.algorithm.settings.items()
            ]
        if self.max_trial_count is not None:
            spec["maxTrialCount"] = self.max_trial_count
        if self.max_failed_trial_count is not None:
            spec["maxFailedTrialCount"] = self.max_failed_trial_count
        if self.early_stopping is not None:
            spec["earlyStopping"] = {"algorithmName": self.early_stopping.name}
            if self.early_stopping.settings:
                spec["earlyStopping"]["algorithmSettings"] = [
                    {"name": name, "value": value} for name, value in self.early_stopping.settings.items()
                ]
        return spec
