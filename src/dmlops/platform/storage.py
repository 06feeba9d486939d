"""Reading and writing URIs: local paths, ``gs://``, ``s3://``, any fsspec URL, and KFP's ``minio://``.

KFP's default artifact store names artifacts ``minio://<bucket>/<key>`` (the ``mlpipeline`` bucket of the
object store that KFP installs). No client library speaks ``minio://``: it is S3, so :func:`location` reads
it as ``s3://<bucket>/<key>``, at the endpoint :func:`kfp_store` finds the way KFP's launcher does. Pods
started by a step (training workers, Katib trials) get URIs they can read (:func:`pod_uri`) and the
environment that reaches the store (:func:`pod_env`): this pod's endpoint settings and, for ``minio://``,
the credentials of KFP's artifact Secret by reference.

- :func:`filesystem`: the fsspec filesystem and path of a URI.
- :func:`fetch`: a local directory holding what a URI holds (downloaded when remote), optionally checked
  against a manifest of sha256 digests.
- :func:`put`: copy a local directory to a URI, replacing what was there.
- :func:`file_digests`: the sha256 of every file of a local directory (what a manifest lists).
- :func:`kfp_store`: the endpoint and credentials Secret of KFP's store for a ``minio://`` URI.
- :func:`pod_uri` / :func:`pod_env`: a URI and the environment for the pods a step starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import yaml
from fsspec.implementations.local import LocalFileSystem

MINIO_SCHEME = "minio://"
# KFP's artifact store, as its launcher reaches it (kubeflow/pipelines backend/src/v2/config/env.go,
# getDefaultMinioSessionInfo): the Secret KFP keeps in every profile namespace (keys accesskey/secretkey)
# and the in-cluster endpoint. KFP up to 2.15 uses minio-service.kubeflow:9000 (objectstore/config.go
# DefaultMinioEndpointInMultiUserMode; 2.15's SeaweedFS install keeps a minio-service Service on port 9000),
# KFP 2.16 and later seaweedfs.kubeflow:9000 (DefaultEndpointInMultiUserMode). The default follows the
# KFP this project targets (2.15); on 2.16+ set KFP_OBJECT_STORE_ENDPOINT_ENV or pass the launcher's
# providers (KFP_LAUNCHER_PROVIDERS_ENV).
MINIO_SECRET = "mlpipeline-minio-artifact"
MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"
SEAWEEDFS_ENDPOINT = "http://seaweedfs.kubeflow:9000"
# The environment variable each key of MINIO_SECRET becomes in a pod (the names boto3 and s3fs read).
MINIO_SECRET_ENV = {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
# Object-store settings (not credentials) a step's pod passes on to the pods it starts.
OBJECT_STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
# Our override of KFP's store endpoint for minio:// URIs (a URL such as http://seaweedfs.kubeflow:9000).
KFP_OBJECT_STORE_ENDPOINT_ENV = "DMLOPS_KFP_OBJECT_STORE_ENDPOINT"
# The ``providers`` value of the ``kfp-launcher`` ConfigMap of the run's namespace, when the step is given
# it (kfp-kubernetes: ``use_config_map_as_env(task, "kfp-launcher", {"providers": ...})``).
KFP_LAUNCHER_PROVIDERS_ENV = "KFP_LAUNCHER_PROVIDERS"


class StorageError(ValueError):
    """A URI that cannot be read or written as asked; the message says what to pass instead."""


def location(uri: str) -> str:
    """``uri`` as fsspec reads it: KFP's ``minio://bucket/key`` is ``s3://bucket/key``; others unchanged."""
    return "s3://" + uri[len(MINIO_SCHEME):] if uri.startswith(MINIO_SCHEME) else uri


def is_minio(uri: str) -> bool:
    return uri.startswith(MINIO_SCHEME)


@dataclass(frozen=True)
class KfpStore:
    """Where KFP keeps a ``minio://`` URI: the S3 endpoint URL, and the Secret with its credentials
    (``secret`` empty when the launcher takes them from its environment)."""

    endpoint: str
    secret: str = MINIO_SECRET
    access_key_key: str = MINIO_SECRET_ENV["AWS_ACCESS_KEY_ID"]
    secret_key_key: str = MINIO_SECRET_ENV["AWS_SECRET_ACCESS_KEY"]


def _endpoint_url(endpoint: str, disable_ssl: bool) -> str:
    if "://" in endpoint:
        return endpoint
    return ("http://" if disable_ssl else "https://") + endpoint


