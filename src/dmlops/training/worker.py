"""The distributed training worker: ``python -m dmlops.training.worker --strategy ... --entrypoint ...``.

Every worker process runs this same entry point; the launcher (the local backend, PyTorchJob, TFJob,
MPIJob or TrainJob) tells it its place through the environment. It installs the run's
``packages_to_install`` that are missing, gives the run's settings to the user's code as ``DMLOPS_*``
variables (:mod:`dmlops.training.runtime`) and calls the entrypoint with its arguments:

- ``package.module:function``: the function, called with the arguments as keywords;
- ``path/to/script.py`` (or ``package.module``): run as ``__main__`` with the arguments as
  ``--name value`` in ``sys.argv``;
- a function's source (:func:`function_entrypoint`, as Kubeflow Trainer's ``CustomTrainer`` carries
  ``func``): the source is executed and its last top-level function called with the arguments.

Exit codes say whether a restart can help (training-operator's ``ExitCode`` restart policy retries
128-255 only): :data:`EXIT_BAD_INPUT` and :data:`EXIT_USER_ERROR` are permanent, with the error and the
user's traceback printed; :data:`EXIT_INFRASTRUCTURE` (a lost peer, a broken connection) is retried,
as is a worker killed by a signal.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import linecache
import os
import runpy
import subprocess
import sys
import textwrap
import traceback
from typing import Any, Callable

from packaging.requirements import Requirement

from dmlops.data.errors import DataError
from dmlops.platform import logs
from dmlops.training.config import RunConfig, RunSource, argument_flags, parse_args
from dmlops.training.runtime import run_environment

EXIT_BAD_INPUT = 2  # the data or the arguments cannot train: permanent
EXIT_USER_ERROR = 3  # the user's code raised: permanent
EXIT_INFRASTRUCTURE = 200  # a peer or the network was lost: restart from the checkpoint
# Errors of a lost peer or connection, by class name (torch.distributed, Horovod, TensorFlow collectives).
INFRASTRUCTURE_ERRORS = frozenset({
    "DistBackendError", "DistNetworkError", "DistStoreError", "HorovodInternalError", "UnavailableError",
    "DeadlineExceededError", "AbortedError",
})
INFRASTRUCTURE_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def function_entrypoint(function: Callable[..., Any]) -> str:
    """The source of ``function`` as an ``entrypoint`` value: it travels with the step and runs on every
    worker without an image of the user's own. Imports the function needs go inside its body."""
    return textwrap.dedent(inspect.getsource(function))


def is_function_source(entrypoint: str) -> bool:
    return "\n" in entrypoint.strip() or entrypoint.lstrip().startswith(("def ", "async def ", "@"))


def missing_packages(requirements: list[str]) -> list[str]:
    """The requirements that the installed distributions do not satisfy."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def install_packages(requirements: list[str]) -> None:
    """``pip install`` the requirements not yet satisfied (as Trainer's ``packages_to_install``)."""
    missing = missing_packages(requirements)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *missing],
                       check=True)


_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def call_function(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Call ``function`` with ``arguments``, each given the type of its ``int``/``float``/``str``
    annotation (a KFP dict brings its ints as floats: ``2.0`` becomes ``2``)."""
    parameters = inspect.signature(function).parameters
    typed = {}
    for name, value in arguments.items():
        annotation = parameters[name].annotation if name in parameters else None
        kind = _SCALARS.get(getattr(annotation, "__name__", annotation)) if annotation is not None else None
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif kind in (float, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = kind(value)
        typed[name] = value
    return function(**typed)


def call_entrypoint(entrypoint: str, arguments: dict[str, Any]) -> Any:
    """Run ``entrypoint`` (see the module docstring) with ``arguments``; returns what a function returns."""
    if is_function_source(entrypoint):
        source = textwrap.dedent(entrypoint)
        functions = [node.name for node in ast.parse(source).body
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if not functions:
            raise ValueError("the entrypoint source defines no function to call")
        filename = f"<entrypoint {functions[-1]}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)  # tracebacks
        namespace: dict[str, Any] = {"__name__": "__dmlops_entrypoint__"}
        exec(compile(source, filename, "exec"), namespace)
        return call_function(namespace[functions[-1]], arguments)
    if ":" in entrypoint:
        module_name, _, function_name = entrypoint.partition(":")
        return call_function(getattr(importlib.import_module(module_name), function_name), arguments)
    argv = sys.argv
    sys.argv = [entrypoint, *argument_flags(arguments)]
    try:
        if entrypoint.endswith(".py"):
            runpy.run_path(entrypoint, run_name="__main__")
        else:
            runpy.run_module(entrypoint, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
    return None


def run(run_config: RunConfig) -> Any:
    """Run ``run_config``'s entrypoint in this process, its settings in the environment; then leave the
    process group the runtime joined for it."""
    from dmlops.training import runtime

    install_packages(run_config.packages_to_install)
    os.environ.update(run_environment(run_config))
    result = call_entrypoint(run_config.resolved_entrypoint, run_config.entrypoint_args)
    runtime.shutdown()
    return result


def train(config: RunSource) -> dict[str, Any]:
    """Run ``config`` (e.g. the tabular trainer's :class:`~dmlops.training.config.TrainConfig`) in this
    process, one worker unless the environment says otherwise; rank 0 returns what the entrypoint returns
    (the tabular trainer: its final metrics)."""
    return run(config.run_config())


def is_infrastructure_error(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) is a lost peer or connection rather than a bug."""
    while error is not None:
        if isinstance(error, (ConnectionError, TimeoutError)) or type(error).__name__ in INFRASTRUCTURE_ERRORS:
            return True
        if any(marker in str(error) for marker in INFRASTRUCTURE_MESSAGES):
            return True
        error = error.__cause__ or error.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    # the entrypoint's own logging records (and its libraries') as JSON lines; its errors below stay plain
    # text on stderr, where the launcher reads the failure it reports
    rank = next((os.environ[name] for name in ("RANK", "OMPI_COMM_WORLD_RANK", "HOROVOD_RANK") if name in os.environ),
                None)
    logs.configure("dmlops-worker", labels={"rank": rank})
    try:
        run_config = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    try:
        run(run_config)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - the exit code tells the launcher whether to restart
        code = EXIT_INFRASTRUCTURE if is_infrastructure_error(error) else EXIT_USER_ERROR
        kind = "infrastructure error (restartable)" if code == EXIT_INFRASTRUCTURE else "error in the entrypoint"
        print(f"{kind} {run_config.resolved_entrypoint.splitlines()[0]!r}:\n{traceback.format_exc()}",
              file=sys.stderr, flush=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
