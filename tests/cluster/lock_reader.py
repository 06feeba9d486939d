"""A reader of the images' dependency locks (containers/<image>/*.lock, written by scripts/lock_images.sh):
the header that names what a lock covers, and each ``name==version --hash=sha256:...`` entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# The images' interpreter: CPython 3.11 on Linux x86_64 (the platform the locks are resolved for).
IMAGE_ENVIRONMENT = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
SHA256 = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass
class Pin:
    name: str  # canonical
    version: Version
    hashes: list[str]
    line: int


@dataclass
class Lock:
    path: Path
    extras: set[str] | None  # dmlops extras the lock covers (its dependencies, not dmlops itself);
    # empty for "# extras: none", a lock of build tools only; None when the header has no extras line
    requirement_files: list[str]  # further inputs, relative to the repository root
    pins: dict[str, Pin]
    unreadable: list[str]  # entries that are not name==version (an index option, an unpinned name)


def read_lock(path: Path) -> Lock:
    """The header's ``# extras:`` and ``# requirements:`` lines and the pinned entries of a lock."""
    extras: set[str] | None = None
    requirement_files: list[str] = []
    pins: dict[str, Pin] = {}
    unreadable: list[str] = []
    entry, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        header = re.fullmatch(r"# (extras|requirements): (.*)", raw)
        if header and header.group(1) == "extras":
            extras = set() if header.group(2) == "none" else set(header.group(2).split(","))
        elif header:
            requirement_files = [] if header.group(2) == "none" else header.group(2).split()
        stripped = raw.split("#", 1)[0].strip()
        if not stripped:
            continue
        if not entry:
            start = number
        entry += stripped.rstrip("\\").strip() + " "
        if stripped.endswith("\\"):
            continue
        requirement_text, _, _ = entry.partition(" --")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", requirement_text.strip())
        if match:
            name = canonicalize_name(match.group(1))
            pins[name] = Pin(name, Version(match.group(2)), SHA256.findall(entry), start)
        else:
            unreadable.append(f"line {start}: {entry.strip()}")
        entry = ""
    return Lock(path, extras, requirement_files, pins, unreadable)


def applies(requirement: Requirement) -> bool:
    """Whether a requirement's marker holds in the images (no marker: always)."""
    return requirement.marker is None or requirement.marker.evaluate({**IMAGE_ENVIRONMENT, "extra": ""})


def unsatisfied(lock: Lock, requirements: list[Requirement]) -> list[str]:
    """Requirements (whose marker holds in the images) that no pinned entry of the lock satisfies."""
    problems = []
    for requirement in filter(applies, requirements):
        pin = lock.pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {pin.version}")
    return problems
