"""dmlops: reusable Kubeflow Pipelines components for MLOps on distributed AI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dmlops")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
