"""The exported model directory: model files, ``metadata.json`` with sha256 digests, and its upload.

metadata.json holds what a server or an evaluator needs to use the model without the training code:
the framework and model files, the feature schema and input layout, the fitted preprocessing, the
hyperparameters, the final metrics and the sha256 of every other file in the directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmlops import __version__
from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.platform.storage import put as publish  # noqa: F401  (dmlops.serving.packaging's import)

METADATA_FILE = "metadata.json"


def write_metadata(directory: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Add format version, package version and file digests to ``metadata``, write metadata.json."""
    files = storage.file_digests(directory, exclude=METADATA_FILE)
    document = {"format_version": 1, "dmlops_version": __version__, **metadata, "files": files}
    (directory / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
    return document


def fetch(uri: str) -> Path:
    """A local directory with the exported model at ``uri`` (downloaded when remote), digests checked."""
    try:
        return storage.fetch(uri, manifest=METADATA_FILE)
    except storage.StorageError as error:
        raise DataError(f"{error} (the directory the training worker exported)") from None
