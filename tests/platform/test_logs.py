"""dmlops's log lines (dmlops.platform.logs): one JSON object a line with ECS field names, each field of one
type in every line; from a component that kfp.local runs, a training worker, the launcher against a real
API server, and the suite-wide check that no field changes type (tests/log_copy.py)."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest
from kfp import local

from dmlops.components import ingest
from dmlops.platform import logs
from dmlops.training.config import RunConfig
from dmlops.training.launch import worker_command
from dmlops.training.worker import function_entrypoint
from log_copy import json_lines, mistyped_fields, type_conflicts


def formatted(*args, exc_info=None, **extra) -> dict:
    record = logging.LogRecord("dmlops.test", logging.INFO, __file__, 1, *args, exc_info=exc_info)
    record.__dict__.update(extra)
    return json.loads(logs.EcsJsonFormatter().format(record))


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if key not in (logs.FORMAT_ENV, "_KFP_RUNTIME")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_a_record_is_one_line_of_ecs_fields_each_of_its_declared_type():
    with logs.trace("req-1"):
        line = formatted("%d rows from %s", (3, "a.csv"), **{
            "http.response.status_code": "404", "dmlops.rows": 2.0, "labels.model_version": 7,
            "attempt": 3, "event.duration": "many"})
    assert datetime.fromisoformat(line["@timestamp"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert line["@timestamp"].endswith("Z")
    assert {key: line[key] for key in ("log.level", "message", "log.logger", "trace.id")} == {
        "log.level": "info", "message": "3 rows from a.csv", "log.logger": "dmlops.test", "trace.id": "req-1"}
    # declared fields coerced to their type; an undeclared one, or one that cannot be coerced: a string label
    assert line["http.response.status_code"] == 404 and line["dmlops.rows"] == 2
    assert line["labels.model_version"] == "7" and line["labels.attempt"] == "3"
    assert "event.duration" not in line and line["labels.event_duration"] == "many"
    assert mistyped_fields(line) == []
    assert "trace.id" not in formatted("outside a request", None)


def test_an_exception_is_logged_as_error_fields():
    try:
        raise KeyError("no column 'label'")
    except KeyError:
        line = formatted("step failed", None, exc_info=sys.exc_info())
    assert line["error.type"] == "KeyError" and line["error.message"] == "\"no column 'label'\""
    assert line["error.stack_trace"].startswith("Traceback (most recent call last):")
    assert line["error.stack_trace"].rstrip().endswith("KeyError: \"no column 'label'\"")
    assert mistyped_fields(line) == []


def test_a_field_that_changes_type_is_named_with_both_types_and_a_line_of_each():
    lines = ['{"labels.model_version": "3", "dmlops.rows": 1}', '{"dmlops.rows": 2}', "not json",
             '{"dmlops.rows": "2", "labels.model_version": "4"}', '{"dmlops.rows": 2.5}']
    conflicts, unreadable, count = type_conflicts(lines)
    assert count == 5 and unreadable == ["not json"]
    (conflict,) = conflicts
    assert (conflict.field, conflict.first_type, conflict.other_type) == ("dmlops.rows", "integer", "string")
    assert str(conflict) == (f"log field 'dmlops.rows' is integer in\n  {lines[0]}\nbut string in\n  {lines[3]}")


def test_json_unless_a_terminal_or_asked_for_text():
    code = """
        from dmlops.platform import logs
        import logging
        logs.configure("demo", labels={"model_name": "m"})
        logging.getLogger("x").info("hello")
    """
    (line,) = json_lines(run_python(code).stdout)
    assert (line["service.name"], line["labels.model_name"], line["message"]) == ("demo", "m", "hello")
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    hello\n", run_python(code, DMLOPS_LOG_FORMAT="text").stdout)
    parent, child = pty.openpty()
    with os.fdopen(parent, "rb", buffering=0) as terminal:
        environ = {key: value for key, value in os.environ.items() if key != logs.FORMAT_ENV}
        process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=child, env=environ)
        os.close(child)
        process.wait(timeout=120)
        shown = terminal.read(4096).decode()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    hello\r\n", shown)


def test_processes_sharing_the_copy_file_never_split_each_others_lines(tmp_path):
    copy = tmp_path / "copy.jsonl"
    code = """
        import logging, sys
        from dmlops.platform import logs
        logs.configure(f"writer-{sys.argv[1]}", stream=open("/dev/null", "w"))
        for index in range(400):
            logging.getLogger("x").info("%s", "x" * 3000, extra={"dmlops.rows": index})
    """
    environ = {**os.environ, logs.COPY_ENV: str(copy)}
    writers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(number)], env=environ)
               for number in range(4)]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * 4
    lines = [json.loads(line) for line in copy.read_text().splitlines()]
    assert len(lines) == 1600
    for number in range(4):
        assert [line["dmlops.rows"] for line in lines if line["service.name"] == f"writer-{number}"] == list(range(400))


def test_a_kfp_task_logs_as_its_component_with_the_run_and_task_it_is_given():
    executor_input = json.dumps({"inputs": {"parameterValues": {"run_id": "run-42", "task_name": "train-2"}}})
    code = f"""
        import sys
        sys.argv = ["executor_main", "--executor_input", {executor_input!r}, "--function_to_execute", "train"]
        import dmlops
        raise ValueError("learning rate must be positive")
    """
    run = run_python(code, _KFP_RUNTIME="true", KFP_POD_NAME="flights-abc-123")
    assert run.returncode == 1
    (line,) = json_lines(run.stdout)
    assert {key: line[key] for key in ("service.name", "trace.id", "labels.pipeline_run", "labels.task", "labels.pod",
                                       "log.level", "error.type", "error.message")} == {
        "service.name": "train", "trace.id": "run-42", "labels.pipeline_run": "run-42", "labels.task": "train-2",
        "labels.pod": "flights-abc-123", "log.level": "critical", "error.type": "ValueError",
        "error.message": "learning rate must be positive"}
    assert mistyped_fields(line) == []
    assert run_python("import dmlops, logging; logging.getLogger().warning('plain')").stderr == "plain\n"


def logs_from_user_code(greeting: str):
    import logging

    logging.getLogger("user.model").info("hello %s", greeting, extra={"epoch": 3})


def test_a_training_workers_own_records_are_json_lines(tmp_path):
    config = RunConfig(export_uri=str(tmp_path / "export"), entrypoint=function_entrypoint(logs_from_user_code),
                       entrypoint_args={"greeting": "world"})
    environ = {key: value for key, value in os.environ.items() if key != logs.FORMAT_ENV}
    run = subprocess.run(worker_command(config), env={**environ, "RANK": "0"}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in json_lines(run.stdout) if line["log.logger"] == "user.model"]
    assert (line["message"], line["service.name"], line["labels.rank"], line["labels.epoch"]) == (
        "hello world", "dmlops-worker", "0", "3")


@pytest.fixture
def local_runner(tmp_path, monkeypatch):
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)


def test_a_component_run_by_kfp_local_logs_json_lines(local_runner, tmp_path, capfd):
    source = tmp_path / "events.csv"
    source.write_bytes(b"id,name\n")  # header only: ingest warns
    ingest(source=str(source))
    source.write_bytes(b"id,name\n1,a\n2,b,c\n")  # a bad row: the step fails
    with pytest.raises(RuntimeError):
        ingest(source=str(source), delimiter=",")
    lines = json_lines(capfd.readouterr().out)
    assert {line["service.name"] for line in lines} == {"ingest"}
    assert {tuple(mistyped_fields(line)) for line in lines} == {()}
    (warned,) = [line for line in lines if line["log.level"] == "warning"]
    assert warned["log.logger"] == "dmlops.data.ingest" and "no data rows (header only)" in warned["message"]
    assert any(line["message"].startswith("Wrote executor output file") for line in lines)  # KFP's own line
    (failed,) = [line for line in lines if "error.type" in line]
    assert failed["error.type"] == "IngestError" and failed["log.level"] == "critical"
    assert "raise max_bad_fraction" in failed["error.message"]
    assert failed["message"].startswith("ingest failed: IngestError: ")


LAUNCH = """
    import logging, sys
    from dmlops.platform import LaunchTimeout
    from dmlops.platform.kubernetes import KubernetesLauncher
    from dmlops.training.jobs import pytorch_job

    job = pytorch_job("logged-job", sys.argv[1], image="img", command=["python", "-m", "worker"], workers=1)
    try:
        KubernetesLauncher(poll_interval_s=0.05, watch_window_s=2).run(job, timeout_s=1)
    except LaunchTimeout:
        logging.getLogger("launch-script").exception("the job did not finish")