def _launcher_store(providers: str, uri: str) -> KfpStore | None:
    """The store the kfp-launcher ConfigMap's ``providers`` gives ``uri``, as KFP's launcher reads it
    (kubeflow/pipelines backend/src/v2/config/minio.go and s3.go): ``providers.minio.default``, replaced
    field by field by the first of its ``Overrides`` whose ``bucketName`` is the URI's bucket and whose
    ``keyPrefix`` starts the key; SSL unless ``disableSSL``. None when ``minio`` is not configured."""
    try:
        minio = (yaml.safe_load(providers) or {}).get("minio") or {}
    except (yaml.YAMLError, AttributeError) as error:
        raise StorageError(
            f"{KFP_LAUNCHER_PROVIDERS_ENV} is not the kfp-launcher ConfigMap's providers YAML: {error}"
        ) from None
    default, overrides = minio.get("default"), minio.get("Overrides") or []
    if not default and not overrides:
        return None
    bucket, _, key = uri[len(MINIO_SCHEME):].partition("/")
    prefix = key.strip("/") + "/" if key.strip("/") else ""  # KFP's bucket prefix ends with "/"
    settings = dict(default or {})
    for override in overrides:
        if override.get("bucketName") == bucket and prefix.startswith(override.get("keyPrefix") or ""):
            settings.update({name: value for name, value in override.items() if value is not None})
            break
    if not settings.get("endpoint"):
        raise StorageError(f"{KFP_LAUNCHER_PROVIDERS_ENV}: providers.minio gives {uri} no endpoint")
    credentials = settings.get("credentials") or {}
    secret = {} if credentials.get("fromEnv") else credentials.get("secretRef") or {}
    return KfpStore(
        endpoint=_endpoint_url(settings["endpoint"], bool(settings.get("disableSSL"))),
        secret=secret.get("secretName", ""),
        access_key_key=secret.get("accessKeyKey", ""),
        secret_key_key=secret.get("secretKeyKey", ""),
    )


def kfp_store(uri: str) -> KfpStore:
    """KFP's store for the ``minio://`` ``uri``, first found of: the endpoint in
    :data:`KFP_OBJECT_STORE_ENDPOINT_ENV`; the kfp-launcher ``providers`` in
    :data:`KFP_LAUNCHER_PROVIDERS_ENV`; a ``minio-service`` Service of this namespace
    (``MINIO_SERVICE_SERVICE_HOST``/``_PORT``, as KFP's launcher up to 2.14 looks for it,
    objectstore/config.go MinioDefaultEndpoint); else :data:`MINIO_ENDPOINT`."""
    override = os.environ.get(KFP_OBJECT_STORE_ENDPOINT_ENV)
    if override:
        return KfpStore(endpoint=_endpoint_url(override, disable_ssl=True))
    providers = os.environ.get(KFP_LAUNCHER_PROVIDERS_ENV)
    store = _launcher_store(providers, uri) if providers else None
    if store:
        return store
    host, port = os.environ.get("MINIO_SERVICE_SERVICE_HOST"), os.environ.get("MINIO_SERVICE_SERVICE_PORT")
    if host and port:
        return KfpStore(endpoint=f"http://{host}:{port}")
    return KfpStore(endpoint=MINIO_ENDPOINT)


def _explicit_s3_endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem holding ``uri`` and the path inside it. A ``minio://`` URI is read from
    ``AWS_ENDPOINT_URL`` (``_S3``) when set, else from :func:`kfp_store`. ``gs://`` goes to the emulator
    in ``STORAGE_EMULATOR_HOST`` without credentials when that is set. Remote filesystems are made anew
    for each call, so they follow the endpoint settings of the moment."""
    options: dict[str, Any] = {}
    protocol = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if is_minio(uri) and not _explicit_s3_endpoint():
        options["endpoint_url"] = kfp_store(uri).endpoint
    if protocol in ("gs", "gcs"):
        # gcsfs's experimental bucket features stall every call against the emulator and plain buckets.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            options["token"] = "anon"
    if protocol not in ("file", "local"):
        options["skip_instance_cache"] = True
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
    (:data:`OBJECT_STORE_SETTINGS`) and, when one is a ``minio://`` URI, KFP's store endpoint (unless
    set; :func:`kfp_store`) and the credentials of its Secret as ``{"secretKeyRef": ...}`` mappings (a
    pod's ``valueFrom``: the values never leave the Secret)."""
    env: dict[str, Any] = {name: os.environ[name] for name in OBJECT_STORE_SETTINGS if os.environ.get(name)}
    minio = next((uri for uri in uris if is_minio(uri)), None)
    if minio:
        store = kfp_store(minio)
        env.setdefault("AWS_ENDPOINT_URL", store.endpoint)
        if store.secret:
            for name, key in (("AWS_ACCESS_KEY_ID", store.access_key_key),
                              ("AWS_SECRET_ACCESS_KEY", store.secret_key_key)):
                env[name] = {"secretKeyRef": {"name": store.secret, "key": key}}
    return env
