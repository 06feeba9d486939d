"""`dmlops run | compile | submit | serve`: run a pipeline locally, write the component and pipeline YAML,
submit a pipeline to Kubeflow Pipelines, or list and stop the local model endpoints a run left serving."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)
if not console.is_terminal:  # a pipe or a log file has no width to fit: tables keep one line per row
    console.width = max(console.width, 160)


def _parse_params(pairs: list[str]) -> dict[str, object]:
    """``name=value`` pairs; values are parsed as JSON when they can be, else kept as strings."""
    params: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param {pair!r}: expected NAME=VALUE")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def run_pipeline(name: str, params: dict[str, object], output_dir: Path, *, verbose: bool = False) -> Path:
    """Run a registered pipeline with kfp.local's SubprocessRunner; return the run's folder."""
    from dmlops.pipelines import PIPELINES

    if name not in PIPELINES:
        raise SystemExit(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}")
    return run_local(PIPELINES[name], params, output_dir, verbose=verbose)


def run_local(pipeline, params: dict[str, object], output_dir: Path, *, verbose: bool = False) -> Path:
    """Run ``pipeline`` with kfp.local's SubprocessRunner, showing it step by step (each step's full log
    goes to ``<run>/logs/``, printed only with ``verbose``); return the run's folder. A failed step's last
    log lines are printed and a RuntimeError is raised."""
    from kfp import local

    from dmlops.console import RunConsole, pipeline_step_names
    from dmlops.platform.logs import human_lines_in_children

    root = output_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["DMLOPS_OUTPUT_DIR"] = str(root)  # the steps' default model registry lives here
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    step_names = pipeline_step_names(pipeline.pipeline_spec)
    run_console = RunConsole(console, root, step_names, verbose=verbose)
    started = time.monotonic()
    try:
        with run_console.attached(), human_lines_in_children():
            pipeline(**params)
    except RuntimeError:
        run_console.report_failure()
        raise
    run_dir = run_console.run_dir
    print_summary(run_dir, time.monotonic() - started, step_names)
    print_endpoints()
    return run_dir


def print_endpoints() -> bool:
    """The local endpoints that are serving, and how to query and stop them; whether any is."""
    from dmlops.serving.local import list_endpoints

    serving = [state for state in list_endpoints() if state.stable is not None]
    for state in serving:
        console.print(f"endpoint [bold]{state.endpoint}[/bold] serves at {state.stable.predict_url} "
                      "(stop with: dmlops serve --stop); try:", soft_wrap=True)
        console.print(state.query_command(), soft_wrap=True, highlight=False)
    return bool(serving)


def print_summary(run_dir: Path, seconds: float, step_names: dict[str, str]) -> None:
    """A table of every step (by its display name): the rows of its main output and its output artifacts
    (``<step folder>/{<output>,...}`` under the run's folder)."""
    from dmlops.console import main_output_rows

    steps = sorted(run_dir.rglob("executor_output.json"), key=lambda path: path.stat().st_mtime)
    console.print(f"{len(steps)} steps in {seconds:.1f} s; artifacts and step logs (logs/) under {run_dir}",
                  soft_wrap=True, highlight=False)
    table = Table(box=None, expand=False)
    table.add_column("step", no_wrap=True)
    table.add_column("rows", no_wrap=True, justify="right")
    table.add_column("artifacts", overflow="fold")
    for output_file in steps:
        outputs = sorted(json.loads(output_file.read_text()).get("artifacts", {}))
        rows = main_output_rows(output_file)
        step = output_file.parent.name
        table.add_row(step_names.get(step, step), "" if rows is None else f"{rows:,}",
                      f"{step}/{{{','.join(outputs)}}}" if outputs else f"{step}/")
    console.print(table)


def _default_text(value: object, width: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def pipelines_help() -> str:
    """The registered pipelines, each with its parameters and their defaults."""
    from dmlops.pipelines import PIPELINES

    lines = ["pipelines:"]
    for name, pipeline in sorted(PIPELINES.items()):
        lines.append(f"  {name}: {pipeline.description or ''}".rstrip())
        for param, spec in (pipeline.component_spec.inputs or {}).items():
            default = "(required)" if spec.default is None and not spec.optional else f"= {_default_text(spec.default)}"
            lines.append(f"    {param} ({spec.type}) {default}")
    lines.append("set one with --param NAME=VALUE (JSON values are parsed)")
    return "\n".join(lines)


class _RunHelp(argparse.Action):
    """``dmlops run --help``: the usual help, then the registered pipelines (built only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.epilog = pipelines_help()
        parser.print_help()
        parser.exit()


def cron_with_seconds(expression: str) -> str:
    """KFP schedules take 6-field cron (seconds first); a 5-field expression runs at second 0."""
    parts = expression.split()
    if len(parts) == 5:
        return "0 " + expression
    if len(parts) == 6:
        return expression
    raise SystemExit(f"--schedule {expression!r}: expected a cron expression of 5 or 6 fields")


def submit_pipeline(name: str, host: str, *, params: dict[str, object], experiment: str, namespace: str | None,
                    schedule: str | None, settings_path: Path | None, run_name: str | None) -> str:
    """Compile a registered pipeline with the cluster settings and start a run (or a recurring run) on
    Kubeflow Pipelines at ``host``; return the run's (or recurring run's) id."""
    import kfp
    from kfp import compiler

    from dmlops.pipelines import PIPELINES
    from dmlops.platform.cluster_settings import ClusterSettings, build_pipeline

    if name not in PIPELINES:
        raise SystemExit(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}")
    settings = ClusterSettings.from_yaml(settings_path) if settings_path else ClusterSettings()
    pipeline = build_pipeline(PIPELINES[name], settings)
    client = kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)
    with tempfile.TemporaryDirectory() as folder:
        package = str(Path(folder) / f"{name}.yaml")
        compiler.Compiler().compile(pipeline, package)
        if schedule:
            found = client.create_experiment(name=experiment, namespace=namespace)
            recurring = client.create_recurring_run(
                experiment_id=found.experiment_id, job_name=run_name or f"{name}-scheduled",
                cron_expression=cron_with_seconds(schedule), params=params, pipeline_package_path=package,
            )
            console.print(f"scheduled {name} ({schedule}) as recurring run {recurring.recurring_run_id}")
            return recurring.recurring_run_id
        result = client.create_run_from_pipeline_package(
            package, arguments=params, run_name=run_name, experiment_name=experiment, namespace=namespace,
        )
        console.print(f"started run {result.run_id} of {name} in experiment {experiment!r} on {host}")
        return result.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmlops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a pipeline locally with kfp.local", add_help=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("-h", "--help", action=_RunHelp, help="show this help and the registered pipelines")
    run.add_argument("pipeline", help="pipeline name, e.g. flights")
    run.add_argument("-v", "--verbose", action="store_true", help="print every step's executor log as it runs")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter")
    run.add_argument("--output-dir", type=Path, default=Path("local_outputs"), help="where runs keep artifacts")

    compile_ = commands.add_parser("compile", help="write components/ and pipelines/ YAML")
    compile_.add_argument("--check", action="store_true", help="fail when checked-in YAML is stale")
    compile_.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    compile_.add_argument("--registry", help="image registry to compile against (default ghcr.io/dmlops)")

    submit = commands.add_parser("submit", help="submit a pipeline to Kubeflow Pipelines")
    submit.add_argument("pipeline", help="pipeline name, e.g. flights")
    submit.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    submit.add_argument("--experiment", default="dmlops", help="experiment name (created when missing)")
    submit.add_argument("--namespace", help="Kubeflow profile namespace (multi-user clusters)")
    submit.add_argument("--schedule", help="cron expression (5 or 6 fields) for a recurring run")
    submit.add_argument("--run-name", help="name of the run or recurring run")
    submit.add_argument("--settings", type=Path, help="cluster settings YAML (secrets, PVCs, nodes, GPUs)")
    submit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter")

    serve = commands.add_parser("serve", help="list the local model endpoints, or stop them")
    serve.add_argument("--stop", nargs="?", const="", metavar="ENDPOINT", help="stop one endpoint (all without a name)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.stop is None:
            if not print_endpoints():
                console.print("no local endpoint is serving")
            return 0
        from dmlops.serving.local import stop_endpoints

        stopped = stop_endpoints(args.stop)
        console.print(f"stopped {', '.join(stopped)}" if stopped else "no local endpoint was serving")
        return 0
    if args.command == "submit":
        submit_pipeline(args.pipeline, args.host, params=_parse_params(args.param), experiment=args.experiment,
                        namespace=args.namespace, schedule=args.schedule, settings_path=args.settings,
                        run_name=args.run_name)
        return 0
    if args.command == "run":
        try:
            run_pipeline(args.pipeline, _parse_params(args.param), args.output_dir, verbose=args.verbose)
        except RuntimeError as failed:  # kfp.local: a step failed; its own error is printed above
            console.print(Text.from_ansi(str(failed), style="red"), soft_wrap=True)
            return 1
        return 0
    if args.registry:
        os.environ["DMLOPS_REGISTRY"] = args.registry
    from dmlops.catalog import check_compiled, compile_all

    if args.check:
        problems = check_compiled(args.repo)
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        if problems:
            console.print("run `dmlops compile` and commit components/ and pipelines/")
            return 1
        console.print("generated YAML is up to date")
        return 0
    for path in compile_all(args.repo):
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
