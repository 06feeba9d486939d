"""The Kubernetes API permissions dmlops code uses, read from its source with ``ast``.

Two kinds of use are found:

- direct calls of ``CustomObjectsApi`` / ``CoreV1Api`` methods (``*_namespaced_custom_object``,
  ``*_namespaced_pod``, ``read_namespaced_pod_log``) with the group and plural given as string constants
  (or module-level string constants);
- calls of the platform launcher's public methods (``run``, ``apply``, ``delete`` on a receiver named
  ``*launcher*`` or built by ``KubernetesLauncher(...)``). The launcher is generic over kinds: the verbs
  each of its methods uses are read from dmlops/platform/kubernetes.py (following its own calls, the
  log-follower thread it starts and the list method it hands to ``watch.stream``), and the kinds a
  calling module passes are the kinds (with a completion rule in ``dmlops.platform.rules.RULES``) of
  the resource dict literals (``apiVersion``, ``kind`` and ``metadata`` keys) in that module or in the
  dmlops modules it imports.

Pods and their logs are read only to stream a job's log: for kinds whose rule names log pods, unless
the call passes ``stream_logs=False``.

Methods map to verbs as the API server authorizes them: create→create, get/read→get, list→list,
list handed to ``watch.stream``→watch, patch→patch, replace→update, delete→delete;
``read_namespaced_pod_log`` is ``get`` on the ``pods/log`` subresource.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

from dmlops.platform.rules import RULES, DeploymentRollout

from image_imports import SRC, import_closure, module_file

LAUNCHER_MODULE = SRC / "dmlops" / "platform" / "kubernetes.py"
LAUNCHER_CLASS = "KubernetesLauncher"
LAUNCHER_METHODS = ("run", "apply", "delete")
_VERB_BY_PREFIX = {"create": "create", "get": "get", "read": "get", "list": "list", "patch": "patch",
                   "replace": "update", "delete": "delete"}


@dataclass(frozen=True)
class Permission:
    """One (API group, resource, verb) a piece of code needs, and where the need comes from."""

    group: str
    resource: str
    verb: str


def api_call(method: str) -> tuple[str, str] | None:
    """(verb, resource kind) for a client API method: resource kind is "custom", "pods" or "pods/log"."""
    prefix = method.split("_", 1)[0]
    if prefix not in _VERB_BY_PREFIX:
        return None
    if method.endswith("_namespaced_custom_object") or method.endswith("_namespaced_custom_object_status"):
        return _VERB_BY_PREFIX[prefix], "custom"
    if method == "read_namespaced_pod_log":
        return "get", "pods/log"
    if method == "read_namespaced_deployment":  # apps/v1: a Standard-mode predictor's rollout
        return "get", "deployments"
    if method.endswith("_namespaced_pod") or method.endswith("_namespaced_pod_status"):
        return _VERB_BY_PREFIX[prefix], "pods"
    return None


def _string_constants(tree: ast.AST) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments, and such constants imported from dmlops modules."""
    constants = {}
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))  # GROUP, VERSION = "a", "b"
                for name, value in pairs:
                    if isinstance(name, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                        constants[name.id] = value.value
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("dmlops"):
            path = module_file(node.module)
            if path is None:
                continue
            imported = _string_constants(ast.parse(path.read_text()))
            for alias in node.names:
                if alias.name in imported:
                    constants[alias.asname or alias.name] = imported[alias.name]
    return constants


def _argument(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == keyword:
            return item.value
    return call.args[index] if len(call.args) > index else None


def _resolve(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _watched_methods(call: ast.Call) -> set[str]:
    """API methods handed to ``watch.Watch().stream(method, ...)``: their verb is watch."""
    if isinstance(call.func, ast.Attribute) and call.func.attr == "stream" and call.args:
        first = call.args[0]
        if isinstance(first, ast.Attribute):
            return {first.attr}
    return set()


@functools.cache
def launcher_verbs() -> dict[str, dict[str, set[str]]]:
    """For each public launcher method: {"custom": verbs on the resource it is given, "pods": ...,
    "pods/log": ...}, following calls inside dmlops/platform/kubernetes.py."""
    tree = ast.parse(LAUNCHER_MODULE.read_text(), str(LAUNCHER_MODULE))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    functions: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    functions[f"{node.name}.{item.name}"] = item

    def direct(name: str) -> tuple[set[tuple[str, str]], set[str]]:
        """(verb, resource kind) pairs and the functions a function calls."""
        owner = name.split(".")[0] if "." in name else ""
        uses: set[tuple[str, str]] = set()
        calls: set[str] = set()
        for node in ast.walk(functions[name]):
            if not isinstance(node, ast.Call):
                continue
            watched = _watched_methods(node)
            for method in watched:
                found = api_call(method)
                if found:
                    uses.add(("watch", found[1]))
            func = node.func
            if isinstance(func, ast.Attribute):
                found = api_call(func.attr)
                if found:
                    uses.add(found)
                receiver = func.value
                # self.method(), self.launcher.method(): methods of this module's classes.
                if isinstance(receiver, ast.Name) and receiver.id == "self" and f"{owner}.{func.attr}" in functions:
                    calls.add(f"{owner}.{func.attr}")
                elif isinstance(receiver, ast.Attribute) and receiver.attr == "launcher":
                    calls.add(f"{LAUNCHER_CLASS}.{func.attr}")
                elif isinstance(receiver, ast.Name) and receiver.id in classes:
                    calls.add(f"{receiver.id}.{func.attr}")
            elif isinstance(func, ast.Name):
                if func.id in functions:
                    calls.add(func.id)
                if func.id in classes:  # constructing a class (a thread) runs its methods
                    calls.update(f for f in functions if f.startswith(f"{func.id}."))
        return uses, calls

    result: dict[str, dict[str, set[str]]] = {}
    for method in LAUNCHER_METHODS:
        seen: set[str] = set()
        pending = [f"{LAUNCHER_CLASS}.{method}"]
        verbs: dict[str, set[str]] = {}
        while pending:
            name = pending.pop()
            if name in seen or name not in functions:
                continue
            seen.add(name)
            uses, calls = direct(name)
            for verb, resource in uses:
                verbs.setdefault(resource, set()).add(verb)
            pending.extend(calls)
        result[method] = verbs
    return result


def _module_name(path: Path) -> str:
    relative = path.relative_to(SRC).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _kinds_reached(module: str) -> set[str]:
    """Completion-rule kinds of the resources ``module`` can hand to the launcher: the ``kind`` of every
    dict literal with ``apiVersion``, ``kind`` and ``metadata`` keys (a creatable resource, not a nested
    template such as a Katib trialSpec) in ``module`` or the dmlops modules it imports."""
    rule_kinds = {kind for _, kind in RULES}
    found: set[str] = set()
    for name in import_closure({module}).modules:
        path = module_file(name)
        if path is None or path == LAUNCHER_MODULE or "platform" in name.split("."):
            continue
        tree = ast.parse(path.read_text())
        constants = _string_constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Dict):
                continue
            entries = {key.value: value for key, value in zip(node.keys, node.values)
                       if isinstance(key, ast.Constant)}
            if {"apiVersion", "kind", "metadata"} <= entries.keys():
                kind = _resolve(entries["kind"], constants)
                if kind in rule_kinds:
                    found.add(kind)
    return found


def _is_launcher(receiver: ast.expr) -> bool:
    if isinstance(receiver, ast.Name):
        return "launcher" in receiver.id.lower()
    if isinstance(receiver, ast.Attribute):
        return "launcher" in receiver.attr.lower()
    if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name):
        return receiver.func.id == LAUNCHER_CLASS
    return False


@functools.cache
def permissions_used() -> dict[Permission, set[str]]:
    """Every permission the code needs, with the places (module:line) that need it."""
    needed: dict[Permission, set[str]] = {}
    by_method = launcher_verbs()
    rules_by_kind: dict[str, list] = {}
    for (_, kind), rule in RULES.items():
        rules_by_kind.setdefault(kind, []).append(rule)

    def need(group: str, resource: str, verb: str, where: str) -> None:
        needed.setdefault(Permission(group, resource, verb), set()).add(where)

    for path in sorted((SRC / "dmlops").rglob("*.py")):
        if path == LAUNCHER_MODULE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        constants = _string_constants(tree)
        module = _module_name(path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            where = f"{module}:{node.lineno}"
            found = api_call(node.func.attr)
            if found and found[1] == "custom":
                group = _resolve(_argument(node, 0, "group"), constants)
                plural = _resolve(_argument(node, 3, "plural"), constants)
                if group is None or plural is None:
                    raise AssertionError(f"{where}: {node.func.attr} with a group or plural that is not a string "
                                         "constant; the RBAC check cannot tell which resource it uses")
                need(group, plural, found[0], where)
            elif found:
                need("", found[1], found[0], where)
            elif node.func.attr in LAUNCHER_METHODS and _is_launcher(node.func.value):
                kinds = _kinds_reached(module)
                if not kinds:
                    raise AssertionError(f"{where}: launcher.{node.func.attr}() in a module that builds no kind "
                                         "with a completion rule; the RBAC check cannot tell which resource")
                streams_logs = not any(k.arg == "stream_logs" and isinstance(k.value, ast.Constant)
                                       and k.value.value is False for k in node.keywords)
                for kind in kinds:
                    for rule in rules_by_kind[kind]:
                        for resource, verbs in by_method[node.func.attr].items():
                            if resource == "deployments":  # read only to judge a Deployment rollout
                                if any(isinstance(rollout, DeploymentRollout) for _, rollout in rule.rollouts):
                                    for verb in verbs:
                                        need("apps", resource, verb, f"{where} ({kind} via launcher)")
                                continue
                            if resource != "custom" and not (streams_logs and rule.log_pods):
                                continue  # pods are read only to stream the log of a kind that has log pods
                            for verb in verbs:
                                if resource == "custom":
                                    need(rule.group, rule.plural, verb, f"{where} ({kind} via launcher)")
                                else:
                                    need("", resource, verb, f"{where} ({kind} via launcher)")
    return needed
