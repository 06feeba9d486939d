"""Platform mechanics: where platform steps run and how their custom resources are launched.

The launcher itself (:mod:`dmlops.platform.kubernetes`) imports the Kubernetes client, so it is not
imported here; the names, errors, completion rules and backend choice are light.
"""

from dmlops.platform.backend import in_cluster, resolve_backend
from dmlops.platform.errors import (
    InvalidResource,
    JobFailed,
    LaunchCancelled,
    LaunchError,
    LaunchTimeout,
    ResourceRef,
)
from dmlops.platform.naming import RUN_ID_LABEL, TASK_LABEL, label_value, resource_name, run_labels
from dmlops.platform.rules import RULES, CompletionRule, rule_for

__all__ = [
    "RULES",
    "RUN_ID_LABEL",
    "TASK_LABEL",
    "CompletionRule",
    "InvalidResource",
    "JobFailed",
    "LaunchCancelled",
    "LaunchError",
    "LaunchTimeout",
    "ResourceRef",
    "in_cluster",
    "label_value",
    "resolve_backend",
    "resource_name",
    "rule_for",
    "run_labels",
]
