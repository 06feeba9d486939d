"""The local backend gives worker processes the environment the Kubeflow operators give pods."""

import io
import json
import sys

import pytest

from dmlops.platform.local import WorkerGroupFailed, WorkerGroupTimeout, run_workers

PRINT_ENV = [sys.executable, "-c",
             "import json, os; print('ENV ' + json.dumps({k: v for k, v in os.environ.items() "
             "if k in ('MASTER_ADDR', 'MASTER_PORT', 'WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'TF_CONFIG')}))"]


def worker_envs(output: str) -> dict[str, dict]:
    envs = {}
    for line in output.splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("ENV "):
            envs[name.strip("[]")] = json.loads(rest[4:])
    return envs


def test_pytorch_workers_get_the_torchrun_rendezvous():
    output = io.StringIO()
    result = run_workers("pytorch", 3, PRINT_ENV, output=output)
    envs = worker_envs(output.getvalue())
    assert result.restarts == 0
    assert sorted(envs) == ["worker-0", "worker-1", "worker-2"]
    assert {env["RANK"] for env in envs.values()} == {"0", "1", "2"}
    assert all(env["WORLD_SIZE"] == "3" and env["MASTER_ADDR"] == "127.0.0.1" for env in envs.values())
    assert len({env["MASTER_PORT"] for env in envs.values()}) == 1
    assert envs["worker-2"]["RANK"] == envs["worker-2"]["LOCAL_RANK"] == "2"


def test_tensorflow_workers_get_a_tfjob_tf_config():
    output = io.StringIO()
    run_workers("tensorflow", 2, PRINT_ENV, output=output)
    configs = {name: json.loads(env["TF_CONFIG"]) for name, env in worker_envs(output.getvalue()).items()}
    cluster = configs["worker-0"]["cluster"]
    assert list(cluster) == ["worker"] and len(set(cluster["worker"])) == 2
    assert all(address.startswith("localhost:") for address in cluster["worker"])
    assert configs["worker-1"] == {"cluster": cluster, "task": {"type": "worker", "index": 1}}


def test_a_failed_worker_restarts_the_group_then_fails_with_its_output(tmp_path):
    marker = tmp_path / "failed-once"
    fail_first_time = [sys.executable, "-c",
                       f"import os, pathlib, sys; m = pathlib.Path({str(marker)!r}); "
                       "first = os.environ['RANK'] == '1' and not m.exists(); "
                       "m.touch() if first else None; print('rank', os.environ['RANK']); sys.exit(3 if first else 0)"]
    output = io.StringIO()
    result = run_workers("pytorch", 2, fail_first_time, max_restarts=1, output=output)
    assert result.restarts == 1
    assert "[local] worker-1 exited with code 3; restarting all 2 workers (restart 1 of 1)" in output.getvalue()

    always_fail = [sys.executable, "-c", "import sys; print('cannot read the data'); sys.exit(4)"]
    with pytest.raises(WorkerGroupFailed, match=r"exited with code 4 after 1 restart\(s\)[\s\S]*cannot read the data"):
        run_workers("pytorch", 2, always_fail, max_restarts=1, output=io.StringIO())


def test_a_hung_group_is_stopped_at_the_timeout():
    with pytest.raises(WorkerGroupTimeout, match="ran past the 1 s timeout"):
        run_workers("pytorch", 2, [sys.executable, "-c", "import time; time.sleep(60)"], timeout=1,
                    output=io.StringIO())


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown launch kind 'slurm'"):
        run_workers("slurm", 2, PRINT_ENV)
