"""The machinery every simulated controller shares: level-triggered reconcile loops on a real API server.

Each controller watches its custom resource and the objects it owns (pods, services, deployments) with the
``kubernetes`` client's watch; any event wakes it, and it reconciles every object of its kind (the way a
controller-runtime reconciler is level-triggered: it compares what exists with what should exist and
writes the difference, never relying on which event arrived). A resync every ``RESYNC_S`` covers missed
events, and one pass handles every event that arrived within ``COALESCE_S`` of the first. Errors do not
stop a loop: they are kept in ``errors`` for the tests to raise.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

Obj = dict[str, Any]
RESYNC_S = 2.0
COALESCE_S = 0.2
log = logging.getLogger("kubeharness.controllers")


def now() -> str:
    """A Kubernetes timestamp (RFC 3339, seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_reference(owner: Obj) -> Obj:
    """The controller owner reference a child carries (garbage collection and ownership lookups)."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def set_condition(conditions: list[Obj], kind: str, status: str, reason: str, message: str) -> bool:
    """Set condition ``kind`` in place as upstream's UpdateJobConditions/SetCondition do (the transition
    time changes only when the status does); returns whether anything changed."""
    for condition in conditions:
        if condition.get("type") == kind:
            if (condition.get("status"), condition.get("reason"), condition.get("message")) == (status, reason, message):
                return False
            if condition.get("status") != status:
                condition["lastTransitionTime"] = now()
            condition.update(status=status, reason=reason, message=message, lastUpdateTime=now())
            return True
    conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastUpdateTime": now(), "lastTransitionTime": now()})
    return True


def condition_true(obj: Obj, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def pod_phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return pod_phase(pod) == "Running" and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def exit_code(pod: Obj, container: str | None = None) -> int | None:
    """The exit code of ``container`` (default: any container that terminated non-zero, else zero)."""
    codes = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated and (container is None or status.get("name") == container):
            codes.append(terminated.get("exitCode", 0))
    if not codes:
        return None
    return next((code for code in codes if code), 0)


class Kube:
    """Typed-enough access to the API server for the controllers (dicts in, dicts out)."""

    def __init__(self, api: client.ApiClient):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def to_dict(self, obj: Any) -> Obj:
        return self.api.sanitize_for_serialization(obj)

    def list_custom(self, group: str, version: str, plural: str) -> list[Obj]:
        return self.custom.list_cluster_custom_object(group, version, plural).get("items", [])

    def get_custom(self, group: str, version: str, plural: str, namespace: str, name: str) -> Obj | None:
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create_custom(self, group: str, version: str, plural: str, namespace: str, body: Obj) -> Obj | None:
        """Create unless it exists (a reconcile may run twice before its own create is visible)."""
        try:
            return self.custom.create_namespaced_custom_object(group, version, namespace, plural, body)
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    def patch_status(self, obj: Obj, plural: str, status: Obj) -> None:
        """Merge-patch ``status`` onto the status subresource (lists replace whole, as RFC 7386 says)."""
        group, _, version = obj["apiVersion"].rpartition("/")
        meta = obj["metadata"]
        try:
            self.custom.patch_namespaced_custom_object_status(group, version, meta["namespace"], plural, meta["name"],
                                                              {"status": status})
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile
                raise

    def pods(self, namespace: str, selector: str) -> list[Obj]:
        return [self.to_dict(p) for p in self.core.list_namespaced_pod(namespace, label_selector=selector).items]

    def create(self, kind: str, namespace: str, body: Obj) -> Obj | None:
        """Create a core/apps object (Pod, Service, ConfigMap, Secret, Deployment) unless it exists."""
        method = {"Pod": self.core.create_namespaced_pod, "Service": self.core.create_namespaced_service,
                  "ConfigMap": self.core.create_namespaced_config_map, "Secret": self.core.create_namespaced_secret,
                  "Deployment": self.apps.create_namespaced_deployment, "Job": self.batch.create_namespaced_job}[kind]
        try:
            return self.to_dict(method(namespace, body))
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    def read(self, kind: str, namespace: str, name: str) -> Obj | None:
        method = {"Pod": self.core.read_namespaced_pod, "Service": self.core.read_namespaced_service,
                  "ConfigMap": self.core.read_namespaced_config_map, "Secret": self.core.read_namespaced_secret,
                  "ServiceAccount": self.core.read_namespaced_service_account,
                  "Deployment": self.apps.read_namespaced_deployment, "Job": self.batch.read_namespaced_job}[kind]
        try:
            return self.to_dict(method(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as error:
            if error.status != 404:
                raise

    def pod_log(self, namespace: str, name: str, container: str) -> str:
        """A container's log, read through the API server from the kubelet (empty when there is none)."""
        try:
            return self.core.read_namespaced_pod_log(name, namespace, container=container)
        except ApiException:
            return ""


