"""mpi-operator (kubeflow/mpi-operator): MPIJob kubeflow.org/v2beta1.

Behaviours, each from ``pkg/controller/mpi_job_controller.go`` unless another file is named:

| behaviour | upstream |
|---|---|
| defaults: slotsPerWorker 1, sshAuthMountPath /root/.ssh, mpiImplementation OpenMPI, launcherCreationPolicy AtStartup | pkg/apis/kubeflow/v2beta1/default.go |
| ConfigMap ``<job>-config``: ``hostfile`` (``<job>-worker-<i>.<job>.<ns>.svc slots=<n>``) and ``discover_hosts.sh`` | newConfigMap |
| Secret ``<job>-ssh`` (kubernetes.io/ssh-auth): an ECDSA P-521 key pair, mounted as id_rsa, id_rsa.pub, authorized_keys | newSSHAuthSecret, setupSSHOnPod |
| headless Service ``<job>`` selecting operator-name + job-name; pods get hostname and subdomain ``<job>`` | newJobService, newWorker |
| worker Pods ``<job>-worker-<i>``: labels operator-name=mpi-operator, job-name, job-role=worker, replica-index; K_MPI_JOB_ROLE=worker; sshd -De when no command | newWorker |
| launcher: a batch Job ``<job>-launcher`` (job-role=launcher) with K_MPI_JOB_ROLE, OMPI_MCA_* hostfile env, OMPI_MCA_orte_set_default_slots, NVIDIA_VISIBLE_DEVICES/NVIDIA_DRIVER_CAPABILITIES emptied, /etc/mpi mounted; created at once, or once every worker is Ready under WaitForWorkersReady | newLauncherJob, newLauncherPodTemplate |
| conditions Created, Running (launcher pod and all workers running), Succeeded / Failed from the launcher Job's Complete / Failed | mpi_job_controller_status.go, updateMPIJobStatus |

The launcher's batch Job is run by the kube-controller-manager's Job controller (on the real node). Without
cluster DNS the launcher waits for the workers' pod IPs and gets ``hostAliases`` for their host names.
"""

from __future__ import annotations

import copy

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kubeharness.controllers.base import (
    Controller,
    Kube,
    Obj,
    condition_true,
    owner_reference,
    pod_phase,
    pod_ready,
    set_condition,
)

GROUP, VERSION, PLURAL = "kubeflow.org", "v2beta1", "mpijobs"
OPERATOR_NAME = "training.kubeflow.org/operator-name"
JOB_NAME = "training.kubeflow.org/job-name"
JOB_ROLE = "training.kubeflow.org/job-role"
REPLICA_INDEX = "training.kubeflow.org/replica-index"
CONFIG_MOUNT = "/etc/mpi"


