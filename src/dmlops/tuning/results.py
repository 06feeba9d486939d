"""The outcome of a search, the same whichever backend ran it: trials, best trial, and how it ended.

Katib's states and stop rules are kept: a trial is Succeeded, Failed, EarlyStopped, Killed or
MetricsUnavailable; the best trial is the first one with the best objective value among the succeeded
and early-stopped trials (as ``status.currentOptimalTrial``); the search ends Succeeded when the goal or
``maxTrialCount`` is reached (or the algorithm has no more suggestions), Failed when failed trials exceed
``maxFailedTrialCount``.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.tuning.spec import TuningSpec

TRIAL_STATES = ("Succeeded", "Failed", "EarlyStopped", "Killed", "MetricsUnavailable", "Running")
GOAL_REACHED = "ExperimentGoalReached"
MAX_TRIALS_REACHED = "ExperimentMaxTrialsReached"
SUGGESTION_END = "ExperimentSuggestionEndReached"
FAILED = "ExperimentFailed"
ON_FAILURE = ("fail", "use-best")
ON_GOAL_NOT_REACHED = ("accept", "fail")


class TuningFailed(RuntimeError):
    """A search that failed (or missed its goal) under a policy that does not accept it."""


@dataclass
class TrialRecord:
    """One trial: its parameters (typed), how it ended, its objective and other metric values."""

    name: str
    parameters: dict[str, Any]
    state: str
    objective: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    observations: int = 0
    seconds: float | None = None
    message: str = ""


@dataclass
class TuningResult:
    """Every trial and the best one; ``reason`` is Katib's completion reason."""

    experiment: str
    objective_type: str
    objective_metric: str
    goal: float | None
    succeeded: bool
    reason: str
    message: str
    trials: list[TrialRecord]
    best_trial: str | None = None
    best_parameters: dict[str, Any] = field(default_factory=dict)
    best_objective: float | None = None

    @property
    def goal_reached(self) -> bool:
        if self.goal is None or self.best_objective is None:
            return False
        if self.objective_type == "maximize":
            return self.best_objective >= self.goal
        return self.best_objective <= self.goal

    def count(self, state: str) -> int:
        return sum(trial.state == state for trial in self.trials)

    def summary(self) -> dict[str, Any]:
        """Plain numbers and strings about the search (for KFP metadata and logs)."""
        return {
            "experiment": self.experiment,
            "succeeded": self.succeeded,
            "reason": self.reason,
            "objective": f"{self.objective_type} {self.objective_metric}",
            "goal": self.goal,
            "goal_reached": self.goal_reached,
            "best_trial": self.best_trial,
            "best_objective": self.best_objective,
            "trials": len(self.trials),
            **{f"trials_{state[0].lower()}{state[1:]}": self.count(state) for state in TRIAL_STATES[:5]},
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "goal_reached": self.goal_reached}


def best_of(trials: list[TrialRecord], objective_type: str) -> TrialRecord | None:
    """The first trial with the best objective value, as Katib picks ``currentOptimalTrial``, among the
    trials that ran to their end or were early stopped (a failed or killed trial's metrics are partial)."""
    best = None
    for trial in trials:
        if trial.state not in ("Succeeded", "EarlyStopped") or trial.objective is None or math.isnan(trial.objective):
            continue
        if best is None or (
            trial.objective > best.objective if objective_type == "maximize" else trial.objective < best.objective
        ):
            best = trial
    return best


def finish(
    spec: TuningSpec, experiment: str, trials: list[TrialRecord], succeeded: bool, reason: str, message: str
) -> TuningResult:
    """A result over ``trials`` with its best trial filled in."""
    best = best_of(trials, spec.objective.type)
    return TuningResult(
        experiment=experiment,
        objective_type=spec.objective.type,
        objective_metric=spec.objective.metric,
        goal=spec.objective.goal,
        succeeded=succeeded,
        reason=reason,
        message=message,
        trials=trials,
        best_trial=best.name if best else None,
        best_parameters=dict(best.parameters) if best else {},
        best_objective=best.objective if best else None,
    )


