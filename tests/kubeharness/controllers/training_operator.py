"""Training Operator v1 (kubeflow/trainer, branch release-1.9): PyTorchJob and TFJob.

Behaviours, each from the upstream file named (paths under ``pkg/`` of that branch):

| behaviour | upstream |
|---|---|
| defaults: replicas 1, restartPolicy (PyTorch OnFailure, TF Never), port ``pytorchjob-port`` 23456 / ``tfjob-port`` 2222, nprocPerNode ``auto`` | apis/kubeflow.org/v1/{pytorch,tensorflow}_defaults.go |
| one Pod and one headless Service per replica, both named ``<job>-<type>-<index>`` | controller.v1/common/{pod,service}.go, util.go GenGeneralName |
| pod labels operator-name, job-name, replica-type (lower case), replica-index; job-role=master on master/chief | controller.v1/common/pod.go, apis/kubeflow.org/v1/common_types.go |
| restartPolicy ExitCode becomes the pod's Never | core/pod.go SetRestartPolicy |
| PyTorch env: PYTHONUNBUFFERED, MASTER_PORT/PET_MASTER_PORT, MASTER_ADDR/PET_MASTER_ADDR (master's service), WORLD_SIZE, RANK (workers: index+1), PET_NODE_RANK, PET_NPROC_PER_NODE, PET_NNODES | controller.v1/pytorch/{envvar,master}.go |
| TF env: TF_CONFIG {cluster: {type: [svc.ns.svc:port]}, task: {type, index}, environment: cloud} | controller.v1/tensorflow/tensorflow.go |
| conditions Created, Running, Restarting, Succeeded, Failed with reasons ``<Kind><Condition>`` | controller.v1/common/job.go, {pytorch,tensorflow}/*_controller.go UpdateJobStatus |
| success: PyTorch master succeeded (no master: all workers); TF chief/master succeeded (none: worker 0, the default success policy) | pytorchjob_controller.go, tfjob_controller.go UpdateJobStatus |
| a failed pod is deleted and recreated under OnFailure/Always, or ExitCode with a code >= 128; otherwise the job fails | controller.v1/common/pod.go ReconcilePods, util/train/train_util.go |
| backoffLimit: restarts reaching it fail the job ("... reached the specified backoff limit") | controller.v1/common/job.go |

Without cluster DNS (the test node has none) each Service gets a ClusterIP instead of being headless and
every pod gets ``hostAliases`` mapping the job's service names to those IPs: the names resolve as the
headless services' DNS records would.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from kubeharness.controllers.base import (
    Controller,
    Kube,
    Obj,
    condition_true,
    exit_code,
    now,
    owner_reference,
    pod_phase,
    set_condition,
)

GROUP, VERSION = "kubeflow.org", "v1"
OPERATOR_NAME = "training.kubeflow.org/operator-name"
JOB_NAME = "training.kubeflow.org/job-name"
REPLICA_TYPE = "training.kubeflow.org/replica-type"
REPLICA_INDEX = "training.kubeflow.org/replica-index"
JOB_ROLE = "training.kubeflow.org/job-role"


@dataclass(frozen=True)
class Framework:
    """What differs between the Training Operator's job kinds."""

    kind: str
    plural: str
    specs_key: str
    container: str
    port_name: str
    port: int
    default_restart: str
    controller_name: str
    #: replica types whose success ends the job, in precedence order
    deciding: tuple[str, ...]
    #: with none of them: "all" workers must succeed (PyTorch), or worker "0" (TF's default success policy)
    without_deciding: str


PYTORCH = Framework("PyTorchJob", "pytorchjobs", "pytorchReplicaSpecs", "pytorch", "pytorchjob-port", 23456,
                    "OnFailure", "pytorchjob-controller", ("Master",), "all")
TENSORFLOW = Framework("TFJob", "tfjobs", "tfReplicaSpecs", "tensorflow", "tfjob-port", 2222,
                       "Never", "tfjob-controller", ("Chief", "Master"), "0")


def replica_name(job: str, rtype: str, index: int) -> str:
    return f"{job}-{rtype.lower()}-{index}".replace("/", "-")


def container_port(template: Obj, framework: Framework) -> int:
    for container in template["spec"]["containers"]:
        if container["name"] == framework.container:
            for port in container.get("ports") or []:
                if port.get("name") == framework.port_name:
                    return port["containerPort"]
    return framework.port


