"""Container images the components run in.

The tag is the package version. ``DMLOPS_REGISTRY`` (set at compile time, or ``dmlops compile
--registry``) overrides the registry the images are pulled from.
"""

import os

from dmlops import __version__

DEFAULT_REGISTRY = "ghcr.io/dmlops"
IMAGE_FAMILIES = ("base", "torch-horovod", "tf-horovod", "serve", "spark")


def image(family: str) -> str:
    """The image reference for an image family, e.g. ``ghcr.io/dmlops/base:0.1.0``."""
    if family not in IMAGE_FAMILIES:
        raise ValueError(f"unknown image family {family!r}; known: {', '.join(IMAGE_FAMILIES)}")
    registry = os.environ.get("DMLOPS_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    return f"{registry}/{family}:{__version__}"


BASE_IMAGE = image("base")
TORCH_IMAGE = image("torch-horovod")
TF_IMAGE = image("tf-horovod")
SERVE_IMAGE = image("serve")
SPARK_IMAGE = image("spark")
