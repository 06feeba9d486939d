"""What an Istio sidecar decides for one request, from RequestAuthentication and AuthorizationPolicy
objects: enough of Istio's semantics to check the multi-user overlay's policies, for the fields they use.

Follows istio/api ``security/v1beta1/request_authentication.proto`` and ``authorization_policy.proto``:

- A policy applies to a pod of its namespace whose labels include ``selector.matchLabels`` (no selector:
  every pod of the namespace).
- A token whose issuer no applicable ``jwtRules`` entry names is rejected (401); a request without a
  token has no request principal. A valid token's request principal is ``<iss>/<sub>``.
- DENY policies are evaluated before ALLOW: any matching DENY rule denies; else, when no ALLOW policy
  applies to the pod, the request is allowed; else it is allowed only if some ALLOW rule matches.
- A rule matches when each of its ``from``, ``to`` and ``when`` matches; ``from`` (``to``) matches when
  one of its sources (operations) does; a source matches when every field it sets does. A ``notX`` field
  matches when the value matches none of its entries.
- Strings match exactly, by prefix (``abc*``), by suffix (``*abc``), or ``*`` matches any non-empty value.

Not simulated: CUSTOM and AUDIT actions, ``when`` conditions, ports, methods, mTLS principals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    """A request as the sidecar sees it: the token's (issuer, subject) if any, path and the namespace of
    the mTLS peer that sent it."""

    path: str
    token: tuple[str, str] | None = None
    source_namespace: str = ""


def _matches(value: str, pattern: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _field(value: str, spec: dict[str, Any], name: str, negated: str) -> bool:
    if name in spec and not any(_matches(value, pattern) for pattern in spec[name]):
        return False
    if negated in spec and any(_matches(value, pattern) for pattern in spec[negated]):
        return False
    return True


def _applies(policy: dict[str, Any], namespace: str, pod_labels: dict[str, str]) -> bool:
    if policy["metadata"]["namespace"] != namespace:
        return False
    wanted = ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return all(pod_labels.get(key) == value for key, value in wanted.items())


def _rule_matches(rule: dict[str, Any], request: Request, principal: str) -> bool:
    sources = [entry["source"] for entry in rule.get("from") or []]
    if sources and not any(
        _field(principal, source, "requestPrincipals", "notRequestPrincipals")
        and _field(request.source_namespace, source, "namespaces", "notNamespaces")
        for source in sources
    ):
        return False
    operations = [entry["operation"] for entry in rule.get("to") or []]
    if operations and not any(_field(request.path, operation, "paths", "notPaths") for operation in operations):
        return False
    return True


def decide(objects: list[dict[str, Any]], namespace: str, pod_labels: dict[str, str], request: Request) -> int:
    """The HTTP status the sidecar answers with before the app: 401 (bad token), 403 (denied) or 200."""
    applicable = [obj for obj in objects if _applies(obj, namespace, pod_labels)]
    principal = ""
    if request.token is not None:
        issuers = {rule["issuer"] for obj in applicable if obj["kind"] == "RequestAuthentication"
                   for rule in obj["spec"]["jwtRules"]}
        issuer, subject = request.token
        if issuer not in issuers:
            return 401
        principal = f"{issuer}/{subject}"
    policies = [obj for obj in applicable if obj["kind"] == "AuthorizationPolicy"]

    def rules(action: str) -> list[dict[str, Any]]:
        return [rule for policy in policies if policy["spec"].get("action", "ALLOW") == action
                for rule in policy["spec"].get("rules") or []]

    if any(_rule_matches(rule, request, principal) for rule in rules("DENY")):
        return 403
    allowing = [policy for policy in policies if policy["spec"].get("action", "ALLOW") == "ALLOW"]
    if not allowing or any(_rule_matches(rule, request, principal) for rule in rules("ALLOW")):
        return 200
    return 403
