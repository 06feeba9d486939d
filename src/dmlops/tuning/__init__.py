"""Hyperparameter tuning with Katib semantics: a search-space spec, Katib Experiment dicts, a local
Optuna tuner that runs the same trial command, and the Katib backend through the platform launcher."""

from dmlops.tuning.experiment import (
    MetricsCollector,
    TrialTemplate,
    build_experiment,
    flag_arguments,
    substitute_trial_parameters,
    trial_job,
)
from dmlops.tuning.results import TrialRecord, TuningFailed, TuningResult, apply_policy
from dmlops.tuning.spec import EarlyStopping, Objective, Parameter, SpecError, TuningSpec

__all__ = [
    "EarlyStopping", "MetricsCollector", "Objective", "Parameter", "SpecError", "TrialRecord", "TrialTemplate",
    "TuningFailed", "TuningResult", "TuningSpec", "apply_policy", "build_experiment", "flag_arguments",
    "substitute_trial_parameters", "trial_job",
]
