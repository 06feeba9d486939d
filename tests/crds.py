"""Validate custom resource dicts against the upstream CRD schemas vendored in ``crds/``.

``crd_errors(obj)`` finds the CustomResourceDefinition serving the object's apiVersion and kind and checks
the object against its ``openAPIV3Schema`` with a JSON Schema validator. The check is strict: an object
schema that lists ``properties`` rejects any other field unless it says
``x-kubernetes-preserve-unknown-fields`` (as the API server prunes or rejects them). Other
``x-kubernetes-*`` extensions (CEL rules, list types) are ignored. Katib's CRDs carry no schema, so Katib
objects are checked against ``v1beta1.<Kind>`` of ``katib/openapi-swagger.json`` instead, equally strictly.
A file may hold several CRDs (Istio's ``crd-all.gen.yaml``), and a root schema that omits ``apiVersion``,
``kind`` and ``metadata`` still accepts them, as the API server does.
``metadata`` gets the API server's own checks of name and labels.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

CRDS = Path(__file__).resolve().parents[1] / "crds"
KATIB_SWAGGER = CRDS / "katib" / "openapi-swagger.json"
_KATIB_URI = "urn:katib-openapi"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def strict_schema(node: Any) -> Any:
    """OpenAPI v3 (as in CRDs) to JSON Schema: no unknown fields, nullable honoured, extensions dropped."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {
        key: strict_schema(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key != "properties"
    }
    if "properties" in node:  # property names are data, not schema keywords
        converted["properties"] = {name: strict_schema(schema) for name, schema in node["properties"].items()}
    if node.get("x-kubernetes-preserve-unknown-fields"):
        converted.pop("additionalProperties", None)
    elif "properties" in node and "additionalProperties" not in node:
        converted["additionalProperties"] = False
    if node.get("nullable") and "type" in node:
        converted["type"] = [node["type"], "null"]
    if isinstance(node.get("exclusiveMinimum"), bool):  # OpenAPI 3.0 boolean form
        converted.pop("exclusiveMinimum")
        if node["exclusiveMinimum"]:
            converted["exclusiveMinimum"] = converted.pop("minimum")
    if isinstance(node.get("exclusiveMaximum"), bool):
        converted.pop("exclusiveMaximum")
        if node["exclusiveMaximum"]:
            converted["exclusiveMaximum"] = converted.pop("maximum")
    return converted


@functools.cache
def _crd_index() -> dict[tuple[str, str], list[Path]]:
    """(group, kind) to the CRD files that define it, read from each file's head."""
    index: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(CRDS.rglob("*.yaml")):
        for document in re.split(r"^---$", path.read_text(), flags=re.M):  # Istio's: one file, many CRDs
            head = document[:20000]
            group = re.search(r"^  group: (\S+)$", head, re.M)
            kind = re.search(r"^    kind: (\S+)$", head, re.M)
            if group and kind:
                index.setdefault((group.group(1), kind.group(1)), []).append(path)
    return index


@functools.cache
def _crd_validator(api_version: str, kind: str) -> tuple[jsonschema.protocols.Validator, Path]:
    group, _, version = api_version.rpartition("/")
    for path in _crd_index().get((group, kind), []):
        crds = yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for crd in crds:
            if not crd or crd["spec"]["group"] != group or crd["spec"]["names"]["kind"] != kind:
                continue
            for served in crd["spec"]["versions"]:
                if served["name"] == version and served.get("served", True):
                    schema = strict_schema(served["schema"]["openAPIV3Schema"])
                    # The API server always accepts these, whether or not the schema lists them (Istio's omit them).
                    for field in ("apiVersion", "kind"):
                        schema["properties"].setdefault(field, {"type": "string"})
                    schema["properties"].setdefault("metadata", {"type": "object"})
                    return jsonschema.Draft7Validator(schema), path
    raise LookupError(f"no CRD in {CRDS} serves {kind} {api_version}")


@functools.cache
def _katib_validator(kind: str) -> tuple[jsonschema.protocols.Validator, Path]:
    document = strict_schema(json.loads(KATIB_SWAGGER.read_text()))
    if f"v1beta1.{kind}" not in document["components"]["schemas"]:
        raise LookupError(f"{KATIB_SWAGGER} has no schema v1beta1.{kind}")
    registry = Registry().with_resource(_KATIB_URI, Resource(contents=document, specification=DRAFT7))
    schema = {"$ref": f"{_KATIB_URI}#/components/schemas/v1beta1.{kind}"}
    return jsonschema.Draft7Validator(schema, registry=registry), KATIB_SWAGGER


def _metadata_errors(obj: dict[str, Any]) -> list[str]:
    metadata = obj.get("metadata") or {}
    errors = []
    name = metadata.get("name", "")
    if not (len(name) <= 253 and _DNS1123_SUBDOMAIN.match(name)):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    for section in ("labels", "annotations"):
        for key, value in (metadata.get(section) or {}).items():
            prefix, _, label_name = key.rpartition("/")
            if not (len(label_name) <= 63 and _LABEL_NAME.match(label_name)) or (
                prefix and not _DNS1123_SUBDOMAIN.match(prefix)
            ):
                errors.append(f"metadata.{section}: key {key!r} is not a qualified name")
            if not isinstance(value, str):
                errors.append(f"metadata.{section}[{key!r}]: value {value!r} is not a string")
            elif section == "labels" and not (len(value) <= 63 and _LABEL_VALUE.match(value)):
                errors.append(f"metadata.labels[{key!r}]: {value!r} is not a valid label value")
    return errors


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of ``obj``, each as ``<path>: <message>``; empty when it is valid."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if api_version == "kubeflow.org/v1beta1" and kind in ("Experiment", "Trial", "Suggestion"):
        validator, _ = _katib_validator(kind)
    else:
        validator, _ = _crd_validator(api_version, kind)
    errors = [
        f"{'.'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda error: list(map(str, error.absolute_path)))
    ]
    return errors + _metadata_errors(obj)


def assert_valid(obj: dict[str, Any]) -> None:
    """Fail with every violation listed when ``obj`` does not match its upstream schema."""
    errors = crd_errors(obj)
    assert not errors, f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} is invalid:\n" + "\n".join(errors)
