"""Launcher: how fast a finished job is noticed, and at what API cost, watch vs. polling.

Runs jobs against the fake API server of the tests (tests/fake_kube.py). The operator marks each job
Succeeded after a random delay; we measure the time from that status change until the waiting call
returns, and the requests it made. The peer is a plain polling loop (GET the object every second), the
usual alternative to a watch. Prints per-job figures and the ratios peer / launcher.

    python bench/launcher.py [--jobs 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_kube import FakeKube  # noqa: E402

from dmlops.platform import resource_name, rule_for  # noqa: E402
from dmlops.platform.kubernetes import KubernetesLauncher  # noqa: E402
from dmlops.training.jobs import pytorch_job  # noqa: E402

NAMESPACE = "bench"
POLL_S = 1.0


def finish_later(fake: FakeKube, name: str, delay_s: float, finished_at: dict[str, float]) -> None:
    fake.wait_for_object("pytorchjobs", NAMESPACE, name)
    time.sleep(delay_s)
    finished_at[name] = time.perf_counter()
    fake.set_condition("pytorchjobs", NAMESPACE, name, "Succeeded")


def poll_until_done(api: client.CustomObjectsApi, job: dict) -> None:
    """The peer: create, then GET every POLL_S until a rule outcome appears."""
    rule = rule_for(job)
    api.create_namespaced_custom_object(rule.group, rule.version, NAMESPACE, rule.plural, job)
    while True:
        current = api.get_namespaced_custom_object(
            rule.group, rule.version, NAMESPACE, rule.plural, job["metadata"]["name"]
        )
        if rule.outcome(current) is not None:
            return
        time.sleep(POLL_S)


def measure(fake: FakeKube, jobs: int, wait, label: str, seed: int) -> tuple[list[float], float]:
    rng = random.Random(seed)
    latencies = []
    requests_before = len(fake.requests)
    for index in range(jobs):
        job = pytorch_job(resource_name(label, "bench-run", f"job-{index}"), NAMESPACE, image="img", command=["true"])
        finished_at: dict[str, float] = {}
        fake.in_background(finish_later, fake, job["metadata"]["name"], rng.uniform(0.2, 1.2), finished_at)
        wait(job)
        latencies.append(time.perf_counter() - finished_at[job["metadata"]["name"]])
    return latencies, (len(fake.requests) - requests_before) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    arguments = parser.parse_args()
    with FakeKube() as fake:
        launcher = KubernetesLauncher(fake.api_client(), echo=lambda line: None)
        api = client.CustomObjectsApi(fake.api_client())
        watch_latency, watch_requests = measure(
            fake, arguments.jobs, lambda job: launcher.run(job, timeout_s=60, stream_logs=False), "watch", seed=1
        )
        poll_latency, poll_requests = measure(
            fake, arguments.jobs, lambda job: poll_until_done(api, job), "poll", seed=1
        )
        fake.raise_background_errors()
    watch_median, poll_median = statistics.median(watch_latency), statistics.median(poll_latency)
    print(f"jobs per method: {arguments.jobs}; job finishes 0.2-1.2 s after creation (same delays for both)")
    print(f"launcher (watch):    median detection {watch_median * 1000:7.1f} ms, {watch_requests:5.1f} requests/job")
    print(
        f"peer (poll {POLL_S:g} s):   median detection {poll_median * 1000:7.1f} ms, {poll_requests:5.1f} requests/job"
    )
    print(
        f"ratio peer/launcher: detection latency x{poll_median / watch_median:.0f}, requests x{poll_requests / watch_requests:.2f}"
    )


if __name__ == "__main__":
    main()
