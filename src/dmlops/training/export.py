"""The exported model directory: model files, ``metadata.json`` with sha256 digests, and its upload.

metadata.json holds what a server or an evaluator needs to use the model without the training code:
the framework and model files, the feature schema and input layout, the fitted preprocessing, the
hyperparameters, the final metrics and the sha256 of every other file in the directory. With a signing key
configured it is signed, and with a verification key configured only signed, untampered models are read
(:mod:`dmlops.privacy.signing`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmlops import __version__
from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.platform.storage import put as publish  # noqa: F401  (dmlops.serving.packaging's import)
from dmlops.privacy import signing

METADATA_FILE = "metadata.json"


def write_metadata(directory: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Add format version, package version and file digests to ``metadata``, write metadata.json and sign
    it when a signing key is configured."""
    files = storage.file_digests(directory, exclude=METADATA_FILE)
    document = {"format_version": 1, "dmlops_version": __version__, **metadata, "files": files}
    (directory / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
    signing.sign(directory, METADATA_FILE)
    return document


def fetch(uri: str) -> Path:
    """A local directory with the exported model at ``uri`` (downloaded when remote), digests, manifest and
    (with a verification key configured) signature checked."""
    try:
        directory = storage.fetch(uri, manifest=METADATA_FILE)
    except storage.StorageError as error:
        raise DataError(f"{error} (the directory the training worker exported)") from None
    signing.verify(directory, METADATA_FILE, uri)
    return directory
