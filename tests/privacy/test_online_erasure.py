"""Entities deleted from a Feast online store, SQLite and Redis: the subject's features are gone, the others' stay."""

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.features import apply, local_store_spec, materialize
from dmlops.features.config import open_store
from dmlops.features.erase import delete_entities


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_delete_entities(online, request, tmp_path):
    passengers = tmp_path / "passengers.parquet"
    pq.write_table(pa.table({
        "passenger_email": ["p1", "p2", "p3"], "flights": [3, 5, 7],
        "event_timestamp": pa.array([datetime(2013, 1, 1, tzinfo=timezone.utc)] * 3, pa.timestamp("us", "UTC")),
    }), passengers)
    redis = request.getfixturevalue("redis_server") if online == "redis" else ""
    store = local_store_spec(tmp_path / "store", project=f"erase_{online}", redis_connection=redis)
    apply(store, "privacy_feast_repo:definitions", {"passengers": str(passengers)})
    materialize(store, start="2012-12-31", end="2013-01-02", incremental=False)

    def flights() -> list:
        rows = [{"passenger_email": key} for key in ("p1", "p2", "p3")]
        return open_store(store).get_online_features(["passenger_stats:flights"], rows).to_dict()["flights"]

    assert flights() == [3, 5, 7]
    (erased,) = delete_entities(store, "passenger_email", ["p2", "nobody"])
    assert (erased.rows_removed, erased.remaining) == (1, 0) and erased.sha256_before != erased.sha256_after
    assert flights() == [3, None, 7]
    assert delete_entities(store, "tailnum", ["p1"]) == []  # no view is keyed by it