def ssh_key_pair() -> dict[str, str]:
    """The Secret data mpi-operator generates: an EC private key (PEM) and its authorized_keys line."""
    key = ec.generate_private_key(ec.SECP521R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return {"ssh-privatekey": private, "ssh-publickey": public + "\n"}


def defaulted(job: Obj) -> Obj:
    spec = {"slotsPerWorker": 1, "sshAuthMountPath": "/root/.ssh", "mpiImplementation": "OpenMPI",
            "launcherCreationPolicy": "AtStartup", "runPolicy": {}, **job["spec"]}
    return {**job, "spec": spec}


def worker_host(job: Obj, index: int) -> str:
    meta = job["metadata"]
    return f"{meta['name']}-worker-{index}.{meta['name']}.{meta['namespace']}.svc"


def hostfile(job: Obj, workers: int) -> str:
    slots = job["spec"]["slotsPerWorker"]
    if job["spec"]["mpiImplementation"] == "OpenMPI":
        return "".join(f"{worker_host(job, i)} slots={slots}\n" for i in range(workers))
    return "".join(f"{worker_host(job, i)}:{slots}\n" for i in range(workers))


def discover_hosts(job: Obj, workers: int) -> str:
    return "#!/bin/sh\n" + "".join(f"echo {worker_host(job, i)}\n" for i in range(workers))


class MPIOperator(Controller):
    """MPIJob v2beta1 as mpi-operator reconciles it."""

    watches = ((GROUP, VERSION, PLURAL),)
    owns = ("pods", "jobs")

    def __init__(self, kube: Kube, cluster_dns: bool = False):
        super().__init__(kube)
        self.cluster_dns = cluster_dns

    def reconcile_all(self) -> None:
        self.each(GROUP, VERSION, PLURAL, self.reconcile)

    def reconcile(self, job: Obj) -> None:
        job = defaulted(job)
        meta = job["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        if condition_true(job, "Succeeded") or condition_true(job, "Failed"):
            return
        status = copy.deepcopy(job.get("status") or {})
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "Created", "True", "MPIJobCreated", f"MPIJob {namespace}/{name} is created.")
        specs = job["spec"]["mpiReplicaSpecs"]
        workers = (specs.get("Worker") or {}).get("replicas", 0)
        owner = [owner_reference(job)]
        self.kube.create("ConfigMap", namespace, {
            "metadata": {"name": f"{name}-config", "labels": {"app": name}, "ownerReferences": owner},
            "data": {"hostfile": hostfile(job, workers), "discover_hosts.sh": discover_hosts(job, workers)}})
        if self.kube.read("Secret", namespace, f"{name}-ssh") is None:
            self.kube.create("Secret", namespace, {
                "metadata": {"name": f"{name}-ssh", "labels": {"app": name}, "ownerReferences": owner},
                "type": "kubernetes.io/ssh-auth", "stringData": ssh_key_pair()})
        self.kube.create("Service", namespace, {
            "metadata": {"name": name, "labels": {"app": name}, "ownerReferences": owner},
            "spec": {"clusterIP": "None", "selector": {OPERATOR_NAME: "mpi-operator", JOB_NAME: name}}})
        pods = {p["metadata"]["name"]: p for p in self.kube.pods(namespace, f"{JOB_NAME}={name},{JOB_ROLE}=worker")}
        for index in range(workers):
            if f"{name}-worker-{index}" not in pods:
                self.kube.create("Pod", namespace, self._worker(job, index))
        worker_pods = [pods[f"{name}-worker-{i}"] for i in range(workers) if f"{name}-worker-{i}" in pods]
        launcher = self._launcher_job(job, worker_pods, workers)
        self._update_status(job, status, launcher, worker_pods)
        if status != (job.get("status") or {}):
            self.kube.patch_status(job, PLURAL, status)

    def _labels(self, name: str, role: str) -> dict[str, str]:
        return {OPERATOR_NAME: "mpi-operator", JOB_NAME: name, JOB_ROLE: role}

    def _ssh_volume(self, job: Obj, pod_spec: Obj) -> None:
        name = job["metadata"]["name"]
        mode = {"defaultMode": 0o600} if job["spec"]["sshAuthMountPath"] == "/root/.ssh" else {}
        pod_spec.setdefault("volumes", []).append({"name": "ssh-auth", "secret": {
            "secretName": f"{name}-ssh", **mode,
            "items": [{"key": "ssh-privatekey", "path": "id_rsa"}, {"key": "ssh-publickey", "path": "id_rsa.pub"},
                      {"key": "ssh-publickey", "path": "authorized_keys"}]}})
        pod_spec["containers"][0].setdefault("volumeMounts", []).append(
            {"name": "ssh-auth", "mountPath": job["spec"]["sshAuthMountPath"]})

    def _worker(self, job: Obj, index: int) -> Obj:
        name = job["metadata"]["name"]
        template = copy.deepcopy(job["spec"]["mpiReplicaSpecs"]["Worker"]["template"])
        labels = {**(template.get("metadata") or {}).get("labels", {}), **self._labels(name, "worker"),
                  REPLICA_INDEX: str(index)}
        spec = template["spec"]
        spec.update(hostname=f"{name}-worker-{index}", subdomain=name)
        restart = job["spec"]["mpiReplicaSpecs"]["Worker"].get("restartPolicy") or "Never"
        spec["restartPolicy"] = "Never" if restart == "ExitCode" else restart
        container = spec["containers"][0]
        if not container.get("command") and not container.get("args"):
            container["command"] = ["/usr/sbin/sshd", "-De"]
        container["env"] = (container.get("env") or []) + [{"name": "K_MPI_JOB_ROLE", "value": "worker"}]
        self._ssh_volume(job, spec)
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-worker-{index}", "labels": labels,
                             "annotations": (template.get("metadata") or {}).get("annotations") or {},
                             "ownerReferences": [owner_reference(job)]},
                "spec": spec}

    def _launcher_job(self, job: Obj, worker_pods: list[Obj], workers: int) -> Obj | None:
        meta = job["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        existing = self.kube.read("Job", namespace, f"{name}-launcher")
        if existing is not None:
            return existing
        all_ready = len(worker_pods) == workers and all(pod_ready(p) for p in worker_pods)
        if job["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady" and not all_ready:
            return None
        if not self.cluster_dns and not all((p.get("status") or {}).get("podIP") for p in worker_pods):
            return None  # the host aliases need the workers' IPs
        if len(worker_pods) < workers:
            return None
        body = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": f"{name}-launcher", "labels": {"app": name},
                             "ownerReferences": [owner_reference(job)]},
                "spec": {"backoffLimit": job["spec"]["runPolicy"].get("backoffLimit", 6),
                         "podReplacementPolicy": "Failed", "template": self._launcher_template(job, worker_pods)}}
        if job["spec"]["runPolicy"].get("activeDeadlineSeconds") is not None:
            body["spec"]["activeDeadlineSeconds"] = job["spec"]["runPolicy"]["activeDeadlineSeconds"]
        return self.kube.create("Job", namespace, body)

    def _launcher_template(self, job: Obj, worker_pods: list[Obj]) -> Obj:
        name = job["metadata"]["name"]
        replica = job["spec"]["mpiReplicaSpecs"]["Launcher"]
        template = copy.deepcopy(replica["template"])
        pod_meta = template.get("metadata") or {}
        spec = template["spec"]
        spec.update(hostname=f"{name}-launcher", subdomain=name)
        container = spec["containers"][0]
        env = [{"name": "K_MPI_JOB_ROLE", "value": "launcher"}]
        if job["spec"]["mpiImplementation"] == "OpenMPI":
            env += [{"name": "OMPI_MCA_orte_keep_fqdn_hostnames", "value": "true"},
                    {"name": "OMPI_MCA_orte_default_hostfile", "value": f"{CONFIG_MOUNT}/hostfile"},
                    {"name": "OMPI_MCA_plm_rsh_args", "value": "-o ConnectionAttempts=10"},
                    {"name": "OMPI_MCA_orte_set_default_slots", "value": str(job["spec"]["slotsPerWorker"])}]
        env += [{"name": "NVIDIA_VISIBLE_DEVICES", "value": ""}, {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": ""}]
        container["env"] = (container.get("env") or []) + env
        self._ssh_volume(job, spec)
        restart = replica.get("restartPolicy") or "Never"
        spec["restartPolicy"] = "Never" if restart == "ExitCode" else restart
        spec["volumes"].append({"name": "mpi-job-config", "configMap": {"name": f"{name}-config", "items": [
            {"key": "hostfile", "path": "hostfile", "mode": 0o444},
            {"key": "discover_hosts.sh", "path": "discover_hosts.sh", "mode": 0o555}]}})
        container["volumeMounts"].append({"name": "mpi-job-config", "mountPath": CONFIG_MOUNT})
        if not self.cluster_dns:
            spec["hostAliases"] = (spec.get("hostAliases") or []) + [
                {"ip": p["status"]["podIP"], "hostnames": [worker_host(job, i), f"{name}-worker-{i}"]}
                for i, p in enumerate(worker_pods)]
        return {"metadata": {"labels": {**(pod_meta.get("labels") or {}), **self._labels(name, "launcher")},
                             "annotations": pod_meta.get("annotations") or {}},
                "spec": spec}

    def _update_status(self, job: Obj, status: Obj, launcher: Obj | None, worker_pods: list[Obj]) -> None:
        meta = job["metadata"]
        where = f"{meta['namespace']}/{meta['name']}"
        conditions = status["conditions"]
        replica = {"Worker": {"active": 0, "succeeded": 0, "failed": 0}}
        for pod in worker_pods:
            phase = pod_phase(pod)
            key = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}.get(phase)
            if key:
                replica["Worker"][key] += 1
        launcher_running = 0
        if launcher is not None:
            launcher_status = launcher.get("status") or {}
            job_conditions = {c["type"]: c for c in launcher_status.get("conditions") or [] if c.get("status") == "True"}
            replica["Launcher"] = {"active": launcher_status.get("active") or 0,
                                   "succeeded": 1 if "Complete" in job_conditions else 0,
                                   "failed": launcher_status.get("failed") or 0}
            launcher_running = launcher_status.get("active") or 0
            if "Complete" in job_conditions:
                set_condition(conditions, "Succeeded", "True", "MPIJobSucceeded", f"MPIJob {where} successfully completed.")
                status["completionTime"] = launcher_status.get("completionTime")
            elif "Failed" in job_conditions:
                failed = job_conditions["Failed"]
                set_condition(conditions, "Failed", "True", failed.get("reason") or "MPIJobFailed",
                              failed.get("message") or f"MPIJob {where} has failed")
        status["replicaStatuses"] = replica
        finished = condition_true({"status": status}, "Succeeded") or condition_true({"status": status}, "Failed")
        if finished:
            if not any(c["type"] == "Running" for c in conditions):
                set_condition(conditions, "Running", "False", "MPIJobRunning",
                              f"MPIJob {where} is finished but Running condition was never set.")
            else:
                set_condition(conditions, "Running", "False", "MPIJobRunning", f"MPIJob {where} is running.")
        elif launcher is not None and launcher_running >= 1 and replica["Worker"]["active"] == len(worker_pods):
            set_condition(conditions, "Running", "True", "MPIJobRunning", f"MPIJob {where} is running.")
