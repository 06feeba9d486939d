"""Trial commands survive what the pod does to them: the kubelet's $(VAR) expansion, then Katib's webhook
running the primary container as ``sh -c "<command and args joined by spaces>"``. The wrapped command runs
in a real shell; the programs it starts are the real worker, or stand-ins that record their arguments
for the real worker's argument parser."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dmlops.training.config import TrainConfig, parse_args
from dmlops.tuning.experiment import primary_container, substitute_trial_parameters
from dmlops.tuning.spec import SpecError
from dmlops.tuning.worker_search import worker_experiment
from training.conftest import make_table

SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc"},
    "algorithm": {"algorithmName": "random"}, "maxTrialCount": 2, "parallelTrialCount": 1,
    "parameters": [
        {"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": "0.001", "max": "0.1"}},
        {"name": "hidden_units", "parameterType": "categorical", "feasibleSpace": {"list": ["16", "32, 16"]}},
    ],
}
ASSIGNMENTS = {"learning_rate": "0.02", "hidden_units": "32, 16"}
TRIAL = "tune-abc-1"
# Column names and folder names a user may have: spaces, shell operators, quotes, globs, $, JSON.
NASTY = "x & y; 'q' \"d\" $HOME $(KUBERNETES_SERVICE_HOST) $$ `id` * ? {\"k\": [1]} #c"
RENAMED = {"signal": f"signal {NASTY}", "group": "group|tee", "label": "late > 15?"}


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of a container command or argument, rune by rune as kubernetes
    third_party/forked/golang/expansion/expand.go does: $$ is $, $(NAME) a defined variable's value."""
    out, cursor = [], 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                cursor += 2
                continue
            if following == "(" and ")" in text[cursor + 2:]:
                end = text.index(")", cursor + 2)
                name = text[cursor + 2:end]
                out.append(env.get(name, f"$({name})"))
                cursor = end + 1
                continue
            out.append("$" + following)
            cursor += 2
            continue
        out.append(text[cursor])
        cursor += 1
    return "".join(out)


def katib_wrapped(container: dict, metrics_file: str) -> list[str]:
    """The primary container's command after Katib's pod webhook with the StdOut collector (katib
    pkg/webhook/v1beta1/pod/utils.go, wrapWorkerContainer): ``sh -c`` unless the command already is
    ``sh -c``/``bash -c``, the output redirected to the metrics file, a completion marker, all joined by
    spaces into one argument. The kubelet then expands ``$$$$`` to ``$$`` (the shell's pid)."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[0] in ("sh", "bash") and argv[1] == "-c":
        command, args = argv[:2], argv[2:]
    else:
        command, args = ["sh", "-c"], argv
    folder = os.path.dirname(metrics_file)
    args = [*args, f"1>{metrics_file} 2>&1", "&&", f"echo completed > {folder}/$$$$.pid"]
    # the kubelet expands the container's variables and the service variables it adds to every pod
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1",
           **{item["name"]: item["value"] for item in container.get("env") or [] if "value" in item}}
    return [kubelet_expand(part, env) for part in [*command, " ".join(args)]]


def trial_container(config: TrainConfig, trials_uri: str, workers: int = 1) -> dict:
    experiment = worker_experiment(SEARCH, config, trials_uri, name="tune-abc", namespace="team-a",
                                   num_workers=workers, image="image", in_pods=False)
    trial = {"spec": {**experiment["spec"], "trialTemplate": {
        **experiment["spec"]["trialTemplate"],
        "trialSpec": substitute_trial_parameters(experiment, ASSIGNMENTS, TRIAL),
    }}}
    return primary_container(trial)


def run_in_shell(wrapped: list[str], folder: Path, path_prefix: str) -> subprocess.CompletedProcess:
    assert wrapped[:2] == ["sh", "-c"]
    env = {**os.environ, "PATH": f"{path_prefix}{os.pathsep}{os.environ['PATH']}", "HOME": str(folder)}
    return subprocess.run(wrapped, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def nasty_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data") / f"flights {NASTY}"
    folder.mkdir()
    for name, rows, seed in (("train", 400, 0), ("eval", 200, 1)):
        table = make_table(rows, seed)
        pq.write_table(table.rename_columns([RENAMED.get(column, column) for column in table.column_names]),
                       folder / f"{name}.parquet")
    return folder


def nasty_config(data: Path, **changes) -> TrainConfig:
    return TrainConfig(
        train_uri=str(data / "train.parquet"), eval_uri=str(data / "eval.parquet"), label=RENAMED["label"],
        export_uri="trial", numeric_features=[RENAMED["signal"], "count"], categorical_features=[RENAMED["group"]],
        epochs=1, batch_size=128, **changes,
    )


@pytest.mark.parametrize("kind_workers", [("torch-ddp", 1), ("torch-ddp", 2), ("tf-multiworker", 2),
                                          ("horovod-torch", 2)])
def test_every_trial_kind_passes_its_arguments_through_katibs_sh_c_unchanged(nasty_data, tmp_path, kind_workers):
    """Stand-ins for python and horovodrun record their argv; the worker's real parser reads it."""
    recorder = tmp_path / "bin"
    recorder.mkdir()
    for program in ("python", "horovodrun"):
        (recorder / program).write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"json.dump(sys.argv[1:], open({str(tmp_path / program)!r} + '.argv', 'w'))\n")
        (recorder / program).chmod(0o755)
    strategy, workers = kind_workers
    config = nasty_config(nasty_data, strategy=strategy, checkpoint_uri="s3://bucket/ckpt?versionId=3&x=1")
    trials_uri = f"s3://bucket/{NASTY}/trials"  # the checkpoint and trials URIs: ?, &, spaces, quotes
    container = trial_container(config, trials_uri, workers)
    (tmp_path / "katib").mkdir()
    finished = run_in_shell(katib_wrapped(container, str(tmp_path / "katib" / "metrics.log")), tmp_path, str(recorder))
    assert finished.returncode == 0, finished.stderr
    markers = list((tmp_path / "katib").glob("*.pid"))
    assert len(markers) == 1 and markers[0].read_text() == "completed\n"

    if strategy.startswith("horovod"):
        launcher_argv = json.loads((tmp_path / "horovodrun.argv").read_text())
        argv = launcher_argv[launcher_argv.index("python") + 1:]
    else:
        argv = json.loads((tmp_path / "python.argv").read_text())
    assert argv[:2] == ["-m", "dmlops.training.worker"]
    expected = TrainConfig(**{**config.__dict__, "learning_rate": 0.02, "hidden_units": [32, 16],
                              "export_uri": f"{trials_uri}/{TRIAL}"})
    run = parse_args(argv[2:])
    assert TrainConfig.from_run(run, run.entrypoint_args) == expected


