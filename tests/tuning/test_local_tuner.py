"""The local tuner runs Katib's trial command as real processes and follows Katib's stop rules."""

import sys
from pathlib import Path

import pytest

from dmlops.tuning import MetricsCollector, SpecError, TuningFailed, TuningSpec, apply_policy, build_experiment, trial_job
from dmlops.tuning.local import LocalTuner

SCRIPT = str(Path(__file__).with_name("trial_script.py"))


def experiment(search: dict, *args: str, collector: MetricsCollector = MetricsCollector()) -> dict:
    spec = {
        "objective": {"type": "minimize", "objectiveMetricName": "loss", "additionalMetricNames": ["epoch"]},
        "parallelTrialCount": 1,
        "parameters": [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "6", "step": "1"}}],
        **search,
    }
    template = trial_job("Job", "image", ["python", SCRIPT, "--x", "${trialParameters.x}", *args])
    return build_experiment(TuningSpec.from_katib(spec), "study", "default", template, collector=collector)


def grid(values: list[str]) -> dict:
    return {"algorithm": {"algorithmName": "grid"}, "parameters": [
        {"name": "x", "parameterType": "discrete", "feasibleSpace": {"list": values}}]}


def test_grid_runs_each_point_and_reads_metrics_like_katib(tmp_path):
    result = LocalTuner(experiment({**grid(["1", "3", "5"]), "parallelTrialCount": 2}), tmp_path).run()
    assert result.succeeded and result.reason == "ExperimentSuggestionEndReached"
    assert sorted(trial.parameters["x"] for trial in result.trials) == [1, 3, 5]
    assert all(trial.state == "Succeeded" and trial.observations == 4 for trial in result.trials)
    best = next(trial for trial in result.trials if trial.name == result.best_trial)
    assert best.parameters["x"] == 3 and result.best_parameters == {"x": 3}
    assert result.best_objective == pytest.approx(0.25)  # min strategy: the last step's 1/4
    assert best.metrics["epoch"] == 1  # Katib defaults additional metrics to min when minimizing
    assert "epoch=4 loss=0.250000" in (tmp_path / result.best_trial / "output.log").read_text()


def test_medianstop_prunes_a_bad_trial(tmp_path):
    search = {**grid(["3", "3.5", "6"]), "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "2"}]}}
    result = LocalTuner(experiment(search, "--steps", "40", "--sleep", "0.05"), tmp_path).run()
    states = {trial.parameters["x"]: trial for trial in result.trials}
    assert states[3].state == "Succeeded" and states[3.5].state == "Succeeded"
    bad = states[6]
    assert bad.state == "EarlyStopped"
    assert 2 <= bad.observations < 40  # stopped soon after its start_step-th report, not run to the end
    assert bad.seconds < states[3].seconds


def test_a_crashing_trial_counts_as_failed_and_the_study_goes_on(tmp_path):
    search = {**grid(["1", "5", "3", "2"]), "maxFailedTrialCount": 1}
    result = LocalTuner(experiment(search, "--crash-above", "4"), tmp_path).run()
    states = {trial.parameters["x"]: trial.state for trial in result.trials}
    assert states == {1: "Succeeded", 5: "Failed", 3: "Succeeded", 2: "Succeeded"}
    assert result.succeeded and result.best_parameters == {"x": 3}
    failed = next(trial for trial in result.trials if trial.state == "Failed")
    assert "exited with code 3" in failed.message


def test_too_many_failed_trials_fail_the_search(tmp_path):
    search = {**grid(["5", "6", "1", "2"]), "maxFailedTrialCount": 1}
    result = LocalTuner(experiment(search, "--crash-above", "4"), tmp_path).run()
    assert not result.succeeded and result.reason == "ExperimentFailed"
    assert [trial.state for trial in result.trials] == ["Failed", "Failed"]  # stopped after the 2nd failure
    with pytest.raises(TuningFailed, match="no trial with a loss value"):
        apply_policy(result)


def test_goal_reached_stops_the_search(tmp_path):
    search = {**grid(["1", "3", "5", "6"]), "objective": {"type": "minimize", "objectiveMetricName": "loss", "goal": 0.3}}
    result = LocalTuner(experiment(search), tmp_path).run()
    assert result.reason == "ExperimentGoalReached" and result.goal_reached
    assert len(result.trials) == 2


def test_goal_not_reached_policy(tmp_path):
    search = {**grid(["1", "5"]), "objective": {"type": "minimize", "objectiveMetricName": "loss", "goal": 0.1}}
    result = LocalTuner(experiment(search), tmp_path).run()
    assert apply_policy(result, on_goal_not_reached="accept").best_parameters["x"] in (1, 5)
    with pytest.raises(TuningFailed, match="did not reach its goal"):
        apply_policy(result, on_goal_not_reached="fail")


def test_file_collector_reads_the_trials_metrics_file(tmp_path):
    collector = MetricsCollector(kind="File", path="/var/log/katib/metrics.log")
    built = experiment(grid(["2", "3"]), "--metrics-file", "/var/log/katib/metrics.log", collector=collector)
    result = LocalTuner(built, tmp_path).run()
    assert result.best_parameters == {"x": 3}
    assert (tmp_path / result.best_trial / "var/log/katib/metrics.log").is_file()


@pytest.mark.parametrize("algorithm", ["random", "tpe", "multivariate-tpe", "cmaes", "bayesianoptimization"])
def test_each_sampler_runs_the_spec(tmp_path, algorithm):
    search = {"algorithm": {"algorithmName": algorithm, "algorithmSettings": [{"name": "random_state", "value": "1"}]},
              "maxTrialCount": 3, "parameters": [
                  {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "6"}},
                  {"name": "y", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "4"}}]}
    built = experiment(search, "--steps", "${trialParameters.y}", "--sleep", "0")
    result = LocalTuner(built, tmp_path).run()
    assert result.reason == "ExperimentMaxTrialsReached" and len(result.trials) == 3
    assert all(0 <= t.parameters["x"] <= 6 and t.observations == t.parameters["y"] for t in result.trials)


def test_unknown_algorithm_lists_the_supported_ones(tmp_path):
    built = experiment({"algorithm": {"algorithmName": "hyperband"}, "maxTrialCount": 2})
    with pytest.raises(SpecError, match="random, grid, tpe, multivariate-tpe, cmaes, bayesianoptimization"):
        LocalTuner(built, tmp_path)
