"""dmlops: reusable Kubeflow Pipelines components for MLOps on distributed AI."""

import os
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dmlops")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

# Every component body starts by importing dmlops: in a KFP task process, this is where it starts to log as
# its component (JSON lines with ECS fields, dmlops.platform.logs).
if os.environ.get("_KFP_RUNTIME") == "true":
    from dmlops.platform.logs import configure_component

    configure_component()
