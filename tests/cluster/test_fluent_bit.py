"""The Fluent Bit DaemonSet of manifests/logging reads dmlops's JSON log lines as they are written.

No fluent-bit binary is installed here (neither Debian nor PyPI has one): where one is on the PATH the
configuration is checked with ``fluent-bit --dry-run``; everywhere, the configuration is parsed and its
pipeline checked against the lines dmlops.platform.logs writes (the CRI line format, the JSON parser's time
format, a nest filter for every ECS field prefix). The rendered objects are validated against the
Kubernetes schemas by test_manifests.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from datetime import datetime

import pytest

from dmlops.platform import logs
from image_imports import REPO
from test_manifests import render

FOLDER = REPO / "manifests" / "logging"
# fluent-bit src/multiline/flb_ml_parser_cri.c: FLB_ML_CRI_REGEX (Onigmo's (?<name>) written as Python's)
CRI_LINE = re.compile(r"^(?P<time>.+?) (?P<stream>stdout|stderr) (?P<_p>F|P) (?P<log>.*)$")


def sections(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """The ``[SECTION]``s of a classic-format Fluent Bit file, each with its keys (lower-cased) and values."""
    parsed: list[tuple[str, dict[str, list[str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            parsed.append((line[1:-1].upper(), {}))
            continue
        key, _, value = line.partition(" ")
        parsed[-1][1].setdefault(key.lower(), []).append(value.strip())
    return parsed


def one(entries: list[tuple[str, dict]], section: str, **match: str) -> dict[str, list[str]]:
    found = [keys for name, keys in entries if name == section
             and all(keys.get(key.lower(), [None])[0] == value for key, value in match.items())]
    assert len(found) == 1, f"{len(found)} [{section}] sections with {match}"
    return found[0]


@pytest.fixture(scope="module")
def config() -> list[tuple[str, dict]]:
    return sections((FOLDER / "fluent-bit.conf").read_text())


@pytest.fixture(scope="module")
def parsers() -> list[tuple[str, dict]]:
    return sections((FOLDER / "parsers.conf").read_text())


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"].rsplit("-", 1)[0] if obj["kind"] == "ConfigMap"
             else obj["metadata"]["name"]): obj for obj in render(FOLDER)}


def a_log_line() -> str:
    """A line as dmlops writes it: an error with a multi-line stack trace, a number, labels."""
    try:
        raise ValueError("bad input")
    except ValueError as error:
        record = logging.LogRecord("dmlops.test", logging.ERROR, __file__, 1, "refused %s", ("it",), (ValueError, error,
                                   error.__traceback__))
    record.__dict__.update({"http.response.status_code": 400, "labels.model_version": "3"})
    return logs.EcsJsonFormatter().format(record)


def test_the_config_passes_fluent_bits_dry_run(tmp_path):
    binary = shutil.which("fluent-bit")
    if binary is None:
        pytest.skip("fluent-bit is not installed (no Debian or PyPI package here); the configuration is checked "
                    "by parsing it in the other tests of this module")
    for name in ("fluent-bit.conf", "parsers.conf"):
        shutil.copy(FOLDER / name, tmp_path / name)
    env = {"ES_HOST": "es", "ES_PORT": "9200", "ES_TLS": "Off", "ES_USER": "", "ES_PASSWORD": "",
           "ES_INDEX_PREFIX": "dmlops-logs", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([binary, "--dry-run", "-c", str(tmp_path / "fluent-bit.conf")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_daemonset_runs_this_config_with_every_variable_it_names(objects, config):
    (daemonset,) = [obj for (kind, _), obj in objects.items() if kind == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_map = objects["ConfigMap", "fluent-bit-config"]
    assert config_map["data"] == {name: (FOLDER / name).read_text() for name in ("fluent-bit.conf", "parsers.conf")}
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == "config"]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == "config"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]  # the generated name, hash and all
    assert container["command"][-2:] == ["-c", f"{mount['mountPath']}/fluent-bit.conf"]
    assert one(config, "SERVICE")["parsers_file"] == ["parsers.conf"]
    named = set(re.findall(r"\$\{(\w+)\}", (FOLDER / "fluent-bit.conf").read_text()))
    assert named and named <= {variable["name"] for variable in container["env"]}
    settings = objects["ConfigMap", "fluent-bit-elasticsearch"]
    for variable in container["env"]:
        reference = variable["valueFrom"].get("configMapKeyRef")
        if reference:
            assert reference["name"] == settings["metadata"]["name"] and reference["key"] in settings["data"]
    tail = one(config, "INPUT", Name="tail")
    state = tail["db"][0].rsplit("/", 1)[0]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {"/var/log", state}
    (binding,) = [obj for (kind, _), obj in objects.items() if kind == "ClusterRoleBinding"]
    account = pod["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "logging"}]
    (role,) = [obj for (kind, _), obj in objects.items() if kind == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces"],
                              "verbs": ["get", "list", "watch"]}]


def test_a_cri_line_of_ours_decodes_to_its_ecs_fields(config, parsers):
    assert one(config, "INPUT", Name="tail")["multiline.parser"] == ["cri"]
    line = a_log_line()
    assert "\n" not in line  # the stack trace travels inside one CRI line
    cri = CRI_LINE.match(f"2026-11-27T18:33:40.374912345Z stdout F {line}")
    decoding = one(config, "FILTER", Name="parser")
    assert decoding["key_name"] == ["log"] and decoding["reserve_data"] == ["On"]
    parser = one(parsers, "PARSER", Name=decoding["parser"][0])
    assert parser["format"] == ["json"]
    record = json.loads(cri.group("log"))
    assert record["error.type"] == "ValueError" and record["http.response.status_code"] == 400
    # the parser takes the record's time from @timestamp (Fluent Bit's %L: the fraction of a second)
    assert parser["time_key"] == ["@timestamp"] and parser["time_keep"] == ["Off"]
    stamp = datetime.strptime(record["@timestamp"], parser["time_format"][0].replace("%L", "%f"))
    assert stamp.isoformat(timespec="milliseconds") + "Z" == record["@timestamp"]


def test_every_ecs_prefix_is_nested_before_dots_are_replaced(config):
    """Replace_Dots turns the dots of the keys it meets into underscores (Kubernetes label keys need it); our
    dotted fields must be objects by then, or log.level would arrive as log_level."""
    assert one(config, "OUTPUT", Name="es")["replace_dots"] == ["On"]
    modify = one(config, "FILTER", Name="modify")
    assert modify["rename"] == ["log message"]  # a line that is not JSON: its text, never a "log" string
    prefixes = {field.split(".", 1)[0] for field in logs.FIELD_TYPES if "." in field and not field.startswith("@")}
    prefixes.add("labels")
    names = [name for name, keys in config if name in ("FILTER", "OUTPUT")]
    filters = [keys for name, keys in config if name == "FILTER"]
    nests = {keys["nest_under"][0]: keys for keys in filters if keys["name"] == ["nest"]}
    assert set(nests) == prefixes
    for prefix, keys in nests.items():
        assert keys["wildcard"] == [f"{prefix}.*"] and keys["remove_prefix"] == [f"{prefix}."]
    order = [keys["name"][0] for keys in filters]
    assert order.index("parser") < order.index("modify") < order.index("nest") and names[-1] == "OUTPUT"
