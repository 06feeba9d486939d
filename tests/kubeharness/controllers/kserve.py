"""KServe v1beta1 (kserve/kserve): InferenceService -> Deployment(s) and Services running the runtime, and status.

Behaviours, each from the upstream file named (paths under ``pkg/`` unless stated):

| behaviour | upstream |
|---|---|
| runtime: ``model.runtime`` (ServingRuntime in the namespace, else ClusterServingRuntime) must exist, be enabled, support the protocol and model format; without one the highest-priority autoSelect runtime for the format; failures in ``modelStatus`` (InvalidSpec, RuntimeNotRecognized / RuntimeDisabled / NoSupportingRuntime) | controller/v1beta1/inferenceservice/components/predictor.go (reconcileModel) |
| predictor container ``kserve-container`` = the runtime's first container, ``{{.Name}}`` replaced in args, model args appended, model resources override | components/predictor.go, utils/utils.go (ReplacePlaceholders) |
| pods labelled serving.kserve.io/inferenceservice and component=predictor; the storage initializer (see ``storage_initializer``) | constants/constants.go, webhook/admission/pod/storage_initializer_injector.go |
| Standard (RawDeployment): Deployment and Service ``<isvc>-predictor`` updated in place; PredictorReady from the Deployment's Available / Progressing; observedGeneration copied from the Deployment; url ``http://<isvc>-<ns>.example.com``, address ``http://<isvc>-predictor.<ns>.svc.cluster.local`` | reconcilers/raw/raw_kube_reconciler.go, apis/serving/v1beta1/inference_service_status.go (PropagateRawStatus), configmap.go (DefaultDomainTemplate, example.com) |
| Knative (Serverless): a revision ``<isvc>-predictor-<00001>`` per predictor template change (Deployment ``<revision>-deployment``, Service ``<revision>``), ready once the user port accepts connections (queue-proxy's default TCP probe, knative/serving pkg/reconciler/revision/resources/queue.go); traffic ``latest`` (canaryTrafficPercent, latestRevision) + ``prev`` (the last rolled-out revision, 100 - percent), or ``latest`` 100; tag URLs ``http://<tag>-<isvc>-predictor.<ns>.example.com``; latestCreatedRevision, latestReadyRevision, latestRolledoutRevision, previousRolledoutRevision; observedGeneration = the Knative Service's generation | reconcilers/knative/ksvc_reconciler.go, inference_service_status.go (PropagateStatus) |
| conditions PredictorReady, IngressReady, Ready; url ``http://<isvc>.<ns>.example.com``, address ``http://<isvc>.<ns>.svc.cluster.local`` (Knative) | inference_service_status.go, reconcilers/ingress/ingress_reconciler.go |

Not simulated: the queue-proxy sidecar, scale to zero, the ingress gateway and Knative's percentage split —
the Services ``<isvc>`` and ``<isvc>-predictor`` select the pods of the revision with the largest share,
``latest-<isvc>-predictor`` and ``prev-<isvc>-predictor`` those of each tagged revision, so the cluster-local
names of ``status.address.url`` and of the tags resolve.
"""

from __future__ import annotations

import copy
import hashlib
import json

from kubeharness.controllers.base import Controller, Kube, Obj, owner_reference, set_condition
from kubeharness.controllers.storage_initializer import add_storage_initializer

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.knative.dev/revision"
TEMPLATE_HASH = "kubeharness.dmlops/template-hash"
DOMAIN = "example.com"


class RuntimeUnresolved(Exception):
    """The predictor's runtime cannot be resolved: (reason, message) for modelStatus."""


def deployment_mode(isvc: Obj) -> str:
    mode = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode", "Serverless")
    return {"RawDeployment": "Standard", "Serverless": "Knative"}.get(mode, mode)


