"""The exported model directory: model files, ``metadata.json`` with sha256 digests, and its upload.

metadata.json holds what a server or an evaluator needs to use the model without the training code:
the framework and model files, the feature schema and input layout, the fitted preprocessing, the
hyperparameters, the final metrics and the sha256 of every other file in the directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dmlops import __version__
from dmlops.data.errors import DataError

METADATA_FILE = "metadata.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` except metadata.json, by relative POSIX path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.relative_to(directory).as_posix() != METADATA_FILE
    }


def write_metadata(directory: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Add format version, package version and file digests to ``metadata``, write metadata.json."""
    document = {"format_version": 1, "dmlops_version": __version__, **metadata, "files": file_digests(directory)}
    (directory / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
    return document


def is_local(uri: str) -> bool:
    return isinstance(fsspec.core.url_to_fs(uri)[0], LocalFileSystem)


def publish(local_directory: Path, uri: str) -> None:
    """Copy an exported directory to its final URI (a local path or any fsspec URL), replacing it."""
    filesystem, path = fsspec.core.url_to_fs(uri)
    if filesystem.exists(path):
        filesystem.rm(path, recursive=True)
    if is_local(uri):
        shutil.copytree(local_directory, path)
    else:
        filesystem.put(str(local_directory), path, recursive=True)


def fetch(uri: str) -> Path:
    """A local directory with the exported model at ``uri`` (downloaded when remote), digests checked."""
    filesystem, path = fsspec.core.url_to_fs(uri)
    if not filesystem.exists(f"{path}/{METADATA_FILE}"):
        raise DataError(f"{uri} has no {METADATA_FILE}; pass the directory the training worker exported")
    if is_local(uri):
        directory = Path(path)
    else:
        directory = Path(tempfile.mkdtemp(prefix="dmlops-model-"))
        filesystem.get(f"{path}/", str(directory), recursive=True)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    actual = file_digests(directory)
    for name, expected in metadata["files"].items():
        if actual.get(name) != expected:
            raise DataError(
                f"{uri}: file {name} is missing or its sha256 differs from {METADATA_FILE}; "
                "the export is incomplete or was changed: export the model again"
            )
    return directory