"""


def test_the_launcher_logs_its_progress_as_json_lines(kube_api, kube_namespace):
    """Against the real API server (envtest; skipped without it): no controller runs the job, so it times out."""
    environ = {key: value for key, value in os.environ.items() if key != "KUBERNETES_SERVICE_HOST"}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(LAUNCH), kube_namespace], capture_output=True,
                         text=True, timeout=120, env={**environ, "KUBECONFIG": str(kube_api.kubeconfig),
                                                      logs.FORMAT_ENV: "json"})
    assert run.returncode == 0, run.stderr
    lines = json_lines(run.stdout)
    assert {tuple(mistyped_fields(line)) for line in lines} == {()}
    assert {line["service.name"] for line in lines} == {"dmlops-launcher"}
    messages = [line["message"] for line in lines if line["log.logger"] == "dmlops.platform.kubernetes"]
    ref = f"PyTorchJob {kube_namespace}/logged-job"
    assert messages[0].startswith(f"{ref}: created (uid ")
    assert f"{ref}: timed out; deleting it so it does not keep running" in messages
    assert messages[-1] == f"{ref}: deleted (Foreground)"
    (failed,) = [line for line in lines if "error.type" in line]
    assert failed["error.type"] == "LaunchTimeout" and ref in failed["error.message"]