def template_digest(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def _supports(runtime: Obj, model: Obj) -> bool:
    name = (model.get("modelFormat") or {}).get("name")
    return any(f.get("name") == name for f in runtime["spec"].get("supportedModelFormats") or [])


class KServe(Controller):
    """InferenceService as the KServe controller (Standard and Knative modes) reconciles it."""

    watches = ((GROUP, VERSION, PLURAL),)
    owns = ("pods", "deployments")

    def __init__(self, kube: Kube, storage_initializer_image: str | None = None):
        super().__init__(kube)
        self.storage_initializer_image = storage_initializer_image
        self.ksvc_generations: dict[str, tuple[int, str]] = {}  # isvc uid -> (generation, spec digest)

    def reconcile_all(self) -> None:
        self.each(GROUP, VERSION, PLURAL, self.reconcile)

    def resolve_runtime(self, isvc: Obj) -> Obj:
        model = isvc["spec"]["predictor"]["model"]
        namespace = isvc["metadata"]["namespace"]
        if model.get("runtime"):
            runtime = self.kube.get_custom(GROUP, "v1alpha1", "servingruntimes", namespace, model["runtime"])
            if runtime is None:
                runtime = next((r for r in self.kube.list_custom(GROUP, "v1alpha1", "clusterservingruntimes")
                                if r["metadata"]["name"] == model["runtime"]), None)
            if runtime is None:
                raise RuntimeUnresolved("RuntimeNotRecognized", "Waiting for runtime to become available")
            if runtime["spec"].get("disabled"):
                raise RuntimeUnresolved("RuntimeDisabled", "Specified runtime is disabled")
            protocol = model.get("protocolVersion")
            if protocol and protocol not in (runtime["spec"].get("protocolVersions") or ["v1"]):
                raise RuntimeUnresolved("NoSupportingRuntime", "Specified runtime does not support specified protocol version")
            if not _supports(runtime, model):
                raise RuntimeUnresolved("NoSupportingRuntime", "Specified runtime does not support specified framework/version")
            return runtime
        candidates = [r for r in self.kube.list_custom(GROUP, "v1alpha1", "servingruntimes")
                      if r["metadata"]["namespace"] == namespace] + self.kube.list_custom(GROUP, "v1alpha1", "clusterservingruntimes")
        name = (model.get("modelFormat") or {}).get("name")
        scored = [(max(f.get("priority", 0) for f in r["spec"]["supportedModelFormats"]
                       if f.get("name") == name and f.get("autoSelect")), r)
                  for r in candidates if not r["spec"].get("disabled") and any(
                      f.get("name") == name and f.get("autoSelect") for f in r["spec"].get("supportedModelFormats") or [])]
        if not scored:
            raise RuntimeUnresolved("NoSupportingRuntime", "No runtime found to support specified framework/version")
        return max(scored, key=lambda pair: pair[0])[1]

    def pod_template(self, isvc: Obj, runtime: Obj) -> Obj:
        """The predictor pod template KServe builds from the runtime and the predictor spec."""
        meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
        model = predictor["model"]
        container = copy.deepcopy(runtime["spec"]["containers"][0])
        container["name"] = "kserve-container"
        container["args"] = [a.replace("{{.Name}}", meta["name"]) for a in container.get("args") or []] + list(
            model.get("args") or [])
        if model.get("resources"):
            container["resources"] = model["resources"]
        container["env"] = (container.get("env") or []) + list(model.get("env") or [])
        spec = {"containers": [container]}
        if predictor.get("serviceAccountName"):
            spec["serviceAccountName"] = predictor["serviceAccountName"]
        if model.get("storageUri"):
            add_storage_initializer(self.kube, spec, meta["namespace"], model["storageUri"],
                                    self.storage_initializer_image or container["image"])
        labels = {**(meta.get("labels") or {}), ISVC_LABEL: meta["name"], "component": "predictor"}
        annotations = dict(runtime["spec"].get("annotations") or {})
        return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}

    def reconcile(self, isvc: Obj) -> None:
        status = copy.deepcopy(isvc.get("status") or {})
        conditions = status.setdefault("conditions", [])
        try:
            runtime = self.resolve_runtime(isvc)
        except RuntimeUnresolved as failure:
            reason, message = failure.args
            status["modelStatus"] = {"transitionStatus": "InvalidSpec", "lastFailureInfo": {"reason": reason, "message": message}}
            set_condition(conditions, "PredictorReady", "False", reason, message)
            set_condition(conditions, "Ready", "False", reason, message)
        else:
            status.pop("modelStatus", None)
            if runtime["kind"] == "ClusterServingRuntime":
                status["clusterServingRuntimeName"] = runtime["metadata"]["name"]
            else:
                status["servingRuntimeName"] = runtime["metadata"]["name"]
            template = self.pod_template(isvc, runtime)
            if deployment_mode(isvc) == "Standard":
                self._raw(isvc, template, status)
            else:
                self._knative(isvc, template, status)
        if status != (isvc.get("status") or {}):
            self.kube.patch_status(isvc, PLURAL, status)

    def _service(self, isvc: Obj, name: str, selector: dict[str, str]) -> None:
        body = {"metadata": {"name": name, "labels": {ISVC_LABEL: isvc["metadata"]["name"]},
                             "ownerReferences": [owner_reference(isvc)]},
                "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
        if self.kube.create("Service", isvc["metadata"]["namespace"], body) is None:
            self.kube.core.patch_namespaced_service(name, isvc["metadata"]["namespace"], {"spec": {"selector": selector}})

    def _deployment(self, isvc: Obj, name: str, template: Obj, replicas: int, extra_labels: dict[str, str]) -> Obj:
        """Create the Deployment, or replace its template when the predictor changed; the live object."""
        namespace = isvc["metadata"]["namespace"]
        digest = template_digest(template)
        template = copy.deepcopy(template)
        template["metadata"]["labels"].update(extra_labels)
        selector = {ISVC_LABEL: isvc["metadata"]["name"], **extra_labels}
        body = {"metadata": {"name": name, "labels": dict(selector), "annotations": {TEMPLATE_HASH: digest},
                             "ownerReferences": [owner_reference(isvc)]},
                "spec": {"replicas": replicas, "selector": {"matchLabels": selector}, "template": template}}
        live = self.kube.read("Deployment", namespace, name)
        if live is None:
            return self.kube.create("Deployment", namespace, body) or self.kube.read("Deployment", namespace, name)
        if (live["metadata"].get("annotations") or {}).get(TEMPLATE_HASH) != digest:
            self.kube.apps.patch_namespaced_deployment(name, namespace, [
                {"op": "replace", "path": "/spec/template", "value": template},
                {"op": "add", "path": "/metadata/annotations/" + TEMPLATE_HASH.replace("/", "~1"), "value": digest}])
            live = self.kube.read("Deployment", namespace, name)
        return live

    def _raw(self, isvc: Obj, template: Obj, status: Obj) -> None:
        meta = isvc["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        predictor_name = f"{name}-predictor"
        deployment = self._deployment(isvc, predictor_name, template, isvc["spec"]["predictor"].get("minReplicas", 1),
                                      {"app": f"isvc.{predictor_name}"})
        self._service(isvc, predictor_name, {"app": f"isvc.{predictor_name}"})
        dstatus = deployment.get("status") or {}
        found = {c["type"]: c for c in dstatus.get("conditions") or []}
        ready = ("False", "", "")
        available, progressing = found.get("Available"), found.get("Progressing")
        if available and available["status"] == "True":
            ready = ("True", available.get("reason", ""), available.get("message", ""))
        if progressing:
            if progressing["status"] == "False" and progressing.get("message"):
                ready = ("False", progressing.get("reason", ""), progressing["message"])
            elif progressing["status"] == "True" and progressing.get("reason") == "NewReplicaSetAvailable":
                ready = ("True", progressing["reason"], progressing.get("message", ""))
            elif progressing["status"] == "True" and ready[0] != "True":
                ready = ("Unknown", progressing.get("reason", ""), progressing.get("message", ""))
        url = f"http://{name}-{namespace}.{DOMAIN}"
        address = f"http://{predictor_name}.{namespace}.svc.cluster.local"
        status["components"] = {"predictor": {"url": url, "address": {"url": address}}}
        status["observedGeneration"] = dstatus.get("observedGeneration", 0)
        self._top_level(status, ready, url, address)

    def _top_level(self, status: Obj, ready: tuple[str, str, str], url: str, address: str) -> None:
        conditions = status["conditions"]
        set_condition(conditions, "PredictorReady", *ready)
        set_condition(conditions, "IngressReady", ready[0], "", "")
        set_condition(conditions, "Ready", ready[0], ready[1], ready[2])
        if ready[0] == "True":
            status["url"] = url
            status["address"] = {"url": address}

    def _knative(self, isvc: Obj, template: Obj, status: Obj) -> None:
        meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
        name, namespace = meta["name"], meta["namespace"]
        ksvc = f"{name}-predictor"
        template = copy.deepcopy(template)
        container = template["spec"]["containers"][0]
        if "readinessProbe" not in container:  # queue-proxy's default: the user port accepts connections
            port = next((p["containerPort"] for p in container.get("ports") or []), 8080)
            container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1, "successThreshold": 1}
        digest = template_digest(template)  # of the template the revision's Deployment gets (_deployment's)
        revisions = sorted(
            (self.kube.to_dict(d) for d in self.kube.apps.list_namespaced_deployment(
                namespace, label_selector=f"{ISVC_LABEL}={name},serving.knative.dev/service={ksvc}").items),
            key=lambda d: d["metadata"]["labels"][REVISION_LABEL])
        by_hash = {d["metadata"]["annotations"].get(TEMPLATE_HASH): d for d in revisions}
        if digest not in by_hash:
            revision = f"{ksvc}-{len(revisions) + 1:05d}"
            labels = {REVISION_LABEL: revision, "serving.knative.dev/service": ksvc,
                      "serving.knative.dev/configuration": ksvc}
            created = self._deployment(isvc, f"{revision}-deployment", template, predictor.get("minReplicas", 1), labels)
            self._service(isvc, revision, {REVISION_LABEL: revision})
            revisions.append(created)
        names = [d["metadata"]["labels"][REVISION_LABEL] for d in revisions]
        ready_names = [n for n, d in zip(names, revisions) if any(
            c["type"] == "Available" and c["status"] == "True" for c in (d.get("status") or {}).get("conditions") or [])]
        component = copy.deepcopy((status.get("components") or {}).get("predictor") or {})
        component["latestCreatedRevision"] = names[-1]
        latest_ready = ready_names[-1] if ready_names else ""
        rolled_out = component.get("latestRolledoutRevision", "")
        percent = predictor.get("canaryTrafficPercent")
        traffic = []
        if percent is not None and rolled_out:
            traffic.append({"tag": "latest", "revisionName": latest_ready, "latestRevision": True, "percent": percent})
            if percent < 100:
                traffic.append({"tag": "prev", "revisionName": rolled_out, "latestRevision": False, "percent": 100 - percent})
        else:
            traffic.append({"tag": "latest", "revisionName": latest_ready, "latestRevision": True, "percent": 100})
        for target in traffic:
            target["url"] = f"http://{target['tag']}-{ksvc}.{namespace}.{DOMAIN}"
            self._service(isvc, f"{target['tag']}-{ksvc}", {REVISION_LABEL: target["revisionName"] or names[-1]})
        main = max(traffic, key=lambda t: t["percent"])
        for service in (ksvc, name):  # the component's route and the InferenceService's own (address.url)
            self._service(isvc, service, {REVISION_LABEL: main["revisionName"] or names[-1]})
        # inference_service_status.go PropagateStatus: a latest ready revision at 100% becomes the rolled-out one
        if latest_ready and latest_ready != rolled_out and any(t["latestRevision"] and t["percent"] == 100 for t in traffic):
            if rolled_out:
                component["previousRolledoutRevision"] = rolled_out
            component["latestRolledoutRevision"] = latest_ready
        all_ready = bool(latest_ready) and all(t["revisionName"] in ready_names for t in traffic)
        if latest_ready:
            component["latestReadyRevision"] = latest_ready
        component["traffic"] = traffic
        if all_ready:
            component["url"] = f"http://{ksvc}.{namespace}.{DOMAIN}"
            component["address"] = {"url": f"http://{ksvc}.{namespace}.svc.cluster.local"}
        status.setdefault("components", {})["predictor"] = component
        ksvc_digest = hashlib.sha256(json.dumps([digest, percent]).encode()).hexdigest()
        generation, seen = self.ksvc_generations.get(meta["uid"], (0, ""))
        if seen != ksvc_digest:
            self.ksvc_generations[meta["uid"]] = (generation + 1, ksvc_digest)
        status["observedGeneration"] = self.ksvc_generations[meta["uid"]][0]
        ready = ("True", "", "") if all_ready else ("Unknown", "RevisionMissing", f"Revision {names[-1]} is not ready")
        self._top_level(status, ready, f"http://{name}.{namespace}.{DOMAIN}", f"http://{name}.{namespace}.svc.cluster.local")
