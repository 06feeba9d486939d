"""Delete entities' rows from a Feast online store (SQLite or Redis), for the right to erasure.

Feast has no call that deletes one entity: its online stores only upsert, and re-materializing never
removes a key. This module deletes the rows the stores wrote, addressed as they address them: SQLite keeps
one row per (serialized entity key, feature) in the table ``<project>_<view>``
(feast/infra/online_stores/sqlite.py, ``online_write_batch``); Redis keeps one hash per entity key across
views, named by ``_redis_key`` (feast/infra/online_stores/redis.py and helpers.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dmlops.features.config import open_store
from dmlops.features.errors import FeatureStoreError


@dataclass
class OnlineErasure:
    """Rows deleted from one online store table (SQLite) or hashes (Redis), and a digest of the entities'
    online feature values before and after."""

    store: str
    rows_removed: int
    remaining: int
    sha256_before: str
    sha256_after: str


def _entity_key(join_key: str, value: str):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])


def _online_values(store: Any, views: list[Any], join_key: str, values: list[str]) -> tuple[str, int]:
    """A digest of the online feature values of the entities, and how many of them are not null."""
    features = [f"{view.name}:{field.name}" for view in views for field in view.features]
    answer = store.get_online_features(features=features, entity_rows=[{join_key: value} for value in values]).to_dict()
    found = sum(value is not None for name, column in answer.items() if name != join_key for value in column)
    return hashlib.sha256(json.dumps(answer, sort_keys=True, default=str).encode()).hexdigest(), found


def delete_entities(store_spec: dict[str, Any], join_key: str, values: list[str]) -> list[OnlineErasure]:
    """Delete the online rows of every entity whose string join key ``join_key`` is one of ``values`` from
    the feature views keyed by it alone; one record per view (SQLite) or for the store (Redis)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.sqlite import _table_id

    store = open_store(store_spec)
    views = [view for view in store.list_feature_views() if view.join_keys == [join_key]]
    if not views:
        return []
    config, online = store.config, store._get_provider().online_store
    version = config.entity_key_serialization_version
    keys = [_entity_key(join_key, value) for value in values]
    kind = config.online_store.type
    before, _ = _online_values(store, views, join_key, values)
    if kind == "sqlite":
        connection = online._get_conn(config)
        versioning = config.registry.enable_online_feature_view_versioning
        removed = {}
        with connection:
            for view in views:
                table = _table_id(config.project, view, versioning).replace('"', '""')
                removed[view.name] = sum(
                    connection.execute(f'DELETE FROM "{table}" WHERE entity_key = ?',
                                       (serialize_entity_key(key, entity_key_serialization_version=version),)).rowcount
                    for key in keys)
    elif kind == "redis":
        client = online._get_client(config.online_store)
        removed = {"redis": sum(client.delete(_redis_key(config.project, key, version)) for key in keys)}
    else:
        raise FeatureStoreError(f"erasing entities from a {kind!r} online store is not supported; use sqlite or redis")
    after, remaining = _online_values(store, views, join_key, values)
    return [OnlineErasure(f"feast online {kind}: {config.project}/{name}", count, remaining, before, after)
            for name, count in removed.items()]
