"""Typed errors of the platform layer: a launch that failed, timed out or was cancelled.

Each error carries the resource it is about, so a step's log says which custom resource to inspect.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceRef:
    """A Kubernetes object by identity: what a step writes as its output naming the resource."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def to_dict(self) -> dict[str, str]:
        """The reference in Kubernetes field names (apiVersion, kind, namespace, name, uid)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class LaunchError(Exception):
    """A custom resource could not be launched or waited on."""


class InvalidResource(LaunchError, ValueError):
    """A custom resource dict is malformed; the message names the field and the fix."""


class LaunchTimeout(LaunchError):
    """The resource did not reach a final state within the timeout."""

    def __init__(self, resource: ResourceRef, timeout_s: float, last_conditions: str = ""):
        self.resource = resource
        self.timeout_s = timeout_s
        detail = f" (last conditions: {last_conditions})" if last_conditions else ""
        super().__init__(f"{resource} did not finish within {timeout_s:g} s{detail}")


class JobFailed(LaunchError):
    """The resource reached a failed state; carries the reason and message its controller gave, and the
    last lines of its primary pod's log when the launcher streamed it."""

    def __init__(self, resource: ResourceRef, reason: str, message: str, log_tail: tuple[str, ...] = ()):
        self.resource = resource
        self.reason = reason
        self.message = message
        self.log_tail = log_tail
        tail = "\nlast lines of its log:\n" + "\n".join(log_tail) if log_tail else ""
        super().__init__(f"{resource} failed: {reason}: {message}{tail}")


class LaunchCancelled(LaunchError):
    """The launching process was asked to stop (SIGTERM/SIGINT); the resource was deleted."""

    def __init__(self, resource: ResourceRef, signal_name: str):
        self.resource = resource
        self.signal_name = signal_name
        super().__init__(f"{signal_name} received: run cancelled, {resource} deleted")
