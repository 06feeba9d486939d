"""A small Dockerfile reader for static checks: instructions per build stage, with ``ARG`` defaults
substituted in ``FROM``, and the ``pip install`` commands of each ``RUN``."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lock_reader import read_lock

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    image: str  # resolved base image, or the name of an earlier stage
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class PipInstall:
    """One ``pip install``: the environment it installs into (the venv whose pip runs, or the one
    first on PATH) and its arguments."""

    environment: str
    arguments: list[str]
    line: int

    @property
    def extras(self) -> set[str]:
        """Extras of the local project (``.[a,b]``), directly or through a lock (``-r <lock>``) that
        scripts/lock_images.sh wrote for them."""
        found: set[str] = set()
        for argument in self.arguments:
            match = re.fullmatch(r"\.\[([\w,\-]+)\]", argument)
            if match:
                found.update(match.group(1).split(","))
        for lock in self.locks:
            found.update(read_lock(REPO / lock).extras or ())
        return found

    @property
    def locks(self) -> list[str]:
        """Requirement files (``-r``) named by their path from the repository root: each Dockerfile
        copies a lock to the same path under its WORKDIR."""
        return [self.arguments[i + 1] for i, a in enumerate(self.arguments[:-1]) if a in ("-r", "--requirement")]

    @property
    def constraints(self) -> list[str]:
        return [self.arguments[i + 1] for i, a in enumerate(self.arguments[:-1]) if a in ("-c", "--constraint")]


def instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, arguments = buffer.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip(), start))
        buffer = ""
    return result


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def stages(path: Path) -> list[Stage]:
    """Build stages in order; global ``ARG`` defaults are substituted into ``FROM``."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(path):
        if instruction.keyword == "ARG" and not result:
            name, _, default = instruction.arguments.partition("=")
            global_args[name] = default
        elif instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            image = _substitute(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            result.append(Stage(image, name))
        elif result:
            result[-1].instructions.append(instruction)
    return result


def path_environment(stage: Stage) -> str:
    """The virtual environment whose bin/ is first on PATH (``ENV PATH=/opt/venv/bin:$PATH``)."""
    environment = ""
    for instruction in stage.all("ENV"):
        match = re.search(r"PATH=(/[^:\s]+)/bin:", instruction.arguments)
        if match:
            environment = match.group(1)
    return environment


def pip_installs(stage: Stage) -> list[PipInstall]:
    """Every ``pip install`` in the stage's RUN instructions."""
    found: list[PipInstall] = []
    default_environment = ""
    for instruction in stage.instructions:
        if instruction.keyword == "ENV":
            match = re.search(r"PATH=(/[^:\s]+)/bin:", instruction.arguments)
            if match:
                default_environment = match.group(1)
        if instruction.keyword != "RUN":
            continue
        for words in _commands(instruction.arguments):
            for index in range(len(words) - 1):
                program, verb = words[index], words[index + 1]
                if Path(program).name in ("pip", "pip3") and verb == "install":
                    environment = str(Path(program).parent.parent) if "/" in program else default_environment
                    found.append(PipInstall(environment, words[index + 2:], instruction.line))
    return found


def _commands(shell: str) -> list[list[str]]:
    """A shell line split into its commands' words (at ``&&``, ``||`` and ``;``)."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(word)
    return [words for words in commands if words]


def copies_from(stage: Stage, source_stage: str) -> list[str]:
    """Source paths a stage copies from another stage (``COPY --from=build SRC DEST``)."""
    paths: list[str] = []
    for instruction in stage.all("COPY"):
        words = instruction.arguments.split()
        if f"--from={source_stage}" in words:
            plain = [w for w in words if not w.startswith("--")]
            paths.extend(plain[:-1])
    return paths
