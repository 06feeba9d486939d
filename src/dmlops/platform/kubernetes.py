"""The one launcher of custom resources on Kubernetes.

Every step that needs more than its own pod (TrainJob, PyTorchJob, TFJob, MPIJob, Katib Experiment,
SparkApplication, InferenceService) builds its custom resource as a plain dict and hands it to
:class:`KubernetesLauncher`:

- :meth:`KubernetesLauncher.run` creates the resource, or reattaches to the one an earlier attempt of
  the same task created (same deterministic name and ``dmlops.io/*`` labels), streams the primary pod's
  log, waits on the status conditions of its :class:`~dmlops.platform.rules.CompletionRule` and returns a
  :class:`LaunchResult` naming the resource. A failed job raises :class:`JobFailed` with the controller's
  reason and message and the last lines of the streamed log. On timeout, SIGTERM or SIGINT the resource
  is deleted.
- :meth:`KubernetesLauncher.apply` creates a long-lived resource (InferenceService) or makes the live one
  equal to it, and waits until its controller reports the update rolled out (the rule's rollout: a new
  ready revision with the traffic asked, or a finished Deployment rollout). It never deletes the resource.

Objects are sent with ``fieldValidation=Strict``: a field the CRD does not know is refused (HTTP 400)
instead of being silently pruned, as the API server does by default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from dmlops.platform import logs
from dmlops.platform.backend import SERVICE_ACCOUNT_DIR
from dmlops.platform.errors import (
    InvalidResource,
    JobFailed,
    LaunchCancelled,
    LaunchError,
    LaunchTimeout,
    ResourceRef,
)
from dmlops.platform.naming import RUN_ID_LABEL, TASK_LABEL, is_dns1035_label
from dmlops.platform.rules import CompletionRule, DeploymentRollout, Outcome, Rollout, rule_for, true_conditions

Echo = Callable[[str], None]
Resource = dict[str, Any]
_FINISHED_POD_PHASES = ("Succeeded", "Failed")
_STREAM_ERRORS = (urllib3.exceptions.HTTPError, OSError)
_UPDATE_ATTEMPTS = 5  # an update that keeps meeting a newer resourceVersion (409) gives up after these
LOG_TAIL_LINES = 20  # the streamed log lines a JobFailed carries
Progress = Callable[[Resource], "tuple[bool, str | None]"]
_LOG = logging.getLogger(__name__)


def _kubeconfig() -> str:
    """KUBECONFIG as it is now (the client library reads it once, at import)."""
    return os.environ.get("KUBECONFIG", "~/.kube/config")


def load_cluster_config() -> client.Configuration:
    """The in-cluster service account when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(config_file=_kubeconfig(), client_configuration=configuration)
        except (config.ConfigException, OSError) as error:
            raise LaunchError(
                "no Kubernetes configuration: this process is not in a pod with a service account and has "
                f"no kubeconfig ({error}); set KUBECONFIG, or run the step with backend='local'"
            ) from error
    return configuration


def current_namespace(service_account_dir=SERVICE_ACCOUNT_DIR) -> str:
    """The namespace of this pod, else of the kubeconfig's current context, else ``default``."""
    namespace_file = service_account_dir / "namespace"
    if namespace_file.is_file():
        return namespace_file.read_text().strip()
    try:
        _, active = config.list_kube_config_contexts(config_file=_kubeconfig())
    except (config.ConfigException, OSError):
        return "default"
    return active.get("context", {}).get("namespace") or "default"


@dataclass(frozen=True)
class LaunchResult:
    """A resource that reached its final (or ready) state."""

    resource: ResourceRef
    created: bool
    condition: str
    reason: str
    message: str
    status: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The resource reference plus how it ended, for a step's output metadata."""
        return {
            **self.resource.to_dict(),
            "created": self.created,
            "condition": self.condition,
            "reason": self.reason,
            "message": self.message,
        }


