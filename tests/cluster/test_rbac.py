"""Least privilege: the Role in manifests/base/rbac.yaml grants exactly the verbs the code uses on each
resource, as tests/cluster/rbac_usage.py reads them from the source."""

from __future__ import annotations

import ast

import pytest
import yaml

import rbac_usage
from image_imports import REPO
from rbac_usage import Permission, api_call, launcher_verbs, permissions_used

RBAC = REPO / "manifests" / "base" / "rbac.yaml"


def role_rules() -> list[dict]:
    (role,) = [d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "Role"]
    return role["rules"]


def granted(rules: list[dict]) -> set[Permission]:
    """The permissions a Role's rules grant; wildcards are refused outright."""
    result = set()
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"rbac.yaml: wildcard in {field} is not least privilege"
        assert not rule.get("resourceNames"), "the launcher's resource names are chosen at run time"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    result.add(Permission(group, resource, verb))
    return result


def differences(grants: set[Permission], needed: dict[Permission, set[str]]) -> list[str]:
    missing = sorted(set(needed) - grants, key=str)
    extra = sorted(grants - set(needed), key=str)
    lines = [f"missing {p.verb} on {p.resource}.{p.group or 'core'}, used at {sorted(needed[p])}" for p in missing]
    lines += [f"granted but unused: {p.verb} on {p.resource}.{p.group or 'core'}" for p in extra]
    return lines


def test_role_grants_exactly_what_the_code_uses():
    problems = differences(granted(role_rules()), permissions_used())
    assert not problems, "manifests/base/rbac.yaml differs from the code's API use:\n" + "\n".join(problems)


def test_the_comparison_catches_a_missing_and_an_extra_verb():
    needed = permissions_used()
    grants = granted(role_rules())
    some = sorted(grants, key=str)[0]
    assert differences(grants - {some}, needed) == [
        f"missing {some.verb} on {some.resource}.{some.group or 'core'}, used at {sorted(needed[some])}"
    ]
    surplus = Permission(some.group, some.resource, "deletecollection")
    assert differences(grants | {surplus}, needed) == [
        f"granted but unused: deletecollection on {some.resource}.{some.group or 'core'}"
    ]


def test_role_rejects_wildcards():
    with pytest.raises(AssertionError, match="wildcard"):
        granted([{"apiGroups": ["kubeflow.org"], "resources": ["*"], "verbs": ["get"]}])


def test_client_methods_map_to_the_verbs_the_api_server_checks():
    assert api_call("create_namespaced_custom_object") == ("create", "custom")
    assert api_call("get_namespaced_custom_object_status") == ("get", "custom")
    assert api_call("patch_namespaced_custom_object") == ("patch", "custom")
    assert api_call("replace_namespaced_custom_object") == ("update", "custom")
    assert api_call("delete_namespaced_custom_object") == ("delete", "custom")
    assert api_call("list_namespaced_pod") == ("list", "pods")
    assert api_call("read_namespaced_pod") == ("get", "pods")
    assert api_call("read_namespaced_pod_log") == ("get", "pods/log")
    assert api_call("run") is None


def test_launcher_methods_use_what_their_contract_says():
    """run: create-or-reattach (get), watch/list, delete on timeout or cancel, stream the pod log;
    apply: create, or read and merge-patch to equal, then watch (and read a Standard-mode predictor's
    Deployment to judge its rollout); delete: delete."""
    verbs = launcher_verbs()
    assert verbs["run"] == {"custom": {"create", "get", "list", "watch", "delete"}, "pods": {"list", "get"},
                            "pods/log": {"get"}}
    assert verbs["apply"] == {"custom": {"create", "get", "patch", "list", "watch"}, "deployments": {"get"}}
    assert verbs["delete"] == {"custom": {"delete"}}


def test_every_launcher_call_site_is_attributed_to_a_resource():
    """Each ``launcher.run/apply/delete`` call outside the platform is found and names its resources."""
    sites = set()
    for path in (REPO / "src" / "dmlops").rglob("*.py"):
        if path == rbac_usage.LAUNCHER_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in rbac_usage.LAUNCHER_METHODS and rbac_usage._is_launcher(node.func.value)):
                sites.add(f"{rbac_usage._module_name(path)}:{node.lineno}")
    attributed = {where.split(" ")[0] for places in permissions_used().values() for where in places}
    assert sites and sites <= attributed, sorted(sites - attributed)
