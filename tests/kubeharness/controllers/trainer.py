"""Kubeflow Trainer v2 (kubeflow/trainer, master): TrainJob on a (Cluster)TrainingRuntime with the torch policy.

JobSet's CRD is not vendored, so the pods are created as JobSet and its indexed batch Jobs would create
them. Behaviours, each from the upstream file named:

| behaviour | upstream |
|---|---|
| resolve ``spec.runtimeRef`` (kind ClusterTrainingRuntime or TrainingRuntime in the namespace); missing: condition Failed | pkg/runtime/core/{clustertrainingruntime,trainingruntime}.go |
| ``runtimePatches``: each patch's replicatedJobs merged by name into the runtime's template | pkg/apis/trainer/v1alpha1/trainjob_types.go (RuntimePatch) |
| trainer image/command/args/env/resourcesPerNode go into the ``node`` container of the trainer ancestor job; numNodes sets its parallelism | pkg/runtime/framework/plugins/jobset/builder.go, plugins/torch/torch.go |
| torch env PET_NNODES, PET_NPROC_PER_NODE (auto: the CPU count without GPUs), PET_NODE_RANK from the completion-index annotation, PET_MASTER_ADDR ``<job>-node-0-0.<job>``, PET_MASTER_PORT 29500; port 29500 | plugins/torch/torch.go, pkg/constants/constants.go |
| one Job ``<jobset>-<replicatedJob>-<i>`` per replica; pods ``<job>-<index>-<suffix>`` with hostname ``<job>-<index>``, subdomain = the JobSet's headless Service ``<jobset>`` | kubernetes-sigs/jobset pkg/controllers/jobset_controller.go; kubernetes pkg/controller/job/indexed_job_utils.go |
| labels jobset.sigs.k8s.io/jobset-name, replicatedjob-name, replicatedjob-replicas, job-index; batch.kubernetes.io/job-completion-index (label and annotation), job-name | jobset api/jobset/v1alpha2/jobset_types.go; kubernetes pkg/controller/job |
| a failed pod is replaced (restarted in place under OnFailure, JobSet's default) until failures and restarts exceed the Job's backoffLimit (default 6); then the JobSet fails (failurePolicy maxRestarts 0) | kubernetes pkg/controller/job/job_controller.go; jobset failure policy |
| success: every Job of the successPolicy's target replicated jobs (default all) complete | jobset pkg/controllers/success_policy.go |
| TrainJob conditions Complete (AllJobsCompleted, "jobset completed successfully") / Failed (FailedJobs), ``jobsStatus`` per replicated job | plugins/jobset/jobset.go Status |

Without cluster DNS a ClusterIP Service named ``<job>-node-0-0`` selects rank 0 and every pod gets a host
alias for ``<job>-node-0-0.<job>``: the master address resolves as JobSet's DNS hostnames would.
"""

from __future__ import annotations

import copy
import secrets

from kubeharness.controllers.base import Controller, Kube, Obj, condition_true, owner_reference, pod_phase, set_condition

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
JOBSET = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
REPLICATED_JOB_REPLICAS = "jobset.sigs.k8s.io/replicatedjob-replicas"
JOB_INDEX = "jobset.sigs.k8s.io/job-index"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"
TRAINER_PORT = 29500