def pytorch_env(job: Obj, rtype: str, index: int) -> list[Obj]:
    specs = job["spec"]["pytorchReplicaSpecs"]
    total = sum(spec.get("replicas", 1) for spec in specs.values())
    nproc = job["spec"].get("nprocPerNode") or "auto"
    world_size = total * (int(nproc) if nproc.isdigit() else 1)
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if "Master" in specs:
        port = str(container_port(specs["Master"]["template"], PYTORCH))
        address = replica_name(job["metadata"]["name"], "Master", 0)
        rank = index + 1 if rtype == "Worker" else index
        env += [{"name": "MASTER_PORT", "value": port}, {"name": "PET_MASTER_PORT", "value": port},
                {"name": "MASTER_ADDR", "value": address}, {"name": "PET_MASTER_ADDR", "value": address},
                {"name": "WORLD_SIZE", "value": str(world_size)}, {"name": "RANK", "value": str(rank)},
                {"name": "PET_NODE_RANK", "value": str(rank)}]
    env += [{"name": "PET_NPROC_PER_NODE", "value": nproc}, {"name": "PET_NNODES", "value": str(total)}]
    return env


def tensorflow_env(job: Obj, rtype: str, index: int) -> list[Obj]:
    meta = job["metadata"]
    cluster = {}
    for other, spec in job["spec"]["tfReplicaSpecs"].items():
        port = container_port(spec["template"], TENSORFLOW)
        cluster[other.lower()] = [f"{replica_name(meta['name'], other, i)}.{meta['namespace']}.svc:{port}"
                                  for i in range(spec.get("replicas", 1))]
    config = {"cluster": cluster, "task": {"type": rtype.lower(), "index": index}, "environment": "cloud"}
    return [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "TF_CONFIG", "value": json.dumps(config)}]


ENV = {"PyTorchJob": pytorch_env, "TFJob": tensorflow_env}


def host_aliases(services: list[Obj], namespace: str) -> list[Obj]:
    """Stand-in for cluster DNS: each service name (short and ``.ns.svc``) to its ClusterIP."""
    return [{"ip": s["spec"]["clusterIP"],
             "hostnames": [s["metadata"]["name"], f"{s['metadata']['name']}.{namespace}.svc",
                           f"{s['metadata']['name']}.{namespace}.svc.cluster.local"]}
            for s in services if s["spec"].get("clusterIP") not in (None, "", "None")]


