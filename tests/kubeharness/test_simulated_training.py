"""The simulated training operators on a real API server: the pods, services and status they write.

envtest runs no kubelet: the tests play it by setting pod phases through the pods' status subresource.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from kubeharness.kubeflow import kubeflow  # noqa: F401 - fixture

pytestmark = pytest.mark.envtest


def _container(name: str, command: list[str] | None = None) -> dict:
    return {"name": name, "image": "dmlops/base:test", **({"command": command} if command else {})}


def _pods(kubeflow, namespace: str, selector: str, count: int) -> list[dict]:
    core = client.CoreV1Api(kubeflow.kube.api)
    return kubeflow.wait_for(lambda: (lambda pods: len(pods) == count and pods)(
        [kubeflow.kube.to_dict(p) for p in core.list_namespaced_pod(namespace, label_selector=selector).items]),
        what=f"{count} pods {selector}")


def _set_phase(kubeflow, namespace: str, pod: str, phase: str, **status) -> None:
    client.CoreV1Api(kubeflow.kube.api).patch_namespaced_pod_status(pod, namespace, {"status": {"phase": phase, **status}})


def _conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def _env(pod: dict, container: int = 0) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][container].get("env") or []}


def test_pytorchjob_pods_services_env_and_success(kubeflow, kube_namespace):
    """controller.v1/pytorch/envvar.go, master.go; common/pod.go, service.go; pytorchjob_controller.go."""
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pt"}, "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1, "template": {"spec": {"containers": [_container("pytorch", ["python", "-m", "train"])]}}},
        "Worker": {"replicas": 2, "template": {"spec": {"containers": [_container("pytorch", ["python", "-m", "train"])]}}}}}}
    kubeflow.kube.custom.create_namespaced_custom_object("kubeflow.org", "v1", kube_namespace, "pytorchjobs", job)
    pods = {p["metadata"]["name"]: p for p in _pods(kubeflow, kube_namespace, "training.kubeflow.org/job-name=pt", 3)}

    assert sorted(pods) == ["pt-master-0", "pt-worker-0", "pt-worker-1"]
    master, worker = pods["pt-master-0"], pods["pt-worker-1"]
    assert master["metadata"]["labels"]["training.kubeflow.org/job-role"] == "master"
    assert worker["metadata"]["labels"]["training.kubeflow.org/replica-type"] == "worker"
    assert "training.kubeflow.org/job-role" not in worker["metadata"]["labels"]
    assert master["spec"]["restartPolicy"] == "OnFailure"  # the PyTorchJob default
    assert {k: _env(worker)[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_NNODES",
                                         "PET_NPROC_PER_NODE")} == {
        "MASTER_ADDR": "pt-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2", "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "auto"}
    assert _env(master)["RANK"] == "0"
    services = {s.metadata.name: s for s in client.CoreV1Api(kubeflow.kube.api).list_namespaced_service(kube_namespace).items}
    assert set(services) == set(pods)
    # no cluster DNS here: the master's name resolves through a host alias to its Service's ClusterIP
    aliases = {h: a["ip"] for a in worker["spec"]["hostAliases"] for h in a["hostnames"]}
    assert aliases["pt-master-0"] == services["pt-master-0"].spec.cluster_ip

    for name in pods:
        _set_phase(kubeflow, kube_namespace, name, "Running")
    get = lambda: kubeflow.kube.get_custom("kubeflow.org", "v1", "pytorchjobs", kube_namespace, "pt")  # noqa: E731
    kubeflow.wait_for(lambda: _conditions(get()).get("Running") == "True", what="Running")
    _set_phase(kubeflow, kube_namespace, "pt-master-0", "Succeeded")
    done = kubeflow.wait_for(lambda: _conditions(get()).get("Succeeded") == "True" and get(), what="Succeeded")
    assert _conditions(done) == {"Created": "True", "Running": "False", "Succeeded": "True"}
    succeeded = next(c for c in done["status"]["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["reason"], succeeded["message"]) == ("PyTorchJobSucceeded", "PyTorchJob pt is successfully completed.")
    kubeflow.raise_errors()


def test_failed_replica_restarts_under_onfailure_and_fails_the_job_under_never(kubeflow, kube_namespace):
    """controller.v1/common/pod.go ReconcilePods; pytorchjob_controller.go UpdateJobStatus."""
    def job(name: str, restart: str) -> dict:
        return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name}, "spec": {
            "pytorchReplicaSpecs": {"Master": {"replicas": 1, "restartPolicy": restart, "template": {
                "spec": {"containers": [_container("pytorch", ["python"])]}}}}}}

    for name, restart in (("retry", "OnFailure"), ("fail", "Never")):
        kubeflow.kube.custom.create_namespaced_custom_object("kubeflow.org", "v1", kube_namespace, "pytorchjobs", job(name, restart))
    first = _pods(kubeflow, kube_namespace, "training.kubeflow.org/job-name=retry", 1)[0]
    _pods(kubeflow, kube_namespace, "training.kubeflow.org/job-name=fail", 1)
    _set_phase(kubeflow, kube_namespace, "retry-master-0", "Failed")
    _set_phase(kubeflow, kube_namespace, "fail-master-0", "Failed")

    core = client.CoreV1Api(kubeflow.kube.api)
    recreated = kubeflow.wait_for(lambda: [p for p in core.list_namespaced_pod(kube_namespace, label_selector=(
        "training.kubeflow.org/job-name=retry")).items if p.metadata.uid != first["metadata"]["uid"]], what="a new pod")
    assert recreated[0].metadata.name == "retry-master-0"
    get = lambda name: kubeflow.kube.get_custom("kubeflow.org", "v1", "pytorchjobs", kube_namespace, name)  # noqa: E731
    kubeflow.wait_for(lambda: _conditions(get("retry")).get("Restarting") == "True", what="Restarting")
    failed = kubeflow.wait_for(lambda: _conditions(get("fail")).get("Failed") == "True" and get("fail"), what="Failed")
    message = next(c["message"] for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert message == "PyTorchJob fail is failed because 1 Master replica(s) failed."
    assert "Failed" not in _conditions(get("retry"))
    kubeflow.raise_errors()


def test_tfjob_tf_config_and_worker_zero_success(kubeflow, kube_namespace):
    """controller.v1/tensorflow/tensorflow.go genTFConfigJSONStr; tfjob_controller.go success policy."""
    job = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "tf"}, "spec": {"tfReplicaSpecs": {
        "Worker": {"replicas": 2, "template": {"spec": {"containers": [_container("tensorflow", ["python"])]}}}}}}
    kubeflow.kube.custom.create_namespaced_custom_object("kubeflow.org", "v1", kube_namespace, "tfjobs", job)
    pods = {p["metadata"]["name"]: p for p in _pods(kubeflow, kube_namespace, "training.kubeflow.org/job-name=tf", 2)}
    config = json.loads(_env(pods["tf-worker-1"])["TF_CONFIG"])
    assert config == {"cluster": {"worker": [f"tf-worker-0.{kube_namespace}.svc:2222", f"tf-worker-1.{kube_namespace}.svc:2222"]},
                      "task": {"type": "worker", "index": 1}, "environment": "cloud"}
    assert pods["tf-worker-0"]["spec"]["restartPolicy"] == "Never"
    _set_phase(kubeflow, kube_namespace, "tf-worker-0", "Succeeded")
    get = lambda: kubeflow.kube.get_custom("kubeflow.org", "v1", "tfjobs", kube_namespace, "tf")  # noqa: E731
    kubeflow.wait_for(lambda: _conditions(get()).get("Succeeded") == "True", what="TFJob Succeeded")
    kubeflow.raise_errors()


def test_mpijob_launcher_waits_for_ready_workers_and_follows_its_job(kubeflow, kube_namespace):
    """mpi-operator pkg/controller/mpi_job_controller.go: config map, ssh secret, workers, launcher Job."""
    job = {"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "metadata": {"name": "mj"}, "spec": {
        "slotsPerWorker": 2, "launcherCreationPolicy": "WaitForWorkersReady", "sshAuthMountPath": "/home/dmlops/.ssh",
        "mpiReplicaSpecs": {
            "Launcher": {"replicas": 1, "template": {"spec": {"containers": [_container("mpi", ["horovodrun", "-np", "4"])]}}},
            "Worker": {"replicas": 2, "template": {"spec": {"containers": [_container("mpi")]}}}}}}
    kubeflow.kube.custom.create_namespaced_custom_object("kubeflow.org", "v2beta1", kube_namespace, "mpijobs", job)
    workers = _pods(kubeflow, kube_namespace, "training.kubeflow.org/job-role=worker", 2)
    core, batch = client.CoreV1Api(kubeflow.kube.api), client.BatchV1Api(kubeflow.kube.api)
    hostfile = core.read_namespaced_config_map("mj-config", kube_namespace).data["hostfile"]
    assert hostfile == f"mj-worker-0.mj.{kube_namespace}.svc slots=2\nmj-worker-1.mj.{kube_namespace}.svc slots=2\n"
    secret = core.read_namespaced_secret("mj-ssh", kube_namespace)
    assert secret.type == "kubernetes.io/ssh-auth" and secret.data["ssh-publickey"]
    worker = workers[0]
    assert worker["spec"]["containers"][0]["command"] == ["/usr/sbin/sshd", "-De"]
    assert (worker["spec"]["hostname"], worker["spec"]["subdomain"]) == (worker["metadata"]["name"], "mj")
    assert not batch.list_namespaced_job(kube_namespace).items  # workers not Ready yet

    for index, pod in enumerate(workers):
        _set_phase(kubeflow, kube_namespace, pod["metadata"]["name"], "Running", podIP=f"10.9.0.{index + 1}",
                   podIPs=[{"ip": f"10.9.0.{index + 1}"}], conditions=[{"type": "Ready", "status": "True"}])
    launcher = kubeflow.wait_for(lambda: batch.list_namespaced_job(kube_namespace).items, what="launcher Job")[0]
    template = kubeflow.kube.to_dict(launcher)["spec"]["template"]
    assert template["metadata"]["labels"]["training.kubeflow.org/job-role"] == "launcher"
    env = _env(template)
    assert env["OMPI_MCA_orte_default_hostfile"] == "/etc/mpi/hostfile" and env["OMPI_MCA_orte_set_default_slots"] == "2"
    assert {"ip": "10.9.0.2", "hostnames": [f"mj-worker-1.mj.{kube_namespace}.svc", "mj-worker-1"]} in template["spec"]["hostAliases"]

    now = "2026-01-01T00:00:00Z"
    batch.patch_namespaced_job_status(launcher.metadata.name, kube_namespace, {"status": {
        "startTime": now, "completionTime": now, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}]}})
    get = lambda: kubeflow.kube.get_custom("kubeflow.org", "v2beta1", "mpijobs", kube_namespace, "mj")  # noqa: E731
    done = kubeflow.wait_for(lambda: _conditions(get()).get("Succeeded") == "True" and get(), what="MPIJob Succeeded")
    assert done["status"]["replicaStatuses"]["Launcher"]["succeeded"] == 1
    kubeflow.raise_errors()


@pytest.fixture
def torch_runtime(kubeflow):
    """Trainer's torch-distributed ClusterTrainingRuntime, removed afterwards (it is cluster-wide)."""
    kubeflow.install_runtimes()
    yield
    kubeflow.kube.custom.delete_cluster_custom_object("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes",
                                                      "torch-distributed")


