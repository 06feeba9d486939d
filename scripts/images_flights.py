"""Wall time of the compiled flights pipeline (pipelines/flights.yaml) under kfp.local's DockerRunner (each
task a container of the image its YAML names) against SubprocessRunner (each task a process of this
environment), measured in one run with the same parameters. Needs the images (`make images`).

    .venv/bin/python scripts/images_flights.py [--runner docker|subprocess|both]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from kfp import components, local

from dmlops.features.config import local_store_spec

PIPELINE_YAML = Path(__file__).resolve().parents[1] / "pipelines" / "flights.yaml"


def run_flights(runner: str) -> float:
    """Run the pipeline once in a fresh pipeline root; return its wall seconds."""
    root = Path(tempfile.mkdtemp(prefix=f"flights-{runner}-"))
    root.chmod(0o777)  # the images' user (uid 1000, group 0) writes task outputs there
    os.environ["DMLOPS_SERVING_DIR"] = str(root / "serving")
    chosen = local.DockerRunner() if runner == "docker" else local.SubprocessRunner(use_venv=False)
    local.init(runner=chosen, pipeline_root=str(root), raise_on_error=True)
    flights = components.load_component_from_file(str(PIPELINE_YAML))
    started = time.monotonic()
    flights(feature_store=local_store_spec(str(root / "feature_store"), project="flights"),
            endpoint=f"flights-{runner}")
    seconds = time.monotonic() - started
    if runner == "subprocess":
        from dmlops.serving.local import stop_endpoints

        stop_endpoints()
    print(f"runs kept in {root}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=["docker", "subprocess", "both"], default="both")
    chosen = parser.parse_args().runner
    runners = ["subprocess", "docker"] if chosen == "both" else [chosen]
    seconds = {runner: run_flights(runner) for runner in runners}
    for runner, value in seconds.items():
        print(f"flights under {runner}: {value:.0f} s")
    if len(seconds) == 2:
        print(f"DockerRunner / SubprocessRunner: {seconds['docker'] / seconds['subprocess']:.2f}x "
              "(both start a fresh interpreter per task; Docker adds a container per task)")


if __name__ == "__main__":
    main()
