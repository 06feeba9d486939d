"""The GitHub Actions workflows for users of the repository: valid against the GitHub workflow schema
(vendored by check-jsonschema), and doing what they promise: CI runs the README's test command and the
freshness check of the generated YAML; a version tag builds and pushes every image of
containers/ tagged with the package version and attaches the compiled YAML to the release."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources

import jsonschema
import pytest
import yaml

from dmlops.images import DEFAULT_REGISTRY, IMAGE_FAMILIES
from image_imports import REPO
from dockerfile_reader import instructions
from test_dockerfiles import DOCKERFILES, dockerfile_paths

WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    # yaml reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def run_lines(workflow: dict, job: str) -> list[str]:
    return [line.strip() for step in steps(workflow, job) for line in step.get("run", "").splitlines()]


@pytest.fixture(scope="module")
def workflow_schema() -> dict:
    try:
        vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema (which vendors the GitHub workflow schema) is not installed")
    return json.loads((vendor / "github-workflows.json").read_text())


@pytest.mark.parametrize("name", ["ci.yml", "release.yml", "e2e.yml"])
def test_workflow_is_valid(workflow_schema, name):
    validator = jsonschema.Draft7Validator(workflow_schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(name))]
    assert not errors, f"{name}: {errors}"


def test_workflow_schema_catches_a_mistake(workflow_schema):
    broken = load("ci.yml")
    broken["jobs"]["test"]["runs_on"] = broken["jobs"]["test"].pop("runs-on")
    assert list(jsonschema.Draft7Validator(workflow_schema).iter_errors(broken))


def test_actions_are_pinned_to_a_major_version():
    for name in ("ci.yml", "release.yml", "e2e.yml"):
        for job in load(name)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), f"{name}: {step['uses']}"


def test_ci_runs_the_readme_test_command_and_the_freshness_check():
    readme_commands = re.findall(r"^(make \w+)\s+#.*\btests?\b", (REPO / "README.md").read_text(), re.M)
    assert readme_commands, "the README names its test command"
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    lines = run_lines(ci, "test")
    assert readme_commands[0] in lines
    assert any(re.search(r"dmlops compile --check$", line) for line in lines)
    # The tests need Redis and promtool; the upstream CRDs are in the repository, nothing is fetched.
    assert any("redis-server" in line and "prometheus" in line for line in lines)
    assert not any("fetch-crds" in line or "shared/" in line for line in lines)


def test_release_builds_every_image_with_the_package_version_and_pushes_it():
    release = load("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["env"]["REGISTRY"] == DEFAULT_REGISTRY
    version_check = "\n".join(run_lines(release, "version"))
    assert 'GITHUB_REF_NAME}" != "v${version}"' in version_check and "exit 1" in version_check
    matrix = release["jobs"]["images"]["strategy"]["matrix"]["include"]
    built = {(entry["family"], entry["dockerfile"]) for entry in matrix}
    expected = {(family, f"containers/{path}") for family, paths in DOCKERFILES.items() for path in paths}
    assert built == expected
    assert {family for family, _ in built} == set(IMAGE_FAMILIES)
    (build,) = [s for s in steps(release, "images") if s.get("uses", "").startswith("docker/build-push-action")]
    assert build["with"]["push"] is True
    build_args = dict(line.split("=", 1) for line in build["with"]["build-args"].splitlines())
    assert build_args.pop("VERSION") == "${{ needs.version.outputs.version }}"
    # Every base image is pinned by digest: the Dockerfiles' default tag, at a digest the release env names.
    defaults = {}
    for _, path in dockerfile_paths():
        for instruction in instructions(path):
            if instruction.keyword == "FROM":
                break
            if instruction.keyword == "ARG" and "_IMAGE=" in instruction.arguments:
                name, default = instruction.arguments.split("=", 1)
                defaults[name] = default
    assert set(build_args) == set(defaults)
    for name, default in defaults.items():
        assert build_args[name] == f"${{{{ env.{name} }}}}"
        assert re.fullmatch(re.escape(default) + r"@sha256:[0-9a-f]{64}", release["env"][name]), (
            f"release.yml: {name} {release['env'][name]} is not {default} pinned by digest"
        )
    assert build["with"]["tags"] == (
        "${{ env.REGISTRY }}/${{ matrix.family }}:${{ needs.version.outputs.version }}${{ matrix.suffix }}"
    )
    assert release["jobs"]["images"]["permissions"]["packages"] == "write"


def test_release_attaches_the_compiled_yaml():
    release = load("release.yml")
    lines = "\n".join(run_lines(release, "release"))
    assert "dmlops compile --check" in lines
    assert "gh release create" in lines and "components/*/*.yaml" in lines and "pipelines/*.yaml" in lines
    assert set(release["jobs"]["release"]["needs"]) == {"version", "images"}
    # gh uploads files under their base name: two components of the same name would collide.
    names = [path.name for path in (REPO / "components").glob("*/*.yaml")]
    assert len(names) == len(set(names)), sorted(names)


def test_crd_sources_match_the_schemas_the_tests_use():
    """crds/sources.txt (read by scripts/refresh_crds.sh) names every vendored file, with its git blob."""
    crds = REPO / "crds"
    listed = {}
    for line in (crds / "sources.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            destination, repository, commit, path, blob = line.split()
            assert re.fullmatch(r"[0-9a-f]{40}", commit) and re.fullmatch(r"[0-9a-f]{8,40}", blob)
            listed[destination] = blob
    present = {str(p.relative_to(crds)) for p in crds.rglob("*") if p.suffix in (".yaml", ".json")}
    assert set(listed) == present
    for destination, blob in listed.items():
        actual = subprocess.run(["git", "hash-object", str(crds / destination)], capture_output=True, text=True,
                                check=True).stdout.strip()
        assert actual.startswith(blob), f"{destination}: {actual} is not blob {blob}"


def test_e2e_runs_the_cluster_tests_on_kind_with_pinned_kubeflow():
    """kind with Kubeflow Pipelines (standalone), Training Operator, Katib and KServe at exact releases,
    the images of `make images` loaded into the node, then `pytest -m cluster` against that cluster."""
    e2e = load("e2e.yml")
    versions = e2e["env"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions["KIND_VERSION"])
    for name in ("KFP_VERSION", "TRAINING_OPERATOR_VERSION", "KATIB_VERSION", "KSERVE_VERSION"):
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", str(versions[name])), f"{name} is not an exact release"
    job = e2e["jobs"]["cluster-tests"]
    (kind,) = [step for step in job["steps"] if step.get("uses", "").startswith("helm/kind-action@")]
    assert kind["with"]["version"] == "${{ env.KIND_VERSION }}"
    text = "\n".join(run_lines(e2e, "cluster-tests"))
    installs = {
        "KFP_VERSION": "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}",
        "TRAINING_OPERATOR_VERSION":
            "github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=${TRAINING_OPERATOR_VERSION}",
        "KATIB_VERSION": "github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=${KATIB_VERSION}",
        "KSERVE_VERSION": "https://raw.githubusercontent.com/kserve/kserve/${KSERVE_VERSION}/hack/setup/quick-install/",
    }
    for name, source in installs.items():
        assert source in text, f"{name}: {source} is not installed"
    # Every image the compiled components name is built and loaded into the kind node.
    assert "make images" in text
    loaded = re.search(r"for family in ([\w\s-]+); do\s*\n\s*kind load docker-image "
                       r'"ghcr.io/dmlops/\$\{family\}:\$\{version\}" --name "\$\{KIND_CLUSTER\}"', text)
    assert loaded and set(loaded.group(1).split()) == set(IMAGE_FAMILIES)
    assert DEFAULT_REGISTRY == "ghcr.io/dmlops"
    # The cluster tests point at kind's kubeconfig and reach KFP's MinIO through a port-forward.
    assert "svc/minio-service 9000:9000" in text
    assert re.search(r"DMLOPS_KUBECONFIG=\S+ DMLOPS_MINIO_URL=http://127.0.0.1:9000 \\\s*\n\s*"
                     r"\.venv/bin/python -m pytest -m cluster", text)