def apply_policy(result: TuningResult, on_failure: str = "fail", on_goal_not_reached: str = "accept") -> TuningResult:
    """Raise TuningFailed unless the policies accept how the search ended.

    ``on_failure``: ``fail`` fails the step when the search failed (too many failed trials) or has no
    best trial; ``use-best`` goes on with the best trial so far if there is one. ``on_goal_not_reached``:
    ``accept`` takes the best trial when the goal was set but missed; ``fail`` fails the step.
    """
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    if on_goal_not_reached not in ON_GOAL_NOT_REACHED:
        raise ValueError(f"on_goal_not_reached must be one of {', '.join(ON_GOAL_NOT_REACHED)}, got {on_goal_not_reached!r}")
    counts = ", ".join(f"{result.count(state)} {state.lower()}" for state in TRIAL_STATES[:5] if result.count(state))
    if result.best_trial is None:
        raise TuningFailed(
            f"experiment {result.experiment} ({result.reason}: {result.message}) has no trial with a "
            f"{result.objective_metric} value ({counts or 'no trials'}); check the trial logs: each trial must "
            f"print '{result.objective_metric}=<number>'"
        )
    if not result.succeeded and on_failure == "fail":
        raise TuningFailed(
            f"experiment {result.experiment} failed ({result.reason}: {result.message}; {counts}); "
            "fix the failing trials, raise maxFailedTrialCount, or pass on_failure='use-best'"
        )
    if result.goal is not None and not result.goal_reached and on_goal_not_reached == "fail":
        raise TuningFailed(
            f"experiment {result.experiment} did not reach its goal {result.objective_metric} "
            f"{'>=' if result.objective_type == 'maximize' else '<='} {result.goal} (best {result.best_objective}, "
            f"{counts}); widen the search, raise maxTrialCount, or pass on_goal_not_reached='accept'"
        )
    return result


def trials_table(result: TuningResult) -> pa.Table:
    """One row per trial: name, state, objective, each parameter, each metric, seconds, message."""
    parameter_names = sorted({name for trial in result.trials for name in trial.parameters})
    metric_names = sorted({name for trial in result.trials for name in trial.metrics})
    columns: dict[str, list] = {
        "trial": [t.name for t in result.trials],
        "state": [t.state for t in result.trials],
        "objective": [t.objective for t in result.trials],
        "best": [t.name == result.best_trial for t in result.trials],
    }
    for name in parameter_names:
        values = [t.parameters.get(name) for t in result.trials]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
        columns[f"param_{name}"] = values if numeric else [None if v is None else str(v) for v in values]
    for name in metric_names:
        columns[f"metric_{name}"] = [t.metrics.get(name) for t in result.trials]
    columns["observations"] = [t.observations for t in result.trials]
    columns["seconds"] = [t.seconds for t in result.trials]
    columns["message"] = [t.message for t in result.trials]
    return pa.table(columns)


def write_trials(result: TuningResult, path: str | Path) -> int:
    """Write the trials table as Parquet; returns the row count."""
    table = trials_table(result)
    pq.write_table(table, str(path))
    return table.num_rows


def write_best_parameters(result: TuningResult, path: str | Path) -> None:
    """The best parameters (and where they came from) as JSON."""
    Path(path).write_text(json.dumps({
        "experiment": result.experiment,
        "best_trial": result.best_trial,
        "objective_metric": result.objective_metric,
        "best_objective": result.best_objective,
        "parameters": result.best_parameters,
    }, indent=2))


_PLOT_W, _PLOT_H, _PAD = 320, 220, 40
_COLOURS = {"Succeeded": "#1f77b4", "EarlyStopped": "#ff7f0e", "Failed": "#d62728", "Killed": "#7f7f7f"}


