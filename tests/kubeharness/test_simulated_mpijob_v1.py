"""The Training Operator's MPIJob (kubeflow.org/v1), simulated on an API server of its own: its CRD and
mpi-operator's (v2beta1, on the session's server) share one name, so no cluster serves both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from kubeharness.envtest import CRDS, ApiServer, EnvtestUnavailable, find_assets, start_envtest
from kubeharness.kubeflow import Kubeflow

pytestmark = pytest.mark.envtest


@pytest.fixture(scope="module")
def v1_kubeflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Kubeflow]]:
    try:
        assets = find_assets()
    except EnvtestUnavailable as missing:
        pytest.skip(f"real Kubernetes API server unavailable: {missing}")
    server = start_envtest(tmp_path_factory.mktemp("envtest-mpijob-v1"),
                           crds=[CRDS / "training-operator-v1" / "kubeflow.org_mpijobs.yaml"], assets=assets)
    try:
        with Kubeflow.from_api_server(server, webhooks=False) as kubeflow:
            yield server, kubeflow
    finally:
        server.stop()


def test_mpijob_v1_launcher_workers_rbac_and_status(v1_kubeflow):
    """training-operator release-1.9 pkg/controller.v1/mpi/mpijob_controller.go."""
    _, kubeflow = v1_kubeflow
    core = client.CoreV1Api(kubeflow.kube.api)
    core.create_namespace({"metadata": {"name": "mpi"}})
    core.create_namespaced_service_account("mpi", {"metadata": {"name": "default"}})
    job = {"apiVersion": "kubeflow.org/v1", "kind": "MPIJob", "metadata": {"name": "hvd"}, "spec": {
        "slotsPerWorker": 2, "mpiReplicaSpecs": {
            "Launcher": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "mpi", "image": "dmlops/torch:test", "command": ["horovodrun", "-np", "4", "python", "w.py"]}]}}},
            "Worker": {"replicas": 2, "template": {"spec": {"containers": [{"name": "mpi", "image": "dmlops/torch:test"}]}}}}}}
    kubeflow.kube.custom.create_namespaced_custom_object("kubeflow.org", "v1", "mpi", "mpijobs", job)
    pods = kubeflow.wait_for(lambda: (lambda items: len(items) == 3 and {p.metadata.name: p for p in items})(
        core.list_namespaced_pod("mpi", label_selector="training.kubeflow.org/job-name=hvd").items), what="3 pods")

    launcher, worker = pods["hvd-launcher"], pods["hvd-worker-1"]
    assert launcher.metadata.labels["training.kubeflow.org/replica-type"] == "launcher"
    assert launcher.metadata.labels["training.kubeflow.org/job-role"] == "master"
    assert worker.metadata.labels["training.kubeflow.org/replica-type"] == "worker"
    assert (worker.spec.containers[0].command, worker.spec.containers[0].args) == (["sleep"], ["365d"])
    assert launcher.spec.service_account_name == "hvd-launcher"
    assert launcher.spec.init_containers[0].name == "kubectl-delivery"
    env = {e.name: e.value for e in launcher.spec.containers[0].env}
    assert env["OMPI_MCA_plm_rsh_agent"] == "/etc/mpi/kubexec.sh" and env["OMPI_MCA_orte_default_hostfile"] == "/etc/mpi/hostfile"
    config = core.read_namespaced_config_map("hvd-config", "mpi").data
    assert config["hostfile"] == "hvd-worker-0 slots=2\nhvd-worker-1 slots=2\n"
    assert "kubectl exec ${POD_NAME} -- /bin/sh -c" in config["kubexec.sh"]
    role = client.RbacAuthorizationV1Api(kubeflow.kube.api).read_namespaced_role("hvd-launcher", "mpi")
    assert role.rules[1].resources == ["pods/exec"] and role.rules[1].resource_names == ["hvd-worker-0", "hvd-worker-1"]

    for name in pods:
        core.patch_namespaced_pod_status(name, "mpi", {"status": {"phase": "Running"}})
    get = lambda: kubeflow.kube.get_custom("kubeflow.org", "v1", "mpijobs", "mpi", "hvd")  # noqa: E731
    kubeflow.wait_for(lambda: any(c["type"] == "Running" and c["status"] == "True"
                                  for c in (get().get("status") or {}).get("conditions", [])), what="Running")
    core.patch_namespaced_pod_status("hvd-launcher", "mpi", {"status": {"phase": "Failed", "reason": "Error"}})
    failed = kubeflow.wait_for(lambda: next((c for c in (get().get("status") or {}).get("conditions", [])
                                             if c["type"] == "Failed"), None), what="Failed")
    assert (failed["reason"], failed["message"]) == ("Error", "MPIJob mpi/hvd has failed")
    kubeflow.raise_errors()
