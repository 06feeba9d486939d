"""A fake Kubernetes API server at the HTTP boundary, for tests of code that uses the ``kubernetes`` client.

It serves the REST paths the official client calls, for any group/version/plural:

- custom objects: ``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]`` with create (POST),
  get, list (``labelSelector``, ``fieldSelector``), merge-patch (PATCH), replace (PUT) and delete
  (``propagationPolicy`` recorded); a ``metadata.resourceVersion`` in a PUT or merge-patch body is a
  precondition (409 Conflict when stale), and a PUT without one is a 422, as for custom resources
  (k8s.io/apiextensions-apiserver ``pkg/registry/customresource/strategy.go``, AllowUnconditionalUpdate);
  with ``fieldValidation=Strict`` the resulting object is checked against its vendored CRD
  (``tests/crds.py``): an unknown field is a 400, another schema violation a 422, as the API server
  answers (k8s.io/apiserver ``pkg/endpoints/handlers/create.go``, strict decoding);
- watch streams (``?watch=true``): chunked JSON lines of ADDED/MODIFIED/DELETED events, resumed from
  ``resourceVersion``, an ERROR event with code 410 when that version is older than the retained history;
- pods: ``/api/v1/namespaces/{ns}/pods[/{name}[/log]]`` with ``labelSelector``, and logs with
  ``follow``, ``timestamps`` and ``container``.

Kinder than the real API server (tests/kubeharness/envtest.py runs the real one): without
``fieldValidation=Strict`` nothing is validated or pruned, CRD defaults and CEL rules are not applied, a
Foreground delete removes the object at once (a real one keeps it, with a ``foregroundDeletion``
finalizer, until the garbage collector has deleted its dependents), and a watch expires (410) only when a
test calls ``expire_history``.

Tests act as the operator: they wait for objects the code under test creates, then set status
conditions, add pods and append log lines; ``drop_streams`` and ``expire_history`` break watches the way
an API server does. Use the ``fake_kube`` fixture, or ``FakeKube`` directly in a ``with`` block.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from crds import crd_errors
from kubernetes import client

Obj = dict[str, Any]
PODS = ("", "pods")  # (group, plural) under which pods are kept
_FINISHED = ("Succeeded", "Failed")
_CUSTOM_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"
)
_POD_PATH = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/pods(?:/(?P<name>[^/]+)(?:/(?P<sub>log|status))?)?$")


def _flag(query: dict[str, str], name: str) -> bool:
    """A boolean query parameter as the API server parses it (Go strconv.ParseBool)."""
    return query.get(name, "") in ("1", "t", "T", "true", "True", "TRUE")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def matches_label_selector(labels: dict[str, str], selector: str) -> bool:
    """Kubernetes label selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``."""
    for requirement in _split_requirements(selector or ""):
        set_match = re.match(r"^(\S+)\s+(in|notin)\s+\((.*)\)$", requirement)
        if set_match:
            key, operator, values = set_match.groups()
            allowed = {value.strip() for value in values.split(",")}
            if (operator == "in") != (labels.get(key) in allowed):
                return False
        elif "!=" in requirement:
            key, value = (part.strip() for part in requirement.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, value = (part.strip() for part in requirement.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def matches_field_selector(obj: Obj, selector: str) -> bool:
    """Field selectors on ``metadata.name`` and ``metadata.namespace`` (what CRDs support)."""
    for requirement in _split_requirements(selector or ""):
        negate = "!=" in requirement
        field, value = (part.strip() for part in re.split(r"!=|==|=", requirement, maxsplit=1))
        if field not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field selector {field!r} is not supported for this resource")
        actual = obj["metadata"].get(field.split(".", 1)[1])
        if (actual == value) == negate:
            return False
    return True


@dataclass
class _Event:
    resource_version: int
    type: str
    group: str
    plural: str
    obj: Obj


@dataclass
class Request:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


class FakeKube:
    """The fake API server and its state (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._objects: dict[tuple[str, str, str, str], Obj] = {}
        self._events: list[_Event] = []
        self._resource_version = 0
        self._oldest_watchable = 0
        self._drops = 0
        self._abrupt_drop = False
        self._stopped = False
        self._log_lines: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._last_log_ns = 0
        self._forbidden: set[tuple[str, str]] = set()
        self._background: list[threading.Thread] = []
        self.background_errors: list[str] = []
        self.requests: list[Request] = []
        self.created: list[Obj] = []
        self.deleted: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for thread in self._background:
            thread.join(10)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def configuration(self) -> client.Configuration:
        """A client Configuration pointing at this server."""
        configuration = client.Configuration()
        configuration.host = self.url
        return configuration

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(self.configuration())

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig file whose current context is this server (for subprocesses)."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(document))
        return path

    def in_background(self, script: Callable[..., Any], *args: Any) -> threading.Thread:
        """Run an operator script in a thread; its exceptions fail the test at teardown."""

        def guarded() -> None:
            try:
                script(*args)
            except Exception:  # reported by raise_background_errors
                self.background_errors.append(traceback.format_exc())

        thread = threading.Thread(target=guarded, name="fake-operator", daemon=True)
        self._background.append(thread)
        thread.start()
        return thread

    # -- inspection --------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Block until ``predicate()`` is truthy (re-checked on every change); return its value."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopped:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self._lock.wait(remaining)

    def get(self, plural: str, namespace: str, name: str, group: str | None = None) -> Obj | None:
        """A copy of the stored object, or None."""
        with self._lock:
            key = self._find_key(plural, namespace, name, group)
            return copy.deepcopy(self._objects[key]) if key else None

    def wait_for_object(self, plural: str, namespace: str, name: str, timeout: float = 10.0) -> Obj:
        return self.wait_for(lambda: self.get(plural, namespace, name), timeout)

    def list(self, plural: str, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (group, obj_plural, obj_namespace, _), obj in sorted(self._objects.items())
                if obj_plural == plural and namespace in (None, obj_namespace)
            ]

    def count(self, method: str, path_contains: str = "", **query: str) -> int:
        """How many requests had this method, a path containing the text, and these query values."""
        with self._lock:
            return sum(
                1
                for request in self.requests
                if request.method == method
                and path_contains in request.path
                and all(request.query.get(key) == value for key, value in query.items())
            )

    # -- scripting (the "operator") ----------------------------------------------------------------

    def set_condition(
        self,
        plural: str,
        namespace: str,
        name: str,
        condition_type: str,
        status: str = "True",
        reason: str = "",
        message: str = "",
        group: str | None = None,
    ) -> Obj:
        """Set one status condition (replacing one of the same type), as a controller does."""

        def change(obj: Obj) -> None:
            conditions = [c for c in obj.setdefault("status", {}).get("conditions", []) if c["type"] != condition_type]
            conditions.append(
                {
                    "type": condition_type,
                    "status": status,
                    "reason": reason or condition_type,
                    "message": message,
                    "lastTransitionTime": _now(),
                    "lastUpdateTime": _now(),
                }
            )
            obj["status"]["conditions"] = conditions

        return self._modify(plural, namespace, name, group, change)

    def patch_status(self, plural: str, namespace: str, name: str, status: Obj, group: str | None = None) -> Obj:
        """Merge ``status`` into the object's status."""

        def change(obj: Obj) -> None:
            obj["status"] = merge_patch(obj.get("status") or {}, status)

        return self._modify(plural, namespace, name, group, change)

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        containers: tuple[str, ...] = ("main",),
        phase: str = "Pending",
    ) -> Obj:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"containers": [{"name": container, "image": "fake"} for container in containers]},
            "status": {"phase": phase},
        }
        with self._lock:
            stored = self._store_new(PODS[0], "v1", PODS[1], namespace, pod)
            self._log_lines[(namespace, name)] = []
            return copy.deepcopy(stored)

    def set_pod_phase(self, namespace: str, name: str, phase: str) -> Obj:
        def change(obj: Obj) -> None:
            obj["status"]["phase"] = phase

        return self._modify("pods", namespace, name, PODS[0], change)

    def log(self, namespace: str, pod: str, *lines: str) -> None:
        """Append lines to a pod's log, each with a fresh RFC 3339 nano timestamp."""
        with self._lock:
            for line in lines:
                self._last_log_ns = max(time.time_ns(), self._last_log_ns + 1)
                seconds, nanos = divmod(self._last_log_ns, 1_000_000_000)
                stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
                fraction = f"{nanos:09d}".rstrip("0")  # RFC3339Nano trims trailing zeros, as Go does
                self._log_lines[(namespace, pod)].append((f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z", line))
            self._lock.notify_all()

    def forbid(self, method: str, plural: str) -> None:
        """Answer ``method`` requests on ``plural`` with 403, as for a service account without that RBAC verb."""
        with self._lock:
            self._forbidden.add((method, plural))

    def drop_streams(self, abrupt: bool = True) -> None:
        """End every open watch and log stream: ``abrupt`` resets the connection mid-stream."""
        with self._lock:
            self._drops += 1
            self._abrupt_drop = abrupt
            self._lock.notify_all()

    def expire_history(self) -> None:
        """Forget past events: a watch resumed from an older resourceVersion gets 410 Gone."""
        with self._lock:
            self._resource_version += 1
            self._oldest_watchable = self._resource_version

    def raise_background_errors(self) -> None:
        if self.background_errors:
            raise AssertionError("operator script failed:\n" + "\n".join(self.background_errors))

    # -- state (callers hold the lock) -------------------------------------------------------------

    def _find_key(self, plural: str, namespace: str, name: str, group: str | None) -> tuple[str, str, str, str] | None:
        keys = [
            key for key in self._objects if key[1:] == (plural, namespace, name) and (group is None or key[0] == group)
        ]
        if len(keys) > 1:
            raise ValueError(f"{plural} {namespace}/{name} exists in several groups; pass group=")
        return keys[0] if keys else None

    def _next_version(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def _record(self, event_type: str, group: str, plural: str, obj: Obj) -> None:
        self._events.append(
            _Event(int(obj["metadata"]["resourceVersion"]), event_type, group, plural, copy.deepcopy(obj))
        )
        self._lock.notify_all()

    def _store_new(self, group: str, version: str, plural: str, namespace: str, obj: Obj) -> Obj:
        metadata = obj.setdefault("metadata", {})
        metadata.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            resourceVersion=str(self._next_version()),
            generation=1,
            creationTimestamp=_now(),
        )
        self._objects[(group, plural, namespace, metadata["name"])] = obj
        self._record("ADDED", group, plural, obj)
        return obj

    def _modify(self, plural: str, namespace: str, name: str, group: str | None, change: Callable[[Obj], None]) -> Obj:
        with self._lock:
            key = self._find_key(plural, namespace, name, group)
            if key is None:
                raise KeyError(f"no {plural} {namespace}/{name}")
            obj = self._objects[key]
            change(obj)
            obj["metadata"]["resourceVersion"] = str(self._next_version())
            self._record("MODIFIED", key[0], key[1], obj)
            return copy.deepcopy(obj)


def _desired_state(obj: Obj) -> Obj:
    """Everything but metadata and status: a change here bumps metadata.generation."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Abort(Exception):
    """Ends a handler after an error response was sent."""


def _make_handler(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        # -- plumbing --

        def _send_json(self, code: int, body: Obj) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _fail(self, code: int, reason: str, message: str) -> None:
            self._send_json(code, _status(code, reason, message))
            raise _Abort

        def _start_chunked(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _end_chunked(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _reset(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            with fake._lock:
                fake.requests.append(Request(method, parts.path, query, body))
                fake._lock.notify_all()
            try:
                self._route(method, parts.path, query, body)
            except _Abort:
                pass
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away, e.g. it stopped watching

        def _route(self, method: str, path: str, query: dict, body: Any) -> None:
            custom = _CUSTOM_PATH.match(path)
            pod = _POD_PATH.match(path)
            if custom:
                route = custom.groupdict()
                self._resource(method, route["group"], route["version"], route["plural"], route, query, body)
            elif pod and pod.group("sub") == "log":
                self._pod_log(pod.group("namespace"), pod.group("name"), query)
            elif pod:
                self._resource(method, PODS[0], "v1", PODS[1], pod.groupdict(), query, body)
            else:
                self._fail(404, "NotFound", f"the fake API server does not serve {path}")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        # -- resources --

        def _resource(
            self, method: str, group: str, version: str, plural: str, route: dict, query: dict, body: Any
        ) -> None:
            namespace, name, sub = route["namespace"], route["name"], route["sub"]
            if (method, plural) in fake._forbidden:
                self._fail(
                    403, "Forbidden", f'{plural}.{group} is forbidden: cannot {method} in the namespace "{namespace}"'
                )
            api_version = f"{group}/{version}" if group else version
            if name is None and method == "GET":
                if _flag(query, "watch"):
                    self._watch(group, plural, namespace, query)
                else:
                    self._list(group, api_version, plural, namespace, query)
                return
            if name is None and method == "POST":
                self._create(group, version, api_version, plural, namespace, body, query)
                return
            if name is None:
                self._fail(405, "MethodNotAllowed", f"{method} on a collection is not supported")
            with fake._lock:
                key = (group, plural, namespace, name)
                current = fake._objects.get(key)
                if current is None:
                    self._fail(404, "NotFound", f'{plural}.{group} "{name}" not found')
                if method == "GET":
                    self._send_json(200, current)
                elif method == "DELETE":
                    policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy") or ""
                    del fake._objects[key]
                    current["metadata"]["resourceVersion"] = str(fake._next_version())
                    fake._record("DELETED", group, plural, current)
                    fake.deleted.append(
                        {"plural": plural, "namespace": namespace, "name": name, "propagationPolicy": policy}
                    )
                    self._send_json(200, _status(200, "", "deleted") | {"status": "Success"})
                elif method in ("PATCH", "PUT"):
                    self._update(method, key, current, sub, body, query)
                else:
                    self._fail(405, "MethodNotAllowed", f"{method} is not supported")

        def _validate(self, obj: Obj, query: dict) -> None:
            """fieldValidation=Strict: refuse what the API server would (unknown field 400, else 422)."""
            if query.get("fieldValidation") != "Strict":
                return
            try:
                errors = crd_errors(obj)
            except LookupError:
                return  # not a vendored custom resource (a pod): nothing to check it against
            unknown = [error for error in errors if "Additional properties are not allowed" in error]
            if unknown:
                self._fail(400, "BadRequest", "strict decoding error: unknown field: " + "; ".join(unknown))
            if errors:
                self._fail(422, "Invalid", f"{obj.get('kind')} {obj['metadata'].get('name')!r} is invalid: "
                           + "; ".join(errors))

        def _create(
            self, group: str, version: str, api_version: str, plural: str, namespace: str, body: Any, query: dict
        ) -> None:
            if not isinstance(body, dict) or not body.get("metadata", {}).get("name"):
                self._fail(422, "Invalid", "metadata.name: Required value")
            if body.get("apiVersion") != api_version:
                self._fail(
                    400, "BadRequest", f"apiVersion {body.get('apiVersion')!r} does not match the path ({api_version})"
                )
            if body["metadata"].get("namespace", namespace) != namespace:
                self._fail(400, "BadRequest", "the namespace of the object does not match the namespace on the request")
            self._validate(body, query)
            with fake._lock:
                name = body["metadata"]["name"]
                if (group, plural, namespace, name) in fake._objects:
                    self._fail(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists')
                obj = copy.deepcopy(body)
                obj.pop("status", None)  # the status subresource is set by controllers only
                stored = fake._store_new(group, version, plural, namespace, obj)
                fake.created.append(copy.deepcopy(stored))
                self._send_json(201, stored)

        def _update(self, method: str, key: tuple, current: Obj, sub: str | None, body: Any, query: dict) -> None:
            if method == "PATCH":
                content_type = self.headers.get("Content-Type", "")
                if content_type != "application/merge-patch+json":
                    self._fail(
                        415,
                        "UnsupportedMediaType",
                        f"the fake API server supports merge patches only, not {content_type}",
                    )
                updated = merge_patch(current, body)
            else:
                updated = copy.deepcopy(body)
            sent_version = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if method == "PUT" and not sent_version and key[0]:
                self._fail(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
            if sent_version and sent_version != current["metadata"]["resourceVersion"]:
                self._fail(
                    409, "Conflict", "the object has been modified; please apply your changes to the latest version"
                )
            self._validate(updated, query)
            if sub == "status":
                result = copy.deepcopy(current)
                result["status"] = updated.get("status")
            else:
                result = {key_: value for key_, value in updated.items() if key_ != "status"}
                if "status" in current:
                    result["status"] = copy.deepcopy(current["status"])
                kept = ("name", "namespace", "uid", "creationTimestamp", "generation")
                result["metadata"] = {**(updated.get("metadata") or {}), **{k: current["metadata"][k] for k in kept}}
                if _desired_state(result) != _desired_state(current):
                    result["metadata"]["generation"] = current["metadata"]["generation"] + 1
            result["metadata"]["resourceVersion"] = str(fake._next_version())
            fake._objects[key] = result
            fake._record("MODIFIED", key[0], key[1], result)
            self._send_json(200, result)

        def _matching(self, namespace: str, obj: Obj, query: dict) -> bool:
            return (
                obj["metadata"]["namespace"] == namespace
                and matches_label_selector(obj["metadata"].get("labels") or {}, query.get("labelSelector", ""))
                and matches_field_selector(obj, query.get("fieldSelector", ""))
            )

        def _list(self, group: str, api_version: str, plural: str, namespace: str, query: dict) -> None:
            try:
                with fake._lock:
                    items = [
                        copy.deepcopy(obj)
                        for (obj_group, obj_plural, _, _), obj in sorted(fake._objects.items())
                        if (obj_group, obj_plural) == (group, plural) and self._matching(namespace, obj, query)
                    ]
                    version = str(fake._resource_version)
            except ValueError as error:
                self._fail(400, "BadRequest", str(error))
            kind = items[0]["kind"] + "List" if items else "List"
            self._send_json(
                200, {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": version}, "items": items}
            )

        def _watch(self, group: str, plural: str, namespace: str, query: dict) -> None:
            since = query.get("resourceVersion", "")
            deadline = time.monotonic() + float(query.get("timeoutSeconds", 30))
            self._start_chunked("application/json")
            with fake._lock:
                drops = fake._drops
                if since not in ("", "0") and int(since) < fake._oldest_watchable:
                    status = _status(410, "Expired", f"too old resource version: {since} ({fake._oldest_watchable})")
                    self._chunk(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                    self._end_chunked()
                    return
                if since in ("", "0"):
                    pending = [
                        ("ADDED", copy.deepcopy(obj))
                        for (obj_group, obj_plural, _, _), obj in sorted(fake._objects.items())
                        if (obj_group, obj_plural) == (group, plural)
                    ]
                    seen = fake._resource_version
                else:
                    seen = int(since)
                    pending = []
            while True:
                with fake._lock:
                    while not pending:
                        if fake._drops != drops or fake._stopped:
                            break  # a drop wins over events that arrive with it: they are replayed on resume
                        new = [
                            e
                            for e in fake._events
                            if e.resource_version > seen and (e.group, e.plural) == (group, plural)
                        ]
                        if new:
                            pending = [(e.type, copy.deepcopy(e.obj)) for e in new]
                            seen = new[-1].resource_version
                            break
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        fake._lock.wait(remaining)
                    dropped = fake._drops != drops or fake._stopped
                    abrupt = fake._abrupt_drop
                if dropped or not pending:
                    if dropped and abrupt:
                        self._reset()
                    else:
                        self._end_chunked()
                    return
                for event_type, obj in pending:
                    if self._matching(namespace, obj, query):
                        self._chunk(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
                pending = []

        def _pod_log(self, namespace: str, name: str, query: dict) -> None:
            with fake._lock:
                pod = fake._objects.get((PODS[0], PODS[1], namespace, name))
                if pod is None:
                    self._fail(404, "NotFound", f'pods "{name}" not found')
                containers = [c["name"] for c in pod["spec"]["containers"]]
                container = query.get("container") or (containers[0] if len(containers) == 1 else None)
                if container not in containers:
                    self._fail(
                        400,
                        "BadRequest",
                        f"a container name must be specified for pod {name}, choose one of: {containers}",
                    )
                if pod["status"]["phase"] == "Pending":
                    self._fail(
                        400,
                        "BadRequest",
                        f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
                    )
                drops = fake._drops
            self._start_chunked("text/plain")
            sent = 0
            timestamps = _flag(query, "timestamps")
            while True:
                with fake._lock:
                    lines = fake._log_lines.get((namespace, name), [])
                    while sent == len(lines) and _flag(query, "follow"):
                        current = fake._objects.get((PODS[0], PODS[1], namespace, name))
                        if (
                            current is None
                            or current["status"]["phase"] in _FINISHED
                            or fake._drops != drops
                            or fake._stopped
                        ):
                            break
                        fake._lock.wait(1)
                    dropped = fake._drops != drops or fake._stopped
                    abrupt = fake._abrupt_drop
                    batch = [] if dropped else lines[sent:]
                    sent += len(batch)
                if batch:
                    text = "".join(f"{stamp} {line}\n" if timestamps else f"{line}\n" for stamp, line in batch)
                    self._chunk(text.encode())
                    continue
                if dropped and abrupt:
                    self._reset()
                else:
                    self._end_chunked()
                return

    return Handler


@pytest.fixture
def fake_kube():
    """A running FakeKube; operator scripts started with ``in_background`` must not have failed."""
    fake = FakeKube().start()
    try:
        yield fake
    finally:
        fake.stop()
    fake.raise_background_errors()