class _Cancelled(BaseException):
    """Raised from a signal handler; a BaseException so that no library catches it on the way up."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def _signals_cancel() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into :class:`_Cancelled` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)

    def cancel(signum: int, _frame: Any) -> None:
        for number in handled:
            signal.signal(number, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
        raise _Cancelled(signal.Signals(signum).name)

    previous = {number: signal.signal(number, cancel) for number in handled}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _log_line(line: str) -> None:
    _LOG.info(line)


def _api_error(action: str, ref: ResourceRef, rule: CompletionRule, error: ApiException) -> LaunchError:
    """A LaunchError that says what the API server answered and, where it helps, what to do."""
    try:
        detail = json.loads(error.body or "{}").get("message", "")
    except (TypeError, ValueError):
        detail = str(error.body or "")
    message = f"could not {action} {ref}: HTTP {error.status} {error.reason}: {detail}".rstrip(": ")
    if detail.startswith("admission webhook"):  # refused by the operator's validation (often as 403), not RBAC
        return InvalidResource(message)
    if error.status == 403:
        message += (
            f"; the step's service account needs create, get, list, watch, patch and delete on "
            f"{rule.plural}.{rule.group} in namespace {ref.namespace}"
        )
    if error.status == 404 and action == "create":
        message += f"; is the {rule.kind} CRD ({rule.plural}.{rule.group}/{rule.version}) installed?"
    if error.status in (400, 422):  # 400: a field the CRD does not know (strict field validation)
        return InvalidResource(message)
    return LaunchError(message)


def _resource_ref(resource: Resource) -> ResourceRef:
    kind = resource.get("kind", "")
    metadata = resource.get("metadata") or {}
    name = metadata.get("name", "")
    namespace = metadata.get("namespace", "")
    if not is_dns1035_label(name):
        raise InvalidResource(
            f"{kind} metadata.name {name!r} is not a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters); build it with dmlops.platform.resource_name"
        )
    if not namespace:
        raise InvalidResource(
            f"{kind} {name}: metadata.namespace is empty; set the namespace the step runs in "
            "(dmlops.platform.kubernetes.current_namespace())"
        )
    return ResourceRef(resource.get("apiVersion", ""), kind, namespace, name)


def _owner_labels(resource: Resource) -> dict[str, str]:
    labels = (resource.get("metadata") or {}).get("labels") or {}
    return {key: labels[key] for key in (RUN_ID_LABEL, TASK_LABEL) if key in labels}


def _merge_patch_to(live: Any, wanted: Any) -> Any:
    """The RFC 7386 merge patch that turns ``live`` into ``wanted``: keys that ``live`` has and ``wanted``
    lacks are sent as null (removed), lists and values are replaced, equal parts are left out."""
    if not (isinstance(live, dict) and isinstance(wanted, dict)):
        return wanted
    patch: dict[str, Any] = {key: None for key in live if key not in wanted}
    for key, value in wanted.items():
        if key in live and isinstance(value, dict) and isinstance(live[key], dict):
            nested = _merge_patch_to(live[key], value)
            if nested:
                patch[key] = nested
        elif key not in live or live[key] != value:
            patch[key] = value
    return patch


def _update_patch(live: Resource, wanted: Resource) -> Resource:
    """The merge patch that makes ``live``'s spec (everything but metadata and status), labels and
    annotations those of ``wanted``; it carries live's resourceVersion, so a concurrent change is a 409."""
    content = {key: value for key, value in wanted.items() if key not in ("apiVersion", "kind", "metadata", "status")}
    current = {key: value for key, value in live.items() if key not in ("apiVersion", "kind", "metadata", "status")}
    patch = _merge_patch_to(current, content)
    wanted_metadata, live_metadata = wanted.get("metadata") or {}, live.get("metadata") or {}
    metadata = {
        key: _merge_patch_to(live_metadata.get(key) or {}, wanted_metadata.get(key) or {})
        for key in ("labels", "annotations")
    }
    metadata = {key: value for key, value in metadata.items() if value}
    if not patch and not metadata:
        return {}
    return {**patch, "metadata": {**metadata, "resourceVersion": live_metadata["resourceVersion"]}}


