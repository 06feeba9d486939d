"""Deterministic names and labels for the custom resources a pipeline step launches, and the references to
Secret keys (``<secret>/<key>``) a step hands to the pods it starts.

A KFP task that is retried runs the same code with the same run id and task name, so it computes the
same resource name and labels and reattaches to the resource its first attempt created instead of
creating a second one.
"""

from __future__ import annotations

import hashlib
import os
import re

RUN_ID_LABEL = "dmlops.io/run-id"
TASK_LABEL = "dmlops.io/task"
MAX_NAME_LENGTH = 63
# Controllers derive pod, service and host names from the resource name (e.g. "<name>-worker-12",
# "<name>-node-0-0", "<name>-predictor-<namespace>"), so the default leaves room below 63.
DEFAULT_NAME_LENGTH = 40
_HASH_LENGTH = 10
_RFC1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _slug(text: str) -> str:
    """Lower-case ``text`` and turn every run of characters outside [a-z0-9] into one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def resource_name(prefix: str, run_id: str, task: str, *, max_length: int = DEFAULT_NAME_LENGTH) -> str:
    """A DNS-1035 label ``<prefix>-<task>-<hash>`` that is the same for the same inputs.

    The hash covers the full prefix, run id and task, so names stay distinct when the readable parts
    are truncated. Inside a ParallelFor every iteration has the same task name: add the loop item to
    ``task``.
    """
    if not run_id:
        raise ValueError("resource_name needs the pipeline run id (dsl.PIPELINE_JOB_ID_PLACEHOLDER); got ''")
    if not 1 <= max_length <= MAX_NAME_LENGTH:
        raise ValueError(f"max_length must be between 1 and {MAX_NAME_LENGTH}; got {max_length}")
    readable_prefix = _slug(prefix)
    if not readable_prefix or not readable_prefix[0].isalpha():
        raise ValueError(f"resource name prefix must start with a letter; got {prefix!r}")
    suffix = _digest(prefix, run_id, task)[:_HASH_LENGTH]
    room = max_length - len(suffix) - 1
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room for the prefix; use at least {_HASH_LENGTH + 2}")
    readable = "-".join(part for part in (readable_prefix, _slug(task)) if part)[:room].rstrip("-")
    return f"{readable}-{suffix}"


def label_value(text: str) -> str:
    """``text`` as a valid label value (≤ 63 chars of [A-Za-z0-9._-]), hashed when it has to change."""
    if len(text) <= MAX_NAME_LENGTH and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-_.")
    suffix = _digest(text)[:_HASH_LENGTH]
    head = cleaned[: MAX_NAME_LENGTH - _HASH_LENGTH - 1].rstrip("-_.")
    return f"{head}-{suffix}" if head else suffix


def run_labels(run_id: str, task: str) -> dict[str, str]:
    """Labels that tie a resource to one task of one pipeline run."""
    return {RUN_ID_LABEL: label_value(run_id), TASK_LABEL: label_value(task)}


def is_dns1035_label(name: str) -> bool:
    """Whether ``name`` is a DNS-1035 label: lower-case alphanumerics and '-', starts with a letter, ≤ 63."""
    return len(name) <= MAX_NAME_LENGTH and bool(_RFC1035_LABEL.match(name))


def secret_reference(variable: str) -> tuple[str, str] | None:
    """(Secret name, key) from the environment variable ``variable`` holding ``<secret name>/<key>``, the way
    a step names a Secret key for the pods it starts; None when the variable is unset."""
    value = os.environ.get(variable, "")
    if not value:
        return None
    secret, _, key = value.partition("/")
    if not secret or not key or "/" in key:
        raise ValueError(f"{variable}={value!r}: expected <secret name>/<key>, e.g. dmlops-model-signing/private.pem")
    return secret, key
