"""The training worker's configuration and its command line.

:class:`RunConfig` is what the worker needs whatever code it runs: the strategy, the entrypoint, the
data, export and checkpoint URIs. Its command line is one ``--flag value`` per field, followed by the
entrypoint's own arguments as ``--name value`` pairs (a non-string value as compact JSON).
:class:`TrainConfig` is the settings of dmlops's own tabular trainer, the default entrypoint; it
becomes a RunConfig whose entrypoint arguments are its hyperparameters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

STRATEGIES = ("torch-ddp", "horovod-torch", "horovod-tf", "tf-multiworker")
TORCH_STRATEGIES = ("torch-ddp", "horovod-torch")
TF_STRATEGIES = ("tf-multiworker", "horovod-tf")
TABULAR_ENTRYPOINT = "dmlops.training.tabular:train"  # the default entrypoint: dmlops's tabular trainer


def _check_run(strategy: str, checkpoint_every: int, device: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 (0 = every epoch), got {checkpoint_every}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def _text(value: Any) -> str:
    """A value as one command-line word: a string as it is, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def argument_value(text: str) -> Any:
    """An entrypoint argument read back from the command line: JSON when it parses as JSON, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class RunConfig:
    """One training run, whatever code it runs: ``entrypoint`` (``package.module:function``, a script
    path, or a function's source; empty: the tabular trainer) called with ``entrypoint_args`` on every
    worker of ``strategy``. The URIs and checkpoint settings reach the code through
    :mod:`dmlops.training.runtime`."""

    export_uri: str
    strategy: str = "torch-ddp"
    entrypoint: str = ""
    entrypoint_args: dict[str, Any] = field(default_factory=dict)
    packages_to_install: list[str] = field(default_factory=list)
    train_uri: str = ""
    eval_uri: str = ""
    checkpoint_uri: str = ""
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    metrics_file: str = ""
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_run(self.strategy, self.checkpoint_every, self.device)
        if not self.export_uri:
            raise ValueError("export_uri is required: where rank 0 exports the model")

    @property
    def resolved_entrypoint(self) -> str:
        return self.entrypoint or TABULAR_ENTRYPOINT

    def run_config(self) -> RunConfig:
        """This run (see :class:`RunSource`)."""
        return self

    def to_args(self) -> list[str]:
        """The worker's command-line arguments: the run's fields that are set, then the entrypoint's
        arguments. An empty string is left out: a shell drops an empty word that is not quoted."""
        args = []
        for item in dataclasses.fields(self):
            if item.name == "entrypoint_args":
                continue
            value = getattr(self, item.name)
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            text = ",".join(value) if isinstance(value, list) else str(value)
            if text or value != default:
                args += [f"--{item.name.replace('_', '-')}", text]
        return args + argument_flags(self.entrypoint_args)


class RunSource(Protocol):
    """What the launcher, the jobs and the tuner take: anything that says which run it is, a
    :class:`RunConfig` or a trainer's own settings (the tabular trainer's :class:`TrainConfig`). They
    never look further into it."""

    def run_config(self) -> RunConfig: ...


def argument_flags(arguments: dict[str, Any]) -> list[str]:
    """Entrypoint arguments as ``--name value`` words (an empty string left out)."""
    return [word for name, value in arguments.items() if value != ""
            for word in (f"--{name.replace('_', '-')}", _text(value))]


RUN_FIELDS = {item.name: item for item in dataclasses.fields(RunConfig) if item.name != "entrypoint_args"}


def parse_args(argv: list[str]) -> RunConfig:
    """Read the worker's ``--flag value`` pairs: RunConfig's flags set the run, every other flag is an
    entrypoint argument (:func:`argument_value`), overriding the same name in ``--entrypoint-args``."""
    if len(argv) % 2 or any(not flag.startswith("--") for flag in argv[::2]):
        raise ValueError(f"worker arguments must be --flag value pairs; got {argv}")
    run: dict[str, Any] = {}
    arguments: dict[str, Any] = {}
    for flag, text in zip(argv[::2], argv[1::2]):
        name = flag[2:].replace("-", "_")
        if name == "entrypoint_args":
            arguments = {**json.loads(text), **arguments}
        elif name in RUN_FIELDS:
            default = RunConfig.__dataclass_fields__[name].default
            run[name] = ([part for part in text.split(",") if part] if name == "packages_to_install"
                         else type(default)(text) if default is not dataclasses.MISSING else text)
        else:
            arguments[name] = argument_value(text)
    return RunConfig(**run, entrypoint_args=arguments)


@dataclass
class TrainConfig:
    """Everything one training run needs. ``batch_size`` is global: each of N workers takes 1/N of it."""

    train_uri: str
    label: str
    export_uri: str
    strategy: str = "torch-ddp"
    task: str = ""  # binary, multiclass or regression; empty: inferred from the label
    eval_uri: str = ""
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    exclude_features: list[str] = field(default_factory=list)
    epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    hidden_units: list[int] = field(default_factory=lambda: [64, 32])
    embedding_dim: int = 8
    dropout: float = 0.0
    max_categories: int = 1000
    seed: int = 0
    checkpoint_uri: str = ""
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    metrics_file: str = ""
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_run(self.strategy, self.checkpoint_every, self.device)
        if self.task not in ("", "binary", "multiclass", "regression"):
            raise ValueError(f"unknown task {self.task!r}; choose binary, multiclass or regression (or '' to infer it)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be at least 1")

    def run_config(self) -> RunConfig:
        """This training as a run of the tabular trainer: the run's fields, and every other field as an
        entrypoint argument."""
        values = dataclasses.asdict(self)
        run = {name: values.pop(name) for name in list(values) if name in RUN_FIELDS}
        return RunConfig(**run, entrypoint=TABULAR_ENTRYPOINT, entrypoint_args=values)

    def to_args(self) -> list[str]:
        """The worker command-line arguments that run this config."""
        return self.run_config().to_args()

    @classmethod
    def from_run(cls, run: RunConfig, arguments: dict[str, Any]) -> TrainConfig:
        """The tabular trainer's config from its run and its entrypoint arguments (command-line words or
        values; a list may also be given as comma-separated text)."""
        values: dict[str, Any] = {name: getattr(run, name) for name in RUN_FIELDS if name in cls.__dataclass_fields__}
        unknown = sorted(set(arguments) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"the tabular trainer has no arguments {unknown}")
        defaults = TrainConfig(train_uri="", label="", export_uri="")
        for name, value in arguments.items():
            default = getattr(defaults, name)
            if isinstance(default, list):
                kind = int if name == "hidden_units" else str
                parts = value.split(",") if isinstance(value, str) else value
                value = [kind(str(part).strip()) for part in parts if str(part).strip()]
            else:
                value = type(default)(value)
            values[name] = value
        return cls(**values)



def step_run(entrypoint: str, entrypoint_args: dict[str, Any], packages_to_install: list[str],
             tabular: dict[str, Any], **run: Any) -> RunConfig:
    """The run of a ``train`` or ``tune`` step: the user's ``entrypoint`` with ``entrypoint_args``, or
    without one the tabular trainer with its ``tabular`` settings, ``entrypoint_args`` overriding them."""
    if entrypoint:
        return RunConfig(entrypoint=entrypoint, entrypoint_args=dict(entrypoint_args),
                         packages_to_install=list(packages_to_install), **run)
    default = TrainConfig(**tabular, **run).run_config()
    return dataclasses.replace(default, packages_to_install=list(packages_to_install),
                               entrypoint_args={**default.entrypoint_args, **entrypoint_args})
