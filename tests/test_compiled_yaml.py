"""Generated component and pipeline YAML: checked in, fresh, loadable, and runnable from the YAML."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dmlops.catalog import check_compiled, compile_all

REPO = Path(__file__).resolve().parents[1]


def test_checked_in_yaml_is_fresh():
    assert check_compiled(REPO) == []


def test_check_reports_stale_missing_and_orphaned_yaml(tmp_path):
    for folder in ("components", "pipelines"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    stale = next((tmp_path / "components").rglob("*.yaml"))
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    missing = tmp_path / "pipelines" / "flights.yaml"
    missing.unlink()
    (tmp_path / "components" / "data" / "retired.yaml").write_text("name: retired\n")
    problems = check_compiled(tmp_path)
    assert f"{stale.relative_to(tmp_path)} is stale or missing" in problems
    assert "pipelines/flights.yaml is stale or missing" in problems
    assert "components/data/retired.yaml is no longer generated; delete it" in problems


def test_cli_check_exit_codes(tmp_path):
    command = [sys.executable, "-m", "dmlops.cli", "compile", "--check", "--repo"]
    assert subprocess.run([*command, str(REPO)], capture_output=True).returncode == 0
    failed = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "run `dmlops compile`" in failed.stderr


def test_registry_override_changes_every_image(tmp_path):
    script = (
        "import sys; from pathlib import Path; from dmlops.catalog import compile_all; "
        "compile_all(Path(sys.argv[1]))"
    )
    env = {"DMLOPS_REGISTRY": "registry.example.com/ml", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env)
    images = set()
    for path in (tmp_path / "components").rglob("*.yaml"):
        for executor in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values():
            images.add(executor["container"]["image"])
    assert images and all(image.startswith("registry.example.com/ml/") for image in images)


def test_every_component_compiles_with_a_versioned_image(tmp_path):
    from dmlops import __version__

    written = compile_all(tmp_path)
    component_files = [path for path in written if path.parts[-3] == "components"]
    assert component_files
    for path in component_files:
        for executor in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values():
            assert executor["container"]["image"].endswith(f":{__version__}")

