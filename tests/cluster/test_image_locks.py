"""The images' dependency locks (containers/<image>/*.lock, containers/build-tools.lock) are complete for
what the images ask of them and fully hashed: every requirement of the lock's dmlops extras, of dmlops
itself, of its build system and of the lock's requirement files is satisfied by a pinned entry, every entry
is pinned within containers/constraints.txt and carries a sha256 hash, and every image lock holds the build
tools at the versions of build-tools.lock. A lock that fails here is stale: run
scripts/lock_images.sh. (The extras of a dependency, such as feast[redis], need that package's metadata:
the resolver in scripts/lock_images.sh and pip's --require-hashes check them, not this offline test.)"""

from __future__ import annotations

import re
import shlex

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from dockerfile_reader import pip_installs, stages
from image_imports import REPO, pyproject
from lock_reader import Lock, read_lock, unsatisfied
from test_dockerfiles import CONTAINERS, dockerfile_paths

LOCK_SCRIPT = REPO / "scripts" / "lock_images.sh"
BUILD_TOOLS = CONTAINERS / "build-tools.lock"


def lock_paths() -> list[str]:
    paths = [*CONTAINERS.glob("*.lock"), *CONTAINERS.glob("*/*.lock")]
    return sorted(str(path.relative_to(REPO)) for path in paths)


def requirement_lines(path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def constraints() -> list[Requirement]:
    """containers/constraints.txt and the releases scripts/lock_images.sh holds back."""
    return requirement_lines(CONTAINERS / "constraints.txt") + requirement_lines(CONTAINERS / "lock-constraints.txt")


def required_by(lock: Lock) -> list[Requirement]:
    """What the lock must satisfy: its build system, and for a dmlops environment dmlops' dependencies
    and the lock's extras; the lock's requirement files."""
    project = pyproject()
    texts = list(project["build-system"]["requires"])
    if lock.extras:
        texts += project["project"]["dependencies"]
    for extra in sorted(lock.extras):
        texts += project["project"]["optional-dependencies"][extra]
    requirements = [Requirement(text) for text in texts]
    for name in lock.requirement_files:
        requirements += requirement_lines(REPO / name)
    return requirements


def test_there_are_locks():
    assert lock_paths(), "no containers/<image>/*.lock: run scripts/lock_images.sh"


@pytest.mark.parametrize("path", lock_paths())
def test_lock_pins_and_hashes_every_entry(path):
    lock = read_lock(REPO / path)
    assert not lock.unreadable, f"{path}: entries that are not name==version: {lock.unreadable}"
    assert lock.extras is not None, f"{path}: the header names no dmlops extras (# extras: ... or none)"
    unhashed = [f"{pin.name} (line {pin.line})" for pin in lock.pins.values() if not pin.hashes]
    assert not unhashed, f"{path}: entries without --hash=sha256: {unhashed}"


@pytest.mark.parametrize("path", lock_paths())
def test_lock_satisfies_its_extras_and_constraints(path):
    lock = read_lock(REPO / path)
    missing = unsatisfied(lock, required_by(lock))
    assert not missing, f"{path} is stale (run scripts/lock_images.sh): {missing}"
    pinned = [c for c in constraints() if canonicalize_name(c.name) in lock.pins]
    outside = unsatisfied(lock, pinned)
    assert not outside, f"{path} pins outside the constraints (run scripts/lock_images.sh): {outside}"
    torch = lock.pins.get("torch")
    if torch:
        assert torch.version.local == "cpu", f"{path}: torch {torch.version} is not the CPU build"


@pytest.mark.parametrize("path", [p for p in lock_paths() if REPO / p != BUILD_TOOLS])
def test_image_lock_holds_the_build_tools_at_their_locked_versions(path):
    """The Dockerfiles install build-tools.lock first and the image lock after it: the same versions."""
    tools = read_lock(BUILD_TOOLS).pins
    lock = read_lock(REPO / path)
    differing = {name: (str(pin.version), str(lock.pins[name].version) if name in lock.pins else None)
                 for name, pin in tools.items() if name not in lock.pins or lock.pins[name].version != pin.version}
    assert not differing, f"{path}: build tools (build-tools.lock, this lock): {differing}"


def test_a_changed_requirement_makes_a_lock_stale():
    lock = read_lock(CONTAINERS / "base" / "requirements.lock")
    kfp = lock.pins["kfp"]
    assert not unsatisfied(lock, [Requirement(f"kfp=={kfp.version}")])
    newer = Version(f"{kfp.version.major + 1}.0")
    assert unsatisfied(lock, [Requirement(f"kfp>={newer}")]) == [f"kfp>={newer}: the lock pins {kfp.version}"]
    assert unsatisfied(lock, [Requirement("not-a-dmlops-dependency")])
    # A requirement whose marker does not hold in the images (CPython 3.11, Linux) is not asked of the lock.
    assert not unsatisfied(lock, [Requirement('not-a-dmlops-dependency; sys_platform == "win32"')])


def test_reader_finds_unhashed_and_unpinned_entries(tmp_path):
    path = tmp_path / "requirements.lock"
    path.write_text("# extras: tune\n# requirements: none\ncmaes==0.13.1\n    # via optuna\n"
                    "optuna==5.0.0 \\\n    --hash=sha256:" + "0" * 64 + "\nscipy>=1.11\n--index-url https://example.org\n")
    lock = read_lock(path)
    assert (lock.extras, lock.requirement_files) == ({"tune"}, [])
    assert {name: (str(pin.version), pin.hashes) for name, pin in lock.pins.items()} == {
        "cmaes": ("0.13.1", []), "optuna": ("5.0.0", ["0" * 64])}
    assert lock.unreadable == ["line 7: scipy>=1.11", "line 8: --index-url https://example.org"]


def test_every_lock_is_written_by_the_script_and_installed_by_a_dockerfile():
    written = sorted(re.findall(r"^lock (\S+)", LOCK_SCRIPT.read_text(), re.M))
    installed = sorted({lock for _, path in dockerfile_paths() for stage in stages(path)
                        for install in pip_installs(stage) for lock in install.locks})
    assert written == lock_paths() == installed


def test_lock_headers_name_what_the_script_locks():
    for line in re.findall(r"^lock (.+)$", LOCK_SCRIPT.read_text(), re.M):
        path, extras, *files = shlex.split(line)
        lock = read_lock(REPO / path)
        expected = set() if extras == "none" else set(extras.split(","))
        assert (lock.extras, lock.requirement_files) == (expected, files), path