def merge_named(base: object, patch: object) -> object:
    """Merge ``patch`` into ``base``: dicts key by key, lists of named items by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge_named(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base + patch):
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((i for i, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if at is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[at] = merge_named(merged_list[at], item)
        return merged_list
    return copy.deepcopy(patch)


def cpu_count(resources: Obj) -> int:
    quantity = str((resources.get("limits") or resources.get("requests") or {}).get("cpu", "1"))
    return max(1, int(float(quantity[:-1]) / 1000) if quantity.endswith("m") else int(float(quantity)))


class Trainer(Controller):
    """TrainJob as Kubeflow Trainer + JobSet + the Job controller run it (torch policy)."""

    watches = ((GROUP, VERSION, PLURAL),)

    def __init__(self, kube: Kube, cluster_dns: bool = False):
        super().__init__(kube)
        self.cluster_dns = cluster_dns

    def reconcile_all(self) -> None:
        self.each(GROUP, VERSION, PLURAL, self.reconcile)

    def runtime(self, trainjob: Obj) -> Obj | None:
        ref = trainjob["spec"]["runtimeRef"]
        if ref.get("kind", "ClusterTrainingRuntime") == "ClusterTrainingRuntime":
            try:
                return self.kube.custom.get_cluster_custom_object(GROUP, VERSION, "clustertrainingruntimes", ref["name"])
            except Exception as error:  # noqa: BLE001 - only "not found" is an answer
                if getattr(error, "status", None) == 404:
                    return None
                raise
        return self.kube.get_custom(GROUP, VERSION, "trainingruntimes", trainjob["metadata"]["namespace"], ref["name"])

    def reconcile(self, trainjob: Obj) -> None:
        meta = trainjob["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        if condition_true(trainjob, "Complete") or condition_true(trainjob, "Failed"):
            return
        status = copy.deepcopy(trainjob.get("status") or {})
        conditions = status.setdefault("conditions", [])
        runtime = self.runtime(trainjob)
        if runtime is None:
            ref = trainjob["spec"]["runtimeRef"]
            set_condition(conditions, "Failed", "True", "TrainingRuntimeNotSupported",
                          f"{ref.get('kind', 'ClusterTrainingRuntime')} {ref['name']} not found")
            self.kube.patch_status(trainjob, PLURAL, status)
            return
        spec = runtime["spec"]["template"]["spec"]
        for patch in trainjob["spec"].get("runtimePatches") or []:
            patched = (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {})
            spec = merge_named(spec, patched)
        owner = [owner_reference(trainjob)]
        self.kube.create("Service", namespace, {
            "metadata": {"name": name, "ownerReferences": owner},
            "spec": {"clusterIP": "None", "selector": {JOBSET: name}, "publishNotReadyAddresses":
                     bool((spec.get("network") or {}).get("publishNotReadyAddresses"))}})
        master = self._master_service(trainjob)
        jobs_status, outcomes = [], {}
        for rjob in spec["replicatedJobs"]:
            counts = {"name": rjob["name"], "ready": 0, "succeeded": 0, "failed": 0, "active": 0, "suspended": 0}
            for job_index in range(rjob.get("replicas", 1)):
                outcome = self._reconcile_job(trainjob, runtime, rjob, job_index, master)
                counts[{"complete": "succeeded", "failed": "failed"}.get(outcome, "active")] += 1
                outcomes.setdefault(rjob["name"], []).append(outcome)
            jobs_status.append(counts)
        status["jobsStatus"] = jobs_status
        policy = spec.get("successPolicy") or {}
        targets = policy.get("targetReplicatedJobs") or [r["name"] for r in spec["replicatedJobs"]]
        target_outcomes = [o for target in targets for o in outcomes.get(target, [])]
        complete = (any if policy.get("operator") == "Any" else all)(o == "complete" for o in target_outcomes)
        if any(o == "failed" for results in outcomes.values() for o in results):
            set_condition(conditions, "Failed", "True", "FailedJobs", "jobset failed due to one or more job failures")
        elif target_outcomes and complete:
            set_condition(conditions, "Complete", "True", "AllJobsCompleted", "jobset completed successfully")
        if status != (trainjob.get("status") or {}):
            self.kube.patch_status(trainjob, PLURAL, status)

    def _master_service(self, trainjob: Obj) -> Obj | None:
        if self.cluster_dns:
            return None
        name, namespace = trainjob["metadata"]["name"], trainjob["metadata"]["namespace"]
        service_name = f"{name}-node-0-0"
        self.kube.create("Service", namespace, {
            "metadata": {"name": service_name, "ownerReferences": [owner_reference(trainjob)]},
            "spec": {"selector": {JOBSET: name, REPLICATED_JOB: "node", JOB_INDEX: "0", COMPLETION_INDEX: "0"},
                     "ports": [{"port": TRAINER_PORT, "targetPort": TRAINER_PORT}]}})
        return self.kube.read("Service", namespace, service_name)

    def _reconcile_job(self, trainjob: Obj, runtime: Obj, rjob: Obj, job_index: int, master: Obj | None) -> str:
        """Create the missing pods of one indexed Job; its outcome: "complete", "failed" or "active"."""
        name, namespace = trainjob["metadata"]["name"], trainjob["metadata"]["namespace"]
        job_spec = rjob["template"].get("spec") or {}
        is_trainer = ((rjob["template"].get("metadata") or {}).get("labels") or {}).get(ANCESTOR) == "trainer"
        trainer = trainjob["spec"].get("trainer") or {}
        if is_trainer:
            nodes = trainer.get("numNodes") or (runtime["spec"].get("mlPolicy") or {}).get("numNodes") or 1
        else:
            nodes = job_spec.get("completions") or job_spec.get("parallelism") or 1
        pods = self.kube.pods(namespace, f"{JOBSET}={name},{REPLICATED_JOB}={rjob['name']},{JOB_INDEX}={job_index}")
        # the Job controller counts failed pods and, under OnFailure, container restarts (job_controller.go)
        failed = sum(1 for p in pods if pod_phase(p) == "Failed") + sum(
            s.get("restartCount", 0) for p in pods for s in (p.get("status") or {}).get("containerStatuses") or [])
        if failed > job_spec.get("backoffLimit", 6):
            return "failed"
        succeeded = set()
        for index in range(nodes):
            mine = [p for p in pods if p["metadata"]["labels"].get(COMPLETION_INDEX) == str(index)]
            if any(pod_phase(p) == "Succeeded" for p in mine):
                succeeded.add(index)
            elif not any(pod_phase(p) in ("Pending", "Running") for p in mine):
                self.kube.create("Pod", namespace, self._pod(trainjob, runtime, rjob, job_index, index, nodes,
                                                             is_trainer, master))
        return "complete" if len(succeeded) == nodes else "active"

    def _pod(self, trainjob: Obj, runtime: Obj, rjob: Obj, job_index: int, index: int, nodes: int,
             is_trainer: bool, master: Obj | None) -> Obj:
        name = trainjob["metadata"]["name"]
        job_name = f"{name}-{rjob['name']}-{job_index}"
        template = copy.deepcopy(rjob["template"]["spec"]["template"])
        pod_meta = template.get("metadata") or {}
        labels = {**(pod_meta.get("labels") or {}), JOBSET: name, REPLICATED_JOB: rjob["name"],
                  REPLICATED_JOB_REPLICAS: str(rjob.get("replicas", 1)), JOB_INDEX: str(job_index),
                  COMPLETION_INDEX: str(index), "batch.kubernetes.io/job-name": job_name, "job-name": job_name}
        annotations = {**(pod_meta.get("annotations") or {}), COMPLETION_INDEX: str(index),
                       JOBSET: name, REPLICATED_JOB: rjob["name"]}
        spec = template["spec"]
        spec.update(hostname=f"{job_name}-{index}", subdomain=name)
        spec.setdefault("restartPolicy", "OnFailure")  # jobset pkg/webhooks/jobset_webhook.go Default
        trainer = trainjob["spec"].get("trainer") or {}
        policy = (runtime["spec"].get("mlPolicy") or {})
        if is_trainer:
            for container in spec["containers"]:
                if container["name"] != "node":
                    continue
                for field in ("image", "command", "args"):
                    if trainer.get(field):
                        container[field] = trainer[field]
                if trainer.get("resourcesPerNode"):
                    container["resources"] = trainer["resourcesPerNode"]
                env = list(container.get("env") or []) + list(trainer.get("env") or [])
                if "torch" in policy:
                    procs = trainer.get("numProcPerNode") or policy["torch"].get("numProcPerNode") or "auto"
                    resources = container.get("resources") or {}
                    gpus = any("gpu" in key for key in (resources.get("limits") or {}))
                    if str(procs) == "auto" and not gpus:
                        procs = cpu_count(resources)
                    env += [{"name": "PET_NNODES", "value": str(nodes)},
                            {"name": "PET_NPROC_PER_NODE", "value": str(procs)},
                            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
                            {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
                            {"name": "PET_MASTER_PORT", "value": str(TRAINER_PORT)}]
                    ports = container.setdefault("ports", [])
                    if not any(p.get("containerPort") == TRAINER_PORT for p in ports):
                        ports.append({"containerPort": TRAINER_PORT})
                container["env"] = env
        if master is not None:
            spec["hostAliases"] = (spec.get("hostAliases") or []) + [
                {"ip": master["spec"]["clusterIP"], "hostnames": [f"{name}-node-0-0.{name}"]}]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{job_name}-{index}-{secrets.token_hex(3)[:5]}", "labels": labels,
                             "annotations": annotations, "ownerReferences": [owner_reference(trainjob)]},
                "spec": spec}
