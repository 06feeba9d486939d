"""A one-view Feast repo for the enrichment tests: ``distance`` per plane (``tailnum``)."""

from __future__ import annotations

from datetime import timedelta


def definitions(planes: str) -> list:
    from feast import Entity, FeatureView, Field, ValueType
    from feast.types import Float64

    from dmlops.features.repo import parquet_source

    plane = Entity(name="plane", join_keys=["tailnum"], value_type=ValueType.STRING)
    return [plane, FeatureView(
        name="plane_route", entities=[plane], ttl=timedelta(days=3650),
        schema=[Field(name="distance", dtype=Float64)], source=parquet_source("plane_route", planes, "event_timestamp"),
    )]
