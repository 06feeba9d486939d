"""The console of a local run (`dmlops run`): one line per step as it starts and ends, a live display while
a step runs, and each step's full executor log in a file of the run folder.

kfp.local reports a run in two channels, both read here without patching kfp:

- records on the root logger (``kfp/local/task_dispatcher.py`` and ``importer_handler.py`` log
  "Executing task 'x'" and "Task 'x' finished with status S"; ``pipeline_orchestrator.py`` logs the
  pipeline's start and end). ``logging_utils.local_logger_context`` swaps the root logger's handlers for
  each task but keeps its filters, so a filter on the root logger sees every record and keeps it from the
  handler: it turns the task records into console lines and writes the rest to the step's log;
- the task's subprocess output, which ``subprocess_task_handler.run_local_subprocess`` prints to
  ``sys.stdout`` line by line: stdout is redirected to the running step's log file.

Two warnings kfp.local gives for every task do not apply to dmlops's components and are ignored: the
"non-Python base image" warning of ``subprocess_task_handler.validate_image`` (a dmlops image runs the same
installed package the local run uses) and the "settings ['display_name'] have no effect" warning of
``orchestrator/task_executor._warn_local_only_noops`` (this console shows the display names).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_STARTED = re.compile(r"^Executing task '([^']+)'")
_TASK_FINISHED = re.compile(r"^Task '([^']+)' finished with status (\w+)")
_TASK_CACHED = re.compile(r"^Task (\S+) cache hit")
IGNORED_KFP_WARNINGS = (
    r"You may be attemping to run a task that uses custom or non-Python base image",
    r"Task '[^']+': settings \['display_name'\] have no effect",
)
FAILED_LOG_LINES = 40


@dataclass
class Step:
    """One task of the run as the console saw it."""

    task: str
    name: str
    started: float
    log_path: Path
    status: str = "RUNNING"
    seconds: float = 0.0
    rows: int | None = None
    last_line: str = ""


def main_output_rows(executor_output: Path) -> int | None:
    """The rows of a task's main output: the largest ``rows`` metadata among its output artifacts (a
    dataset beside its quarantine, train beside eval), from its executor_output.json."""
    try:
        outputs = json.loads(executor_output.read_text()).get("artifacts", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    counts = [int(artifact["metadata"]["rows"]) for entry in outputs.values() for artifact in entry.get("artifacts", [])
              if isinstance(artifact.get("metadata", {}).get("rows"), (int, float))]
    return max(counts, default=None)


class RunConsole(logging.Filter):
    """Shows a kfp.local run step by step on ``console`` and keeps each step's log in a file.

    Use :meth:`attached` around the pipeline call; after it, :attr:`failed_step` names the step that
    failed (if any) and :meth:`report_failure` prints its last log lines with the log file's path.
    """

    def __init__(self, console: Console, output_root: Path, step_names: dict[str, str], *, verbose: bool = False):
        super().__init__()
        self.console = console
        self.output_root = output_root
        self.step_names = step_names
        self.verbose = verbose
        self.steps: list[Step] = []
        self.current: Step | None = None
        self.run_dir: Path | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="dmlops-run-logs-"))
        self._existing = set(output_root.iterdir()) if output_root.exists() else set()
        self._progress: Progress | None = None
        self._task_id = None

    # -- what kfp.local says -------------------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        """Turn kfp.local's task records into console lines; everything else goes to the step's log."""
        message = _ANSI.sub("", record.getMessage())
        if started := _TASK_STARTED.match(message):
            self._start(started.group(1))
        elif finished := _TASK_FINISHED.match(message):
            self._finish(finished.group(1), finished.group(2))
        elif cached := _TASK_CACHED.match(message):
            self.console.print(f"  [dim]= {self._name(cached.group(1))}: cached[/dim]", highlight=False)
        elif self.current is not None:
            self.write(message + "\n")
        elif record.levelno >= logging.WARNING:
            self.console.print(Text(message, style="yellow"))
        return False

    def write(self, text: str) -> int:
        """The redirected stdout: the running step's subprocess output (and kfp's log lines) to its log."""
        if self.verbose:
            self.console.out(text, end="", highlight=False)
        if self.current is not None:
            with self.current.log_path.open("a") as log:
                log.write(text)
            stripped = _ANSI.sub("", text).strip()
            if stripped:
                self.current.last_line = stripped
                self._refresh()
        return len(text)

    # -- steps -------------------------------------------------------------------------------------------

    def _name(self, task: str) -> str:
        return self.step_names.get(task, task)

    def _start(self, task: str) -> None:
        step = Step(task=task, name=self._name(task), started=time.monotonic(), log_path=self._log_dir / f"{task}.log")
        step.log_path.touch()
        self.steps.append(step)
        self.current = step
        self.console.print(f"  [cyan]▶[/cyan] {step.name}", highlight=False)
        if self._progress is not None:
            self._task_id = self._progress.add_task(step.name, total=None, last="")

    def _finish(self, task: str, status: str) -> None:
        step = self.current if self.current is not None and self.current.task == task else None
        if step is None:
            return
        step.status = status
        step.seconds = time.monotonic() - step.started
        self.current = None
        if self._progress is not None and self._task_id is not None:
            self._progress.remove_task(self._task_id)
            self._task_id = None
        run_dir = self._find_run_dir()
        if status == "SUCCESS" and run_dir is not None:
            step.rows = main_output_rows(run_dir / task / "executor_output.json")
        rows = f"  {step.rows:,} rows" if step.rows is not None else ""
        if status == "SUCCESS":
            self.console.print(f"  [green]✓[/green] {step.name}  {step.seconds:.1f} s{rows}", highlight=False)
        else:
            self.console.print(f"  [red]✗ {step.name}  failed after {step.seconds:.1f} s[/red]", highlight=False)

    def _refresh(self) -> None:
        if self._progress is not None and self._task_id is not None and self.current is not None:
            self._progress.update(self._task_id, last=self.current.last_line[:80])

    def _find_run_dir(self) -> Path | None:
        if self.run_dir is None and self.output_root.exists():
            new = [path for path in self.output_root.iterdir() if path.is_dir() and path not in self._existing]
            self.run_dir = max(new, key=lambda path: path.stat().st_mtime) if new else None
        return self.run_dir

    @property
    def failed_step(self) -> Step | None:
        """The step that ended in failure, or was running when the run stopped."""
        return next((step for step in self.steps if step.status != "SUCCESS"), None)

    # -- lifetime ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def attached(self) -> Iterator[RunConsole]:
        """Receive kfp.local's records and output while the pipeline runs; then move the step logs into the
        run folder (``<run>/logs/<task>.log``)."""
        root = logging.getLogger()
        root.addFilter(self)
        live = self.console.is_terminal and not self.verbose
        if live:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                TextColumn("[dim]{task.fields[last]}[/dim]"), console=self.console, transient=True,
                redirect_stdout=False,
            )
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(self), \
                    (self._progress or contextlib.nullcontext()):
                for message in IGNORED_KFP_WARNINGS:
                    warnings.filterwarnings("ignore", message=message)
                yield self
        finally:
            root.removeFilter(self)
            self._progress = None
            self._keep_logs()

    def _keep_logs(self) -> None:
        run_dir = self._find_run_dir()
        if run_dir is None:
            self.console.print(f"step logs: {self._log_dir}", highlight=False)
            return
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        for step in self.steps:  # a retried task appends to its first attempt's log
            target = logs / step.log_path.name
            if step.log_path.exists():
                shutil.move(step.log_path, target)
            step.log_path = target
        shutil.rmtree(self._log_dir, ignore_errors=True)
        self._log_dir = logs

    def report_failure(self) -> None:
        """The failed step's last log lines (its own error) and where its whole log is."""
        step = self.failed_step
        if step is None:
            return
        lines = _ANSI.sub("", step.log_path.read_text(errors="replace")).rstrip().splitlines()
        tracebacks = [index for index, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"]
        first = max(tracebacks[-1] if tracebacks else 0, len(lines) - FAILED_LOG_LINES)
        tail = textwrap.dedent("\n".join(lines[first:]))
        self.console.print(Text(f"last lines of {step.name}'s log:", style="bold red"))
        self.console.print(Text(textwrap.indent(tail, "  ")), soft_wrap=True, highlight=False)
        self.console.print(f"full log of {step.name}: {step.log_path}", soft_wrap=True, highlight=False)

    # io.TextIOBase's surface that print() and logging.StreamHandler use on sys.stdout.
    def flush(self) -> None:
        """Nothing is buffered."""

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


def pipeline_step_names(pipeline_spec) -> dict[str, str]:
    """Every task's display name by task name, through nested pipelines."""
    dags = [pipeline_spec.root.dag] + [component.dag for component in pipeline_spec.components.values()
                                       if component.WhichOneof("implementation") == "dag"]
    return {task: spec.task_info.name for dag in dags for task, spec in dag.tasks.items()}
