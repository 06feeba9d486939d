"""Training Operator v1 (kubeflow/trainer, branch release-1.9): MPIJob kubeflow.org/v1.

Its CRD shares the name ``mpijobs.kubeflow.org`` with mpi-operator's v2beta1 (``mpi_operator``): a cluster
serves one of them, and this controller is idle where v1 is not served. Behaviours, each from
``pkg/controller.v1/mpi/mpijob_controller.go`` unless another file is named:

| behaviour | upstream |
|---|---|
| ConfigMap ``<job>-config``: ``hostfile`` (``<job>-worker-<i> slots=<n>``) and ``kubexec.sh`` (``kubectl exec`` into a worker) | newConfigMap |
| launcher ServiceAccount, Role (pods get/list/watch, pods/exec create on the workers) and RoleBinding, all ``<job>-launcher`` | newLauncherServiceAccount, newLauncherRole, newLauncherRoleBinding |
| worker Pods ``<job>-worker-<i>``: labels operator-name=mpijob-controller, job-name, replica-type=worker; ``sleep 365d`` without a command; kubexec.sh mounted at /etc/mpi | newWorker, mpijob.go defaultReplicaLabels |
| launcher Pod ``<job>-launcher`` created with the workers: replica-type=launcher, job-role=master; init container ``kubectl-delivery`` (TARGET_DIR=/opt/kube); OMPI_MCA_plm_rsh_agent, OMPI_MCA_orte_default_hostfile, I_MPI_HYDRA_BOOTSTRAP(_EXEC), NVIDIA_* emptied | newLauncher, pkg/config/config.go |
| restartPolicy from the replica spec (ExitCode: Never) | core/pod.go SetRestartPolicy |
| conditions Created, Running (launcher and every worker running), Succeeded / Failed from the launcher pod's phase | updateMPIJobStatus |

The launcher runs its ranks through ``kubectl exec``: its ``kubectl-delivery`` image (see
``KUBECTL_DELIVERY_IMAGE``) must be loadable where the pods run.
"""

from __future__ import annotations

import copy

from kubeharness.controllers.base import Controller, Obj, condition_true, now, owner_reference, pod_phase, set_condition

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "mpijobs"
OPERATOR_NAME = "training.kubeflow.org/operator-name"
JOB_NAME = "training.kubeflow.org/job-name"
REPLICA_TYPE = "training.kubeflow.org/replica-type"
JOB_ROLE = "training.kubeflow.org/job-role"
KUBECTL_DELIVERY_IMAGE = "ghcr.io/kubeflow/training-v1/kubectl-delivery:latest"
CONFIG_MOUNT, KUBECTL_MOUNT = "/etc/mpi", "/opt/kube"


def kubexec(job: Obj) -> str:
    main = job["spec"].get("mainContainer")
    container = f" --container {main}" if main else ""
    return f'#!/bin/sh\nset -x\nPOD_NAME=$1\nshift\n{KUBECTL_MOUNT}/kubectl exec ${{POD_NAME}}{container} -- /bin/sh -c "$*"'


