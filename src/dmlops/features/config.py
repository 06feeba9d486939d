"""Where a Feast feature store lives: a store spec (a JSON-able ``feature_store.yaml`` as a dict) and the
Feast ``RepoConfig`` built from it.

A spec travels between pipeline steps as a component parameter, so every step opens the same store::

    local_store_spec("local_outputs/feature_store", project="flights")
    cluster_store_spec("flights", registry="gs://ml-features/flights/registry.db",
                       redis_connection="redis.feast:6379,password=${REDIS_PASSWORD}")

Relative paths resolve against the working directory when the store is opened; ``${VAR}`` in any value is
replaced by that environment variable then (credentials come from Kubernetes Secrets, never from the spec).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dmlops.features.errors import FeatureStoreError

OFFLINE_STORES = ("duckdb", "file", "dask")
OBJECT_STORE_SCHEMES = ("gs://", "s3://")
SQL_REGISTRY_SCHEMES = ("postgresql", "mysql", "sqlite")
ENTITY_KEY_SERIALIZATION_VERSION = 3
_UNSET_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _offline_store(offline_store: str) -> dict[str, Any]:
    if offline_store not in OFFLINE_STORES:
        raise FeatureStoreError(f"offline_store={offline_store!r}: use one of {', '.join(OFFLINE_STORES)}")
    return {"type": offline_store}


def local_store_spec(
    directory: str | Path,
    project: str = "dmlops",
    *,
    offline_store: str = "duckdb",
    redis_connection: str = "",
) -> dict[str, Any]:
    """A store on one machine: file registry and SQLite online store under ``directory`` (or Redis at
    ``redis_connection``, e.g. ``localhost:6379``), offline store ``duckdb`` (or ``file``) over local files."""
    root = Path(directory)
    online = (
        {"type": "redis", "connection_string": redis_connection}
        if redis_connection
        else {"type": "sqlite", "path": str(root / "online.db")}
    )
    return {
        "project": project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(root / "registry.db"), "cache_ttl_seconds": 0},
        "offline_store": _offline_store(offline_store),
        "online_store": online,
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }


def cluster_store_spec(
    project: str,
    *,
    registry: str,
    redis_connection: str,
    offline_store: str = "duckdb",
    redis_type: str = "redis",
    registry_cache_ttl_seconds: int = 60,
) -> dict[str, Any]:
    """A store shared by the pods of a cluster: the registry on object storage (``gs://``/``s3://`` URI) or
    in SQL (a SQLAlchemy URL such as ``postgresql+psycopg://feast:${PG_PASSWORD}@pg:5432/feast``), the
    offline store reading Parquet sources on object storage, the online store on Redis."""
    if registry.startswith(OBJECT_STORE_SCHEMES):
        registry_config: dict[str, Any] = {"registry_type": "file", "path": registry}
    elif registry.split(":", 1)[0].split("+", 1)[0] in SQL_REGISTRY_SCHEMES:
        registry_config = {"registry_type": "sql", "path": registry}
    else:
        raise FeatureStoreError(
            f"registry={registry!r}: use a gs:// or s3:// URI (file registry on object storage) or a "
            f"SQLAlchemy URL starting with one of {', '.join(SQL_REGISTRY_SCHEMES)} (SQL registry)"
        )
    registry_config["cache_ttl_seconds"] = registry_cache_ttl_seconds
    if not redis_connection:
        raise FeatureStoreError("redis_connection is empty: give host:port[,password=${REDIS_PASSWORD}]")
    return {
        "project": project,
        "provider": "local",
        "registry": registry_config,
        "offline_store": _offline_store(offline_store),
        "online_store": {"type": "redis", "redis_type": redis_type, "connection_string": redis_connection},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }


def is_shared(spec: dict[str, Any]) -> bool:
    """Whether pods that share no files can all open the store: a registry on object storage or in SQL,
    the online store on Redis."""
    registry = spec.get("registry") or {}
    registry_path = registry.get("path", "") if isinstance(registry, dict) else str(registry)
    online = spec.get("online_store") or {}
    return ("://" in registry_path or registry.get("registry_type") == "sql") and online.get("type") == "redis"


def store_for_backend(
    backend: str, store: dict[str, Any], *, registry: str = "", redis_connection: str = ""
) -> dict[str, Any]:
    """The store spec a run on ``backend`` (``local``, ``kubernetes`` or ``auto``) uses.

    Locally ``store`` as given (e.g. a local store under the working directory). On Kubernetes each
    step runs in its own pod and the pods share no files: ``store`` is used when it is already shared
    (:func:`is_shared`), else the cluster store of its project (:func:`cluster_store_spec`) with the
    registry at ``registry`` and the online store at ``redis_connection``.
    """
    from dmlops.platform.backend import resolve_backend

    if resolve_backend(backend) == "local" or is_shared(store):
        return store
    if not registry or not redis_connection:
        given = {"registry": registry, "redis_connection": redis_connection}
        missing = [name for name, value in given.items() if not value]
        raise FeatureStoreError(
            f"backend=kubernetes runs each step in its own pod, so the Feast store must be shared, but the store "
            f"given keeps its registry at {(store.get('registry') or {}).get('path')!r} and its online store in "
            f"{(store.get('online_store') or {}).get('type')!r}; give {' and '.join(missing)} (the registry as a "
            "gs://, s3:// or SQL URL, the online store as Redis host:port[,password=${REDIS_PASSWORD}]) or a "
            "cluster store spec (cluster_store_spec)"
        )
    return cluster_store_spec(store.get("project", "dmlops"), registry=registry, redis_connection=redis_connection,
                              offline_store=(store.get("offline_store") or {}).get("type", "duckdb"))


def _resolve(value: Any, where: str) -> Any:
    """Expand ``${VAR}`` in strings; whole floats back to ints (a KFP dict parameter turns 3 into 3.0)."""
    if isinstance(value, dict):
        return {key: _resolve(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        expanded = os.path.expandvars(value)
        unset = _UNSET_VARIABLE.findall(expanded)
        if unset:
            raise FeatureStoreError(
                f"store spec {where} uses environment variable(s) {', '.join(unset)} that are not set; "
                "set them (e.g. from a Kubernetes Secret) in the step's environment"
            )
        return expanded
    return value


def repo_config(spec: dict[str, Any]) -> Any:
    """The Feast ``RepoConfig`` of a store spec, validated by Feast; errors name the bad key."""
    from feast import RepoConfig
    from pydantic import ValidationError

    if not isinstance(spec, dict) or "project" not in spec:
        raise FeatureStoreError(
            "a store spec must be a dict with at least 'project' (see local_store_spec/cluster_store_spec)"
        )
    expanded = _resolve(spec, "spec")
    try:
        config = RepoConfig(**expanded)
        # Feast builds these lazily; build them now so a bad spec fails here, with its key named.
        _ = config.registry, config.offline_store, config.online_store
    except (ValidationError, ValueError) as error:
        raise FeatureStoreError(f"invalid store spec for project {spec.get('project')!r}: {error}") from None
    config.repo_path = Path.cwd()
    return config


def open_store(spec: dict[str, Any]) -> Any:
    """A Feast ``FeatureStore`` for a store spec; the folders of a local registry and SQLite online store
    are created when missing (a first run on a fresh machine)."""
    from feast import FeatureStore

    config = repo_config(spec)
    local_files = [getattr(config.registry, "path", "")]
    if getattr(config.online_store, "type", "") == "sqlite":
        local_files.append(config.online_store.path)
    for path in local_files:
        if path and "://" not in path:
            (Path.cwd() / path).parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(Path.cwd()), config=config)
