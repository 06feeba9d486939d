"""A local study over the user's own entrypoint: each trial runs the real worker with the searched
hyperparameters as the function's arguments, and its final report is the trial's objective."""

from dmlops.training.config import RunConfig
from dmlops.training.launch import read_export_metadata
from dmlops.training.worker import function_entrypoint
from dmlops.tuning.worker_search import chosen_hyperparameters, run_search, worker_experiment


def quadratic(learning_rate: float = 0.5, width: int = 1, offset: float = 0.0):
    import tempfile
    from pathlib import Path

    from dmlops.training import runtime

    runtime.setup()
    runtime.report({"score": offset - (learning_rate - 0.3) ** 2 - (width - 4) ** 2}, final=True)
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "weights.txt").write_text(f"{learning_rate} {width}\n")
        runtime.export(directory, framework="text", inputs={}, model_files={"weights": "weights.txt"})


SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "score"},
    "algorithm": {"algorithmName": "grid"}, "parallelTrialCount": 2,
    "parameters": [
        {"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.3", "step": "0.2"}},
        {"name": "width", "parameterType": "categorical", "feasibleSpace": {"list": ["2", "4"]}},
    ],
}


def test_trials_run_the_users_function_with_the_searched_arguments(tmp_path):
    run = RunConfig(export_uri="-", entrypoint=function_entrypoint(quadratic), entrypoint_args={"offset": 10.0})
    experiment = worker_experiment(SEARCH, run, str(tmp_path / "trials"), name="tune-user", namespace="default",
                                   image="image", in_pods=False)
    result = run_search(experiment, "local", tmp_path / "work", timeout_s=120)
    assert result.count("Succeeded") == 4
    assert result.best_parameters == {"learning_rate": 0.3, "width": "4"} and result.best_objective == 10.0
    best = read_export_metadata(str(tmp_path / "trials" / result.best_trial))
    assert best["metrics"] == {"score": 10.0} and best["model_files"] == {"weights": "weights.txt"}
    assert chosen_hyperparameters(result, {"learning_rate": 0.5, "width": 1, "offset": 10.0}) == {
        "learning_rate": 0.3, "width": 4, "offset": 10.0}