class TrainingOperatorMPI(Controller):
    """MPIJob v1 as the Training Operator reconciles it."""

    watches = ((GROUP, VERSION, PLURAL),)

    def reconcile_all(self) -> None:
        self.each(GROUP, VERSION, PLURAL, self.reconcile)

    def reconcile(self, job: Obj) -> None:
        meta, specs = job["metadata"], job["spec"]["mpiReplicaSpecs"]
        name, namespace = meta["name"], meta["namespace"]
        if condition_true(job, "Succeeded") or condition_true(job, "Failed"):
            return
        status = copy.deepcopy(job.get("status") or {})
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "Created", "True", "MPIJobCreated", f"MPIJob {name} is created.")
        status.setdefault("startTime", meta.get("creationTimestamp"))
        workers = (specs.get("Worker") or {}).get("replicas", 0)
        slots = job["spec"].get("slotsPerWorker") or 1
        owner = [owner_reference(job)]
        launcher_name = f"{name}-launcher"
        worker_names = [f"{name}-worker-{i}" for i in range(workers)]
        self.kube.create("ConfigMap", namespace, {
            "metadata": {"name": f"{name}-config", "labels": {"app": name}, "ownerReferences": owner},
            "data": {"hostfile": "".join(f"{w} slots={slots}\n" for w in worker_names), "kubexec.sh": kubexec(job)}})
        self._launcher_rbac(job, launcher_name, worker_names)
        pods = {p["metadata"]["name"]: p for p in self.kube.pods(namespace, f"{JOB_NAME}={name}")}
        for index, worker in enumerate(worker_names):
            if worker not in pods:
                self.kube.create("Pod", namespace, self._worker(job, index))
        if launcher_name not in pods:
            self.kube.create("Pod", namespace, self._launcher(job))
        launcher = pods.get(launcher_name)
        running = sum(1 for w in worker_names if w in pods and pod_phase(pods[w]) == "Running")
        where = f"{namespace}/{name}"
        if launcher is not None and pod_phase(launcher) == "Succeeded":
            set_condition(conditions, "Succeeded", "True", "MPIJobSucceeded", f"MPIJob {where} successfully completed.")
            status["completionTime"] = status.get("completionTime") or now()
        elif launcher is not None and pod_phase(launcher) == "Failed":
            reason = (launcher.get("status") or {}).get("reason") or "MPIJobFailed"
            set_condition(conditions, "Failed", "True", reason, f"MPIJob {where} has failed")
            status["completionTime"] = status.get("completionTime") or now()
        elif launcher is not None and pod_phase(launcher) == "Running" and running == len(worker_names):
            set_condition(conditions, "Running", "True", "MPIJobRunning", f"MPIJob {where} is running.")
        if status != (job.get("status") or {}):
            self.kube.patch_status(job, PLURAL, status)

    def _launcher_rbac(self, job: Obj, launcher: str, workers: list[str]) -> None:
        namespace, owner = job["metadata"]["namespace"], [owner_reference(job)]
        meta = {"name": launcher, "labels": {"app": job["metadata"]["name"]}, "ownerReferences": owner}
        if self.kube.read("ServiceAccount", namespace, launcher) is None:
            self.kube.core.create_namespaced_service_account(namespace, {"metadata": meta})
        role = {"metadata": meta, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"], "resourceNames": workers}]}
        binding = {"metadata": meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": launcher},
                   "subjects": [{"kind": "ServiceAccount", "name": launcher, "namespace": namespace}]}
        for create, body in ((self.kube.rbac.create_namespaced_role, role),
                             (self.kube.rbac.create_namespaced_role_binding, binding)):
            try:
                create(namespace, body)
            except Exception as error:  # noqa: BLE001 - it exists already
                if getattr(error, "status", None) != 409:
                    raise

    def _template(self, job: Obj, rtype: str) -> tuple[Obj, Obj]:
        replica = job["spec"]["mpiReplicaSpecs"][rtype]
        template = copy.deepcopy(replica["template"])
        restart = replica.get("restartPolicy") or "Never"
        template["spec"]["restartPolicy"] = "Never" if restart == "ExitCode" else restart
        labels = {**((template.get("metadata") or {}).get("labels") or {}), OPERATOR_NAME: "mpijob-controller",
                  JOB_NAME: job["metadata"]["name"], REPLICA_TYPE: rtype.lower()}
        return template, labels

    def _worker(self, job: Obj, index: int) -> Obj:
        name = job["metadata"]["name"]
        template, labels = self._template(job, "Worker")
        spec = template["spec"]
        container = spec["containers"][0]
        if not container.get("command"):
            container["command"], container["args"] = ["sleep"], ["365d"]
        container.setdefault("volumeMounts", []).append({"name": "mpi-job-config", "mountPath": CONFIG_MOUNT})
        spec.setdefault("volumes", []).append({"name": "mpi-job-config", "configMap": {
            "name": f"{name}-config", "items": [{"key": "kubexec.sh", "path": "kubexec.sh", "mode": 0o555}]}})
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-worker-{index}", "labels": labels,
                             "annotations": (template.get("metadata") or {}).get("annotations") or {},
                             "ownerReferences": [owner_reference(job)]},
                "spec": spec}

    def _launcher(self, job: Obj) -> Obj:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        template, labels = self._template(job, "Launcher")
        labels[JOB_ROLE] = "master"
        spec = template["spec"]
        spec.setdefault("serviceAccountName", f"{name}-launcher")
        spec["initContainers"] = (spec.get("initContainers") or []) + [{
            "name": "kubectl-delivery", "image": KUBECTL_DELIVERY_IMAGE, "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "TARGET_DIR", "value": KUBECTL_MOUNT}, {"name": "NAMESPACE", "value": namespace}],
            "volumeMounts": [{"name": "mpi-job-kubectl", "mountPath": KUBECTL_MOUNT},
                             {"name": "mpi-job-config", "mountPath": CONFIG_MOUNT}],
            "resources": {kind: {"cpu": "100m", "memory": "512Mi", "ephemeral-storage": "5Gi"}
                          for kind in ("limits", "requests")}}]
        container = spec["containers"][0]
        names = {e["name"] for e in container.get("env") or []}
        env = [{"name": "OMPI_MCA_plm_rsh_agent", "value": f"{CONFIG_MOUNT}/kubexec.sh"},
               {"name": "OMPI_MCA_orte_default_hostfile", "value": f"{CONFIG_MOUNT}/hostfile"},
               {"name": "NVIDIA_VISIBLE_DEVICES", "value": ""}, {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": ""}]
        if "I_MPI_HYDRA_BOOTSTRAP" not in names:
            env.append({"name": "I_MPI_HYDRA_BOOTSTRAP", "value": "rsh"})
        if "I_MPI_HYDRA_BOOTSTRAP_EXEC" not in names:
            env.append({"name": "I_MPI_HYDRA_BOOTSTRAP_EXEC", "value": f"{CONFIG_MOUNT}/kubexec.sh"})
        container["env"] = (container.get("env") or []) + env
        container.setdefault("volumeMounts", []).extend([{"name": "mpi-job-kubectl", "mountPath": KUBECTL_MOUNT},
                                                         {"name": "mpi-job-config", "mountPath": CONFIG_MOUNT}])
        spec.setdefault("volumes", []).extend([
            {"name": "mpi-job-kubectl", "emptyDir": {}},
            {"name": "mpi-job-config", "configMap": {"name": f"{name}-config", "items": [
                {"key": "kubexec.sh", "path": "kubexec.sh", "mode": 0o555},
                {"key": "hostfile", "path": "hostfile", "mode": 0o444}]}}])
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-launcher", "labels": labels,
                             "annotations": (template.get("metadata") or {}).get("annotations") or {},
                             "ownerReferences": [owner_reference(job)]},
                "spec": spec}