def test_trainjob_pods_as_jobset_makes_them_and_completion(kubeflow, kube_namespace, torch_runtime):
    """trainer plugins/torch/torch.go, plugins/jobset/jobset.go Status; JobSet and indexed Job pod shape."""
    trainjob = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "tj"}, "spec": {
        "runtimeRef": {"name": "torch-distributed"},
        "trainer": {"image": "dmlops/torch:test", "command": ["python", "-m", "train"], "numNodes": 2,
                    "resourcesPerNode": {"limits": {"cpu": "2"}}},
        "runtimePatches": [{"manager": "dmlops", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": "node", "template": {"spec": {"template": {
                "metadata": {"labels": {"team": "flights"}}, "spec": {"nodeSelector": {"pool": "cpu"}}}}}}]}}}}]}}
    kubeflow.kube.custom.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", kube_namespace, "trainjobs", trainjob)
    pods = sorted(_pods(kubeflow, kube_namespace, "jobset.sigs.k8s.io/jobset-name=tj", 2),
                  key=lambda p: p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"])
    node = pods[1]
    assert node["metadata"]["labels"]["jobset.sigs.k8s.io/replicatedjob-name"] == "node"
    assert (node["spec"]["hostname"], node["spec"]["subdomain"]) == ("tj-node-0-1", "tj")
    assert node["metadata"]["labels"]["team"] == "flights" and node["spec"]["nodeSelector"] == {"pool": "cpu"}
    container = node["spec"]["containers"][0]
    assert (container["image"], container["command"]) == ("dmlops/torch:test", ["python", "-m", "train"])
    env = _env(node)
    assert (env["PET_NNODES"], env["PET_NPROC_PER_NODE"], env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"]) == (
        "2", "2", "tj-node-0-0.tj", "29500")
    assert env["PET_NODE_RANK"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"

    for pod in pods:
        _set_phase(kubeflow, kube_namespace, pod["metadata"]["name"], "Succeeded")
    get = lambda: kubeflow.kube.get_custom("trainer.kubeflow.org", "v1alpha1", "trainjobs", kube_namespace, "tj")  # noqa: E731
    done = kubeflow.wait_for(lambda: _conditions(get()).get("Complete") == "True" and get(), what="TrainJob Complete")
    assert done["status"]["jobsStatus"] == [{"name": "node", "ready": 0, "succeeded": 1, "failed": 0, "active": 0, "suspended": 0}]

    missing = {**trainjob, "metadata": {"name": "nort"}, "spec": {**trainjob["spec"], "runtimeRef": {"name": "no-such-runtime"}}}
    kubeflow.kube.custom.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", kube_namespace, "trainjobs", missing)
    failed = kubeflow.wait_for(lambda: (lambda tj: _conditions(tj).get("Failed") == "True" and tj)(
        kubeflow.kube.get_custom("trainer.kubeflow.org", "v1alpha1", "trainjobs", kube_namespace, "nort")), what="Failed")
    assert failed["status"]["conditions"][0]["reason"] == "TrainingRuntimeNotSupported"
    kubeflow.raise_errors()
