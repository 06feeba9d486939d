"""Reading and writing URIs: local paths, ``gs://``, ``s3://``, any fsspec URL, and KFP's ``minio://``.

KFP's default artifact store names artifacts ``minio://<bucket>/<key>`` (the ``mlpipeline`` bucket on
the MinIO that KFP installs). No client library speaks ``minio://``: it is S3, so :func:`location` reads
it as ``s3://<bucket>/<key>``, at the endpoint in ``AWS_ENDPOINT_URL`` (else KFP's in-cluster MinIO,
:data:`MINIO_ENDPOINT`). Pods started by a step (training workers, Katib trials) get URIs they can read
(:func:`pod_uri`) and the environment that reaches the store (:func:`pod_env`): this pod's endpoint
settings and, for MinIO, the credentials of KFP's Secret :data:`MINIO_SECRET` by reference.

- :func:`filesystem`: the fsspec filesystem and path of a URI.
- :func:`fetch`: a local directory holding what a URI holds (downloaded when remote), optionally checked
  against a manifest of sha256 digests.
- :func:`put`: copy a local directory to a URI, replacing what was there.
- :func:`file_digests`: the sha256 of every file of a local directory (what a manifest lists).
- :func:`pod_uri` / :func:`pod_env`: a URI and the environment for the pods a step starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

MINIO_SCHEME = "minio://"
# KFP's own MinIO: the Secret KFP keeps in every profile namespace (keys accesskey/secretkey), and its
# in-cluster endpoint (kubeflow/pipelines manifests: minio-service in namespace kubeflow, port 9000).
MINIO_SECRET = "mlpipeline-minio-artifact"
MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"
# The environment variable each key of MINIO_SECRET becomes in a pod (the names boto3 and s3fs read).
MINIO_SECRET_ENV = {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
# Object-store settings (not credentials) a step's pod passes on to the pods it starts.
OBJECT_STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


class StorageError(ValueError):
    """A URI that cannot be read or written as asked; the message says what to pass instead."""


def location(uri: str) -> str:
    """``uri`` as fsspec reads it: KFP's ``minio://bucket/key`` is ``s3://bucket/key``; others unchanged."""
    return "s3://" + uri[len(MINIO_SCHEME):] if uri.startswith(MINIO_SCHEME) else uri


def is_minio(uri: str) -> bool:
    return uri.startswith(MINIO_SCHEME)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem holding ``uri`` and the path inside it. A ``minio://`` URI is read from
    ``AWS_ENDPOINT_URL`` (``_S3``) when set, else from KFP's in-cluster MinIO."""
    options: dict[str, Any] = {}
    if is_minio(uri) and not (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")):
        options["endpoint_url"] = MINIO_ENDPOINT
    return fsspec.core.url_to_fs(location(uri), **options)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(directory: Path, exclude: str = "") -> dict[str, str]:
    """sha256 of every file under ``directory`` (but ``exclude``), by relative POSIX path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.relative_to(directory).as_posix() != exclude
    }


def fetch(uri: str, *, manifest: str = "") -> Path:
    """A local directory with what the directory at ``uri`` holds: the directory itself when local, else
    a download into a new temporary directory. With ``manifest`` (a JSON file in the directory whose
    ``files`` maps relative paths to sha256), the manifest must exist and every listed file match it."""
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    if manifest and not fs.exists(f"{path}/{manifest}"):
        raise StorageError(f"{uri} has no {manifest}; pass the directory that was written with it")
    if not manifest and not fs.isdir(path):
        raise StorageError(f"{uri} is not a directory; pass the URI of a directory")
    if isinstance(fs, LocalFileSystem):
        directory = Path(path)
    else:
        directory = Path(tempfile.mkdtemp(prefix="dmlops-fetch-"))
        fs.get(f"{path}/", f"{directory}/", recursive=True)
    if manifest:
        expected = json.loads((directory / manifest).read_text()).get("files") or {}
        actual = file_digests(directory, exclude=manifest)
        for name, digest in expected.items():
            if actual.get(name) != digest:
                raise StorageError(
                    f"{uri}: file {name} is missing or its sha256 differs from {manifest}; "
                    "the directory is incomplete or was changed: write it again"
                )
    return directory


def put(local_directory: str | Path, uri: str) -> None:
    """Copy ``local_directory`` to ``uri`` (a local path or any URI above), replacing what was there."""
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    if fs.exists(path):
        fs.rm(path, recursive=True)
    if isinstance(fs, LocalFileSystem):
        shutil.copytree(local_directory, path)
    else:
        fs.put(f"{str(local_directory).rstrip('/')}/", f"{path}/", recursive=True)


def pod_uri(uri: str, what: str) -> str:
    """``uri`` as another pod reads it (``minio://`` becomes ``s3://``); ``""`` stays ``""``. A local
    path is refused: it exists only in this pod. ``what`` names the value in the error."""
    if (uri and "://" not in uri) or uri.startswith("file://"):
        raise StorageError(
            f"{what}={uri}: the pods this step starts cannot read this pod's local paths; use an "
            "object-store URI (gs://, s3://, minio://), e.g. the artifact's .uri instead of its .path"
        )
    return location(uri)


def pod_env(uris: Iterable[str]) -> dict[str, Any]:
    """Environment for pods that read or write ``uris``: this pod's object-store settings
    (:data:`OBJECT_STORE_SETTINGS`) and, when one is a ``minio://`` URI, KFP's MinIO endpoint (unless
    set) and the credentials of :data:`MINIO_SECRET` as ``{"secretKeyRef": ...}`` mappings (a pod's
    ``valueFrom``: the values never leave the Secret)."""
    env: dict[str, Any] = {name: os.environ[name] for name in OBJECT_STORE_SETTINGS if os.environ.get(name)}
    if any(is_minio(uri) for uri in uris):
        env.setdefault("AWS_ENDPOINT_URL", MINIO_ENDPOINT)
        for name, key in MINIO_SECRET_ENV.items():
            env[name] = {"secretKeyRef": {"name": MINIO_SECRET, "key": key}}
    return env
