"""A one-view Feast repo for the erasure test: flights per passenger, keyed by the passenger's pseudonym."""

from datetime import timedelta


def definitions(passengers: str) -> list:
    from feast import Entity, FeatureView, Field, ValueType
    from feast.types import Int64

    from dmlops.features.repo import parquet_source

    passenger = Entity(name="passenger", join_keys=["passenger_email"], value_type=ValueType.STRING)
    return [passenger, FeatureView(
        name="passenger_stats", entities=[passenger], ttl=timedelta(days=3650),
        schema=[Field(name="flights", dtype=Int64)], source=parquet_source("passenger_stats", passengers, "event_timestamp"),
    )]