def _timestamp_key(stamp: str) -> str:
    """An RFC 3339 (nano) log timestamp with a fixed-width fraction, so keys compare as strings."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{head}.{fraction:0<9}"


class KubernetesLauncher:
    """Creates, reattaches to, waits on and deletes custom resources through the Kubernetes API.

    ``echo`` receives progress lines and the streamed pod log lines (default: logged at INFO through
    :mod:`dmlops.platform.logs`, which is set up as ``dmlops-launcher`` if nothing in the process set up
    logging: JSON lines, or human lines on a terminal or with ``DMLOPS_LOG_FORMAT=text``).
    """

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        echo: Echo = _log_line,
        poll_interval_s: float = 2.0,
        watch_window_s: int = 60,
        log_drain_s: float = 10.0,
    ):
        self.api_client = api_client or client.ApiClient(load_cluster_config())
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.echo = echo
        if echo is _log_line:
            logs.configure_unless_configured("dmlops-launcher")
        self.poll_interval_s = poll_interval_s
        self.watch_window_s = watch_window_s
        self.log_drain_s = log_drain_s
        self._last_waiting: dict[str, str] = {}

    # -- public API -----------------------------------------------------------------------------

    def run(
        self,
        resource: Resource,
        *,
        timeout_s: float,
        stream_logs: bool = True,
        recreate_failed: bool = True,
    ) -> LaunchResult:
        """Create (or reattach to) a job-like resource, stream its log and wait until it finishes.

        A resource of the same name left by an earlier attempt of the same run and task is reattached
        to; if that attempt had failed and ``recreate_failed`` is set, it is deleted and created again.
        Raises :class:`JobFailed`, :class:`LaunchTimeout` (resource deleted) or
        :class:`LaunchCancelled` (SIGTERM/SIGINT; resource deleted).
        """
        rule = rule_for(resource)
        ref = _resource_ref(resource)
        deadline = time.monotonic() + timeout_s
        logs: _LogFollower | None = None
        with _signals_cancel():
            try:
                current, created = self._create_or_reattach(resource, rule, ref, recreate_failed, deadline)
                ref = replace(ref, uid=current["metadata"].get("uid", ""))
                if stream_logs and rule.log_pods:
                    logs = _LogFollower(self, rule, ref)
                    logs.start()
                try:
                    current, outcome = self._wait(rule, ref, current, deadline, timeout_s)
                except BaseException:
                    if logs is not None:
                        logs.finish(0)
                    raise
                if logs is not None:
                    logs.finish(self.log_drain_s)  # the end of the log, e.g. a failed worker's traceback
            except _Cancelled as cancelled:
                self.delete(ref)
                raise LaunchCancelled(ref, cancelled.signal_name) from None
            except LaunchTimeout:
                self.echo(f"{ref}: timed out; deleting it so it does not keep running")
                self.delete(ref)
                raise
        if not outcome.succeeded:
            tail = tuple(logs.tail) if logs is not None else ()
            raise JobFailed(ref, outcome.reason or outcome.condition, outcome.message, tail)
        return LaunchResult(
            ref, created, outcome.condition, outcome.reason, outcome.message, current.get("status") or {}
        )

    def apply(self, resource: Resource, *, timeout_s: float) -> LaunchResult:
        """Create a long-lived resource, or make the existing one equal to it, and wait until it is rolled out.

        The live spec, labels and annotations become those of ``resource``: a field it lacks is removed
        (sent as null in a merge patch conditional on the resourceVersion read, retried on conflict).
        The resource is never deleted here, not on failure, timeout or signal.
        """
        rule = rule_for(resource)
        ref = _resource_ref(resource)
        rollout = rule.rollout(resource)
        deadline = time.monotonic() + timeout_s
        before: Resource | None = None
        dependent_before: Resource | None = None
        try:
            current = self._create(resource, rule, ref)
            created = True
        except ApiException:  # 409: it exists
            dependent_before = self._dependent(rollout, ref)
            before, current = self._update(resource, rule, ref)
            created = False
        ref = replace(ref, uid=current["metadata"].get("uid", ""))

        def progress(latest: Resource) -> tuple[bool, str | None]:
            if rollout is None:
                return True, None
            dependent = self._dependent(rollout, ref)
            return (
                rollout.updated(before, latest, dependent, dependent_before),
                rollout.pending(before, latest, dependent, dependent_before),
            )

        current, outcome = self._wait(rule, ref, current, deadline, timeout_s, progress)
        if not outcome.succeeded:
            raise JobFailed(ref, outcome.reason or outcome.condition, outcome.message)
        return LaunchResult(
            ref, created, outcome.condition, outcome.reason, outcome.message, current.get("status") or {}
        )

    def _update(self, resource: Resource, rule: CompletionRule, ref: ResourceRef) -> tuple[Resource, Resource]:
        """Make the live resource equal to ``resource``; the live object before and after."""
        for _ in range(_UPDATE_ATTEMPTS):
            live = self._get(rule, ref)
            patch = _update_patch(live, resource)
            if not patch:
                self.echo(f"{ref}: unchanged (generation {live['metadata'].get('generation')})")
                return live, live
            try:
                updated = self.custom.patch_namespaced_custom_object(
                    rule.group, rule.version, ref.namespace, rule.plural, ref.name, patch, field_validation="Strict"
                )
            except ApiException as error:
                if error.status == 409:
                    continue  # changed since it was read: read it again
                raise _api_error("update", ref, rule, error) from None
            self.echo(f"{ref}: updated to generation {updated['metadata'].get('generation')}")
            return live, updated
        raise LaunchError(f"could not update {ref}: it kept changing while being updated ({_UPDATE_ATTEMPTS} conflicts)")

    def _dependent(self, rollout: Rollout | None, ref: ResourceRef) -> Resource | None:
        """The object a rollout is judged on (the Deployment of a Standard-mode predictor), if any."""
        if not isinstance(rollout, DeploymentRollout):
            return None
        name = rollout.name_format.format(name=ref.name)
        try:
            response = client.AppsV1Api(self.api_client).read_namespaced_deployment(
                name, ref.namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise LaunchError(
                f"could not read Deployment {ref.namespace}/{name} of {ref}: HTTP {error.status} {error.reason}"
                + (f"; the step's service account needs get on deployments.apps in namespace {ref.namespace}"
                   if error.status == 403 else "")
            ) from None
        return json.loads(response.data)

    def delete(self, ref: ResourceRef, propagation_policy: str = "Foreground") -> bool:
        """Delete the resource with its pods (``Foreground`` or ``Background``); False if it was gone."""
        rule = rule_for({"apiVersion": ref.api_version, "kind": ref.kind})
        try:
            self.custom.delete_namespaced_custom_object(
                rule.group,
                rule.version,
                ref.namespace,
                rule.plural,
                ref.name,
                propagation_policy=propagation_policy,
                body=client.V1DeleteOptions(propagation_policy=propagation_policy),
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise _api_error("delete", ref, rule, error) from None
        self.echo(f"{ref}: deleted ({propagation_policy})")
        return True

    # -- creation -------------------------------------------------------------------------------

    def _create(self, resource: Resource, rule: CompletionRule, ref: ResourceRef) -> Resource:
        """Create the resource; an ApiException escapes only for 409 (it already exists)."""
        try:
            created = self.custom.create_namespaced_custom_object(
                rule.group, rule.version, ref.namespace, rule.plural, resource, field_validation="Strict"
            )
        except ApiException as error:
            if error.status == 409:
                raise
            raise _api_error("create", ref, rule, error) from None
        self.echo(f"{ref}: created (uid {created['metadata'].get('uid', '')})")
        return created

    def _create_or_reattach(
        self, resource: Resource, rule: CompletionRule, ref: ResourceRef, recreate_failed: bool, deadline: float
    ) -> tuple[Resource, bool]:
        try:
            return self._create(resource, rule, ref), True
        except ApiException:  # 409: an earlier attempt created it
            pass
        existing = self._get(rule, ref)
        wanted, found = _owner_labels(resource), _owner_labels(existing)
        if wanted != found:
            raise LaunchError(
                f"{ref} already exists but was not created by this run and task (its labels {found}, "
                f"this step's {wanted}); delete it or give the step another resource name"
            )
        if existing["metadata"].get("deletionTimestamp"):
            self.echo(f"{ref}: an earlier attempt's resource is being deleted; waiting to create it again")
            self._wait_gone(rule, ref, deadline)
            return self._create(resource, rule, ref), True
        outcome = rule.outcome(existing)
        if outcome is not None and not outcome.succeeded and recreate_failed:
            self.echo(f"{ref}: the previous attempt failed ({outcome.reason}); deleting it and starting again")
            self.delete(ref)
            self._wait_gone(rule, ref, deadline)
            return self._create(resource, rule, ref), True
        self.echo(f"{ref}: already created by an earlier attempt of this task; reattaching")
        return existing, False

    def _get(self, rule: CompletionRule, ref: ResourceRef) -> Resource:
        try:
            return self.custom.get_namespaced_custom_object(
                rule.group, rule.version, ref.namespace, rule.plural, ref.name
            )
        except ApiException as error:
            raise _api_error("read", ref, rule, error) from None

    def _wait_gone(self, rule: CompletionRule, ref: ResourceRef, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                self.custom.get_namespaced_custom_object(rule.group, rule.version, ref.namespace, rule.plural, ref.name)
            except ApiException as error:
                if error.status == 404:
                    return
                raise _api_error("read", ref, rule, error) from None
            time.sleep(self.poll_interval_s)
        raise LaunchError(f"{ref} was still being deleted when the step's timeout ran out; retry the step")

    # -- waiting --------------------------------------------------------------------------------

    def _list_one(self, rule: CompletionRule, ref: ResourceRef) -> tuple[Resource, str]:
        """The resource and the list's resourceVersion to watch from (after a 410 Gone)."""
        try:
            listing = self.custom.list_namespaced_custom_object(
                rule.group, rule.version, ref.namespace, rule.plural, field_selector=f"metadata.name={ref.name}"
            )
        except ApiException as error:
            raise _api_error("list", ref, rule, error) from None
        items = listing.get("items") or []
        if not items:
            raise JobFailed(ref, "Deleted", "the resource was deleted while the step was waiting on it")
        return items[0], listing["metadata"]["resourceVersion"]

    def _wait(
        self,
        rule: CompletionRule,
        ref: ResourceRef,
        current: Resource,
        deadline: float,
        timeout_s: float,
        progress: Progress | None = None,
    ) -> tuple[Resource, Outcome]:
        """Watch the resource until its rule gives an outcome; re-establish dropped watches.

        With ``progress`` (whether the status is about an update yet, and what its rollout still waits
        for) an outcome counts only once the status is about the update, a success only once nothing is
        pending: a Ready or failure left from before the update does not end the wait.
        """

        def judge(resource: Resource) -> Outcome | None:
            found = rule.outcome(resource)
            if found is None or progress is None:
                return found
            updated, waiting = progress(resource)
            if not updated or (found.succeeded and waiting is not None):
                self._report_waiting(ref, waiting or "the status of the update")
                return None
            return found

        reported = self._report_conditions(rule, ref, current, [])
        outcome = judge(current)
        resource_version = current["metadata"]["resourceVersion"]
        while outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LaunchTimeout(ref, timeout_s, ", ".join(true_conditions(current)))
            window = max(1, min(self.watch_window_s, math.ceil(remaining)))
            events = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                rule.group,
                rule.version,
                ref.namespace,
                rule.plural,
                field_selector=f"metadata.name={ref.name}",
                resource_version=resource_version,
                timeout_seconds=window,
                _request_timeout=(10, window + 10),
            )
            try:
                for event in events:
                    resource_version = event["raw_object"]["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        raise JobFailed(ref, "Deleted", "the resource was deleted while the step was waiting on it")
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    current = event["raw_object"]
                    reported = self._report_conditions(rule, ref, current, reported)
                    outcome = judge(current)
                    if outcome is not None or time.monotonic() >= deadline:
                        break
            except ApiException as error:
                if error.status != 410:
                    raise _api_error("watch", ref, rule, error) from None
                self.echo(f"{ref}: watch expired (410 Gone); listing again")
                current, resource_version = self._list_one(rule, ref)
                reported = self._report_conditions(rule, ref, current, reported)
                outcome = judge(current)
            except _STREAM_ERRORS as error:
                self.echo(f"{ref}: watch dropped ({type(error).__name__}); resuming from {resource_version}")
                time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))
            finally:
                events.close()
            if outcome is None and progress is not None:
                outcome = judge(current)  # a rollout may finish without a change of this resource
        return current, outcome

    def _report_conditions(
        self, rule: CompletionRule, ref: ResourceRef, resource: Resource, reported: list[str]
    ) -> list[str]:
        """Echo the True conditions when they changed."""
        conditions = true_conditions(resource)
        if conditions != reported and conditions:
            self.echo(f"{ref}: {', '.join(conditions)}")
        return conditions

    def _report_waiting(self, ref: ResourceRef, waiting: str) -> None:
        if waiting != self._last_waiting.get(ref.name):
            self._last_waiting[ref.name] = waiting
            self.echo(f"{ref}: rolling out: waiting for {waiting}")