class Controller:
    """One simulated upstream controller. Subclasses name the resources they watch and ``reconcile_all``."""

    #: (group, version, plural) of the custom resources whose events wake this controller
    watches: tuple[tuple[str, str, str], ...] = ()
    #: core/apps/batch kinds whose events wake it ("pods", "services", "deployments", "jobs")
    owns: tuple[str, ...] = ("pods",)

    def __init__(self, kube: Kube):
        self.kube = kube
        self.errors: list[str] = []
        self.wake = threading.Event()

    def reconcile_all(self) -> None:
        raise NotImplementedError

    def each(self, group: str, version: str, plural: str, reconcile: Callable[[Obj], None]) -> None:
        """Reconcile every object of a kind; one object's error does not hold up the others."""
        try:
            items = self.kube.list_custom(group, version, plural)
        except ApiException as error:
            if error.status == 404:  # the CRD (or this version) is not installed here
                return
            raise
        for obj in items:
            if obj["metadata"].get("deletionTimestamp"):
                continue
            try:
                reconcile(obj)
            except ApiException as error:
                if error.status == 409:  # a conflict: the next pass sees the newer object
                    self.wake.set()
                    continue
                if error.status == 403 and "NamespaceTerminating" in (error.body or ""):
                    continue  # the namespace is going away (on envtest it stays Terminating)
                self._record(f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}")
            except Exception:  # noqa: BLE001 - kept for the tests, the loop goes on
                self._record(f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}")

    def _record(self, what: str) -> None:
        message = f"{type(self).__name__} reconciling {what}:\n{traceback.format_exc()}"
        log.error(message)
        self.errors.append(message)


class Manager:
    """Runs controllers: one watch thread per watched resource, one loop thread per controller."""

    def __init__(self, kube: Kube, controllers: Iterable[Controller]):
        self.kube = kube
        self.controllers = list(controllers)
        self.stopping = threading.Event()
        self.loops: list[threading.Thread] = []

    def start(self) -> Manager:
        sources: dict[tuple[str, ...], list[Controller]] = {}
        for controller in self.controllers:
            for resource in controller.watches:
                sources.setdefault(resource, []).append(controller)
            for kind in controller.owns:
                sources.setdefault((kind,), []).append(controller)
        for resource, listeners in sources.items():
            self._thread(self._watch, resource, listeners, name=f"watch-{'/'.join(resource)}")
        for controller in self.controllers:
            self.loops.append(self._thread(self._loop, controller, name=f"reconcile-{type(controller).__name__}"))
        return self

    def stop(self) -> None:
        self.stopping.set()
        for controller in self.controllers:
            controller.wake.set()
        for thread in self.loops:  # watch threads end with their current stream (at most 5 s, daemons)
            thread.join(timeout=30)

    @property
    def errors(self) -> list[str]:
        return [error for controller in self.controllers for error in controller.errors]

    def _thread(self, target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def _loop(self, controller: Controller) -> None:
        while not self.stopping.is_set():
            controller.wake.wait(RESYNC_S)
            self.stopping.wait(COALESCE_S)  # events arriving meanwhile are handled by the same pass
            controller.wake.clear()
            if self.stopping.is_set():
                return
            try:
                controller.reconcile_all()
            except Exception:  # noqa: BLE001 - e.g. the API server went away; the next pass retries
                controller._record("all objects")

    def _list_function(self, resource: tuple[str, ...]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if len(resource) == 3:
            return self.kube.custom.list_cluster_custom_object, resource
        return {"pods": (self.kube.core.list_pod_for_all_namespaces, ()),
                "services": (self.kube.core.list_service_for_all_namespaces, ()),
                "deployments": (self.kube.apps.list_deployment_for_all_namespaces, ()),
                "jobs": (self.kube.batch.list_job_for_all_namespaces, ())}[resource[0]]

    def _watch(self, resource: tuple[str, ...], listeners: list[Controller]) -> None:
        function, args = self._list_function(resource)
        while not self.stopping.is_set():
            stream = watch.Watch()
            try:
                for _event in stream.stream(function, *args, timeout_seconds=5, _request_timeout=60):
                    for controller in listeners:
                        controller.wake.set()
                    if self.stopping.is_set():
                        break
            except Exception:  # noqa: BLE001 - a missing CRD, a 410 or a dropped stream: start a new watch
                self.stopping.wait(2.0)
            finally:
                stream.stop()