class TrainingOperator(Controller):
    """PyTorchJob and TFJob as the Training Operator v1 reconciles them."""

    watches = ((GROUP, VERSION, PYTORCH.plural), (GROUP, VERSION, TENSORFLOW.plural))

    def __init__(self, kube: Kube, cluster_dns: bool = False):
        super().__init__(kube)
        self.cluster_dns = cluster_dns

    def reconcile_all(self) -> None:
        for framework in (PYTORCH, TENSORFLOW):
            self.each(GROUP, VERSION, framework.plural, lambda job, f=framework: self.reconcile(job, f))

    def reconcile(self, job: Obj, framework: Framework) -> None:
        meta = job["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        status = copy.deepcopy(job.get("status") or {})
        conditions = status.setdefault("conditions", [])
        if condition_true(job, "Succeeded") or condition_true(job, "Failed"):
            return
        set_condition(conditions, "Created", "True", f"{framework.kind}Created", f"{framework.kind} {name} is created.")
        specs = {rtype: {"replicas": 1, **spec} for rtype, spec in job["spec"][framework.specs_key].items()}
        services = self._services(job, framework, specs)
        pods = {p["metadata"]["name"]: p for p in self.kube.pods(namespace, f"{JOB_NAME}={name}")}
        replica_statuses, restarts = {}, 0
        for rtype, spec in specs.items():
            restart_policy = spec.get("restartPolicy") or framework.default_restart
            counts = {"active": 0, "succeeded": 0, "failed": 0}
            for index in range(spec["replicas"]):
                pod = pods.get(replica_name(name, rtype, index))
                if pod is None:
                    self._create_pod(job, framework, rtype, index, spec, restart_policy, services)
                    continue
                restarts += sum(s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or [])
                phase = pod_phase(pod)
                if phase == "Failed":
                    code = exit_code(pod, framework.container)
                    retry = restart_policy in ("OnFailure", "Always") or (
                        restart_policy == "ExitCode" and code is not None and code >= 128)
                    if retry:
                        self.kube.delete_pod(namespace, pod["metadata"]["name"])
                        set_condition(conditions, "Restarting", "True", f"{framework.kind}Restarting",
                                      f"job {name} is restarting because {rtype} replica(s) failed.")
                        continue
                    counts["failed"] += 1
                elif phase == "Succeeded":
                    counts["succeeded"] += 1
                    counts.setdefault("succeededIndexes", []).append(index)
                elif phase == "Running":
                    counts["active"] += 1
            replica_statuses[rtype] = counts
        status["replicaStatuses"] = {rtype: {k: v for k, v in c.items() if k != "succeededIndexes"}
                                     for rtype, c in replica_statuses.items()}
        self._update_conditions(job, framework, specs, replica_statuses, restarts, status)
        if status != (job.get("status") or {}):
            self.kube.patch_status(job, framework.plural, status)

    def _update_conditions(self, job: Obj, framework: Framework, specs: dict[str, Obj], counts: dict[str, Obj],
                           restarts: int, status: Obj) -> None:
        name, kind, conditions = job["metadata"]["name"], framework.kind, status["conditions"]
        status.setdefault("startTime", job["metadata"].get("creationTimestamp"))
        deciding = next((rtype for rtype in framework.deciding if rtype in specs), None)
        if deciding is not None:
            done = counts[deciding]["succeeded"] >= specs[deciding]["replicas"]
        elif framework.without_deciding == "all":
            done = "Worker" in specs and counts["Worker"]["succeeded"] >= specs["Worker"]["replicas"]
        else:
            done = 0 in counts.get("Worker", {}).get("succeededIndexes", [])
        if any(c["active"] for c in counts.values()):
            set_condition(conditions, "Running", "True", f"{kind}Running", f"{kind} {name} is running.")
        if done:
            set_condition(conditions, "Running", "False", f"{kind}Running", f"{kind} {name} is running.")
            set_condition(conditions, "Succeeded", "True", f"{kind}Succeeded", f"{kind} {name} is successfully completed.")
            status["completionTime"] = status.get("completionTime") or now()
            return
        failed = [rtype for rtype, c in counts.items() if c["failed"]]
        backoff_limit = (job["spec"].get("runPolicy") or {}).get("backoffLimit")
        if failed:
            message = f"{kind} {name} is failed because {counts[failed[0]]['failed']} {failed[0]} replica(s) failed."
        elif backoff_limit is not None and restarts >= backoff_limit > -1 and restarts:
            message = f"Job {name} has failed because it has reached the specified backoff limit"
        else:
            return
        set_condition(conditions, "Running", "False", f"{kind}Failed", message)
        set_condition(conditions, "Failed", "True", f"{kind}Failed", message)
        status["completionTime"] = status.get("completionTime") or now()

    def _labels(self, framework: Framework, name: str, rtype: str, index: int) -> dict[str, str]:
        labels = {OPERATOR_NAME: framework.controller_name, JOB_NAME: name, REPLICA_TYPE: rtype.lower(),
                  REPLICA_INDEX: str(index)}
        if rtype in ("Master", "Chief"):
            labels[JOB_ROLE] = "master"
        return labels

    def _services(self, job: Obj, framework: Framework, specs: dict[str, Obj]) -> list[Obj]:
        meta = job["metadata"]
        services = []
        for rtype, spec in specs.items():
            port = container_port(spec["template"], framework)
            for index in range(spec["replicas"]):
                service_name = replica_name(meta["name"], rtype, index)
                service = self.kube.read("Service", meta["namespace"], service_name)
                if service is None:
                    labels = self._labels(framework, meta["name"], rtype, index)
                    labels.pop(JOB_ROLE, None)
                    body = {"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": service_name, "labels": labels,
                                         "ownerReferences": [owner_reference(job)]},
                            "spec": {"selector": labels,
                                     "ports": [{"name": framework.port_name, "port": port, "targetPort": port}]}}
                    if self.cluster_dns:
                        body["spec"]["clusterIP"] = "None"
                    service = self.kube.create("Service", meta["namespace"], body) or self.kube.read(
                        "Service", meta["namespace"], service_name)
                services.append(service)
        return services

    def _create_pod(self, job: Obj, framework: Framework, rtype: str, index: int, spec: Obj, restart_policy: str,
                    services: list[Obj]) -> None:
        meta = job["metadata"]
        template = copy.deepcopy(spec["template"])
        pod_meta = template.get("metadata") or {}
        labels = {**(pod_meta.get("labels") or {}), **self._labels(framework, meta["name"], rtype, index)}
        pod_spec = template["spec"]
        pod_spec["restartPolicy"] = "Never" if restart_policy == "ExitCode" else restart_policy
        for container in pod_spec["containers"]:
            container["env"] = (container.get("env") or []) + ENV[framework.kind](job, rtype, index)
            if container["name"] == framework.container and not any(
                    p.get("name") == framework.port_name for p in container.get("ports") or []):
                container.setdefault("ports", []).append({"name": framework.port_name, "containerPort": framework.port})
        if not self.cluster_dns:
            pod_spec["hostAliases"] = (pod_spec.get("hostAliases") or []) + host_aliases(services, meta["namespace"])
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {**pod_meta, "name": replica_name(meta["name"], rtype, index), "labels": labels,
                             "ownerReferences": [owner_reference(job)]},
                "spec": pod_spec}
        self.kube.create("Pod", meta["namespace"], body)