class _LogFollower(threading.Thread):
    """Streams the log of the job's primary pod (and of its replacements) to the launcher's echo."""

    def __init__(self, launcher: KubernetesLauncher, rule: CompletionRule, ref: ResourceRef):
        super().__init__(name=f"logs-{ref.name}", daemon=True)
        self.launcher = launcher
        self.rule = rule
        self.ref = ref
        self.selectors = [selector.format(name=ref.name) for selector in rule.log_pods]
        self.finishing = threading.Event()
        self.finished_pods: set[str] = set()
        self.last_stamp: dict[str, str] = {}
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.response: urllib3.HTTPResponse | None = None
        self.lock = threading.Lock()

    def finish(self, drain_s: float) -> None:
        """Let the current stream reach the end of a finished pod's log for up to ``drain_s``, then stop."""
        self.finishing.set()
        self.join(drain_s)
        if self.is_alive():
            with self.lock:
                if self.response is not None:
                    getattr(self.response, "shutdown", self.response.close)()
            self.join(2)

    def run(self) -> None:
        while True:
            finishing = self.finishing.is_set()
            pod = self._primary_pod()
            if pod is not None and pod.get("status", {}).get("phase") != "Pending":
                self._stream(pod)
                if finishing or self._pod_finished(pod):
                    self.finished_pods.add(pod["metadata"]["uid"])
            if finishing:
                return
            self.finishing.wait(self.launcher.poll_interval_s)

    def _primary_pod(self) -> dict[str, Any] | None:
        """The oldest pod of the first matching selector whose log is not fully streamed yet."""
        for selector in self.selectors:
            try:
                pods = self.launcher.core.list_namespaced_pod(
                    self.ref.namespace, label_selector=selector, _request_timeout=(10, 30)
                )
            except (ApiException, *_STREAM_ERRORS):
                return None
            candidates = [
                self.launcher.api_client.sanitize_for_serialization(pod)
                for pod in pods.items
                if pod.metadata.uid not in self.finished_pods
            ]
            if candidates:
                return min(candidates, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")
        return None

    def _pod_finished(self, pod: dict[str, Any]) -> bool:
        try:
            latest = self.launcher.core.read_namespaced_pod(
                pod["metadata"]["name"], self.ref.namespace, _request_timeout=(10, 30)
            )
        except ApiException as error:
            return error.status == 404
        except _STREAM_ERRORS:
            return False
        return latest.status.phase in _FINISHED_POD_PHASES

    def _stream(self, pod: dict[str, Any]) -> None:
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        containers = [container["name"] for container in pod["spec"]["containers"]]
        container = self.rule.log_container if self.rule.log_container in containers else containers[0]
        resume_after = self.last_stamp.get(uid, "")
        try:
            response = self.launcher.core.read_namespaced_pod_log(
                name,
                self.ref.namespace,
                container=container,
                follow=True,
                timestamps=True,
                _preload_content=False,
                _request_timeout=(10, None),
            )
        except (ApiException, *_STREAM_ERRORS):
            return  # not started yet or gone: the next round looks again
        with self.lock:
            self.response = response
        try:
            for line in watch.watch.iter_resp_lines(response):
                stamp, _, text = line.partition(" ")
                key = _timestamp_key(stamp)
                if resume_after and key <= resume_after:
                    continue  # already printed before the stream was re-established
                resume_after = ""
                self.last_stamp[uid] = key
                self.tail.append(f"[{name}] {text}")
                self.launcher.echo(f"[{name}] {text}")
        except (*_STREAM_ERRORS, ValueError, AttributeError):
            pass  # dropped, or shut down by finish(): the next round resumes after the last line
        finally:
            with self.lock:
                self.response = None
            response.release_conn()