def test_a_katib_wrapped_trial_trains_on_data_at_a_path_full_of_shell_characters(nasty_data, tmp_path):
    """The real worker, started by the real shell from the Katib-wrapped command, trains and exports."""
    config = nasty_config(nasty_data)
    trials = tmp_path / f"trials {NASTY}"
    container = trial_container(config, str(trials))
    (tmp_path / "katib").mkdir()
    wrapped = katib_wrapped(container, str(tmp_path / "katib" / "metrics.log"))
    finished = run_in_shell(wrapped, tmp_path, os.path.dirname(sys.executable))
    log = (tmp_path / "katib" / "metrics.log").read_text()
    assert finished.returncode == 0, log
    assert any(line.startswith("auc=") for line in log.splitlines())
    metadata = json.loads((trials / TRIAL / "metadata.json").read_text())
    assert metadata["label"] == RENAMED["label"]
    assert metadata["inputs"]["numeric"]["columns"] == [RENAMED["signal"], "count"]
    assert metadata["hyperparameters"]["hidden_units"] == [32, 16]
    assert metadata["hyperparameters"]["learning_rate"] == 0.02


def test_a_searched_value_with_a_single_quote_is_refused_as_it_would_end_its_quoted_word(nasty_data):
    search = {**SEARCH, "parameters": [
        {"name": "hidden_units", "parameterType": "categorical", "feasibleSpace": {"list": ["16", "32'"]}}]}
    with pytest.raises(SpecError, match=r"parameter 'hidden_units': feasibleSpace.list value \"32'\" has a single quote"):
        worker_experiment(search, nasty_config(nasty_data), "s3://b/t", name="tune-abc", namespace="team-a",
                          image="image", in_pods=False)


def user_train(learning_rate: float = 0.1, note: str = "it's \"$HOME\" $(KUBERNETES_SERVICE_HOST) `id` #"):
    from dmlops.training import runtime

    runtime.report({"score": -abs(learning_rate - 0.03), "note_length": len(note)}, final=True)


def test_a_user_function_source_and_its_arguments_reach_the_worker_unchanged(tmp_path):
    """A function's source (quotes, $, backquotes, newlines) and the searched parameter as its argument."""
    from dmlops.training.config import RunConfig
    from dmlops.training.worker import function_entrypoint

    recorder = tmp_path / "bin"
    recorder.mkdir()
    (recorder / "python").write_text(
        f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(tmp_path / 'python.argv')!r}, 'w'))\n")
    (recorder / "python").chmod(0o755)
    source = function_entrypoint(user_train)
    run = RunConfig(export_uri="-", entrypoint=source, entrypoint_args={"note": NASTY, "layers": [32, 16]},
                    train_uri=f"s3://bucket/{NASTY}/train")
    search = {**SEARCH, "objective": {"type": "maximize", "objectiveMetricName": "score"},
              "parameters": SEARCH["parameters"][:1]}
    experiment = worker_experiment(search, run, "s3://bucket/trials", name="tune-abc", namespace="team-a",
                                   image="image", in_pods=False)
    trial = {"spec": {**experiment["spec"], "trialTemplate": {
        **experiment["spec"]["trialTemplate"],
        "trialSpec": substitute_trial_parameters(experiment, {"learning_rate": "0.02"}, TRIAL)}}}
    (tmp_path / "katib").mkdir()
    finished = run_in_shell(katib_wrapped(primary_container(trial), str(tmp_path / "katib" / "metrics.log")),
                            tmp_path, str(recorder))
    assert finished.returncode == 0, finished.stderr
    argv = json.loads((tmp_path / "python.argv").read_text())
    received = parse_args(argv[2:])
    assert received.entrypoint == source and received.train_uri == run.train_uri
    assert received.entrypoint_args == {"note": NASTY, "layers": [32, 16], "learning_rate": 0.02}
    assert received.export_uri == f"s3://bucket/trials/{TRIAL}"