def _scatter(name: str, trials: list[TrialRecord], metric: str, best: str | None) -> str:
    """An SVG scatter of objective against one parameter (categories spread evenly on the x axis)."""
    points = [(t.parameters.get(name), t.objective, t) for t in trials if t.objective is not None and name in t.parameters]
    if not points:
        return f"<figure><figcaption>{html.escape(name)}: no trial reported {html.escape(metric)}</figcaption></figure>"
    numeric = all(isinstance(x, (int, float)) for x, _, _ in points)
    if numeric:
        xs = [float(x) for x, _, _ in points]
        labels = None
    else:
        categories = sorted({str(x) for x, _, _ in points})
        xs = [float(categories.index(str(x))) for x, _, _ in points]
        labels = categories
    ys = [y for _, y, _ in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0

    def px(x: float) -> float:
        return _PAD + (x - x_low) / x_span * (_PLOT_W - 2 * _PAD)

    def py(y: float) -> float:
        return _PLOT_H - _PAD - (y - y_low) / y_span * (_PLOT_H - 2 * _PAD)

    marks = []
    for x, y, (_, _, trial) in zip(xs, ys, points):
        colour = _COLOURS.get(trial.state, "#2ca02c")
        radius = 6 if trial.name == best else 4
        title = html.escape(f"{trial.name}: {name}={trial.parameters[name]} {metric}={y:.6g} ({trial.state})")
        outline = ' stroke="black" stroke-width="2"' if trial.name == best else ""
        marks.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius}" fill="{colour}"{outline}>'
                     f"<title>{title}</title></circle>")
    ticks = []
    if labels:
        for index, label in enumerate(labels):
            ticks.append(f'<text x="{px(index):.1f}" y="{_PLOT_H - _PAD + 14}" font-size="10" text-anchor="middle">{html.escape(label)}</text>')
    else:
        for value in (x_low, x_high):
            ticks.append(f'<text x="{px(value):.1f}" y="{_PLOT_H - _PAD + 14}" font-size="10" text-anchor="middle">{value:.4g}</text>')
    for value in (y_low, y_high):
        ticks.append(f'<text x="{_PAD - 4}" y="{py(value) + 3:.1f}" font-size="10" text-anchor="end">{value:.4g}</text>')
    return (
        f'<figure><svg width="{_PLOT_W}" height="{_PLOT_H}" role="img" aria-label="{html.escape(metric)} vs {html.escape(name)}">'
        f'<line x1="{_PAD}" y1="{_PLOT_H - _PAD}" x2="{_PLOT_W - _PAD}" y2="{_PLOT_H - _PAD}" stroke="#999"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_PLOT_H - _PAD}" stroke="#999"/>'
        + "".join(ticks) + "".join(marks)
        + f'<text x="{_PLOT_W / 2}" y="{_PLOT_H - 6}" font-size="12" text-anchor="middle">{html.escape(name)}</text>'
        f'</svg><figcaption>{html.escape(metric)} vs {html.escape(name)}</figcaption></figure>'
    )


def html_report(result: TuningResult) -> str:
    """A self-contained HTML page: outcome, best parameters, objective vs each parameter, trials table."""
    parameter_names = sorted({name for trial in result.trials for name in trial.parameters})
    metric_names = sorted({name for trial in result.trials for name in trial.metrics})
    outcome = "succeeded" if result.succeeded else "failed"
    goal = "" if result.goal is None else (
        f" Goal {result.objective_metric} {'>=' if result.objective_type == 'maximize' else '<='} {result.goal}: "
        f"{'reached' if result.goal_reached else 'not reached'}."
    )
    best = (
        f"<p>Best trial <b>{html.escape(result.best_trial)}</b>: {html.escape(result.objective_metric)} = "
        f"{result.best_objective:.6g}</p><pre>{html.escape(json.dumps(result.best_parameters, indent=2))}</pre>"
        if result.best_trial else "<p>No trial reported the objective metric.</p>"
    )
    plots = "".join(_scatter(name, result.trials, result.objective_metric, result.best_trial) for name in parameter_names)
    header = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", "state", result.objective_metric, *parameter_names, *metric_names, "seconds"])
    rows = []
    for trial in result.trials:
        cells = [trial.name, trial.state, "" if trial.objective is None else f"{trial.objective:.6g}"]
        cells += [str(trial.parameters.get(name, "")) for name in parameter_names]
        cells += ["" if trial.metrics.get(name) is None else f"{trial.metrics[name]:.6g}" for name in metric_names]
        cells.append("" if trial.seconds is None else f"{trial.seconds:.1f}")
        style = ' style="font-weight:bold"' if trial.name == result.best_trial else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    legend = " ".join(f'<span style="color:{colour}">&#9679; {state}</span>' for state, colour in _COLOURS.items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Tuning "
        f"{html.escape(result.experiment)}</title><style>body{{font-family:sans-serif}}figure{{display:inline-block;margin:8px}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style></head><body>"
        f"<h2>Tuning {html.escape(result.experiment)}: {outcome}</h2>"
        f"<p>{html.escape(result.objective_type)} {html.escape(result.objective_metric)}; {len(result.trials)} trials; "
        f"{html.escape(result.reason)}: {html.escape(result.message)}.{html.escape(goal)}</p>{best}"
        f"<h3>{html.escape(result.objective_metric)} vs each parameter</h3><p>{legend}; the best trial is outlined.</p>{plots}"
        f"<h3>Trials</h3><table><tr>{header}</tr>{''.join(rows)}</table></body></html>"
    )
