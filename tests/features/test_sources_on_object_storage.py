"""Feature sources on KFP's artifact store (moto's S3 server as the store): the checks read minio:// URIs
where dmlops.platform.storage finds KFP's store."""


import boto3
import pyarrow.parquet as pq
import pytest

from dmlops.features import FeatureDataError, apply, check_sources, load_definitions, materialize, online_features
from dmlops.features.repo import source_location
from dmlops.platform import storage

DEFINITIONS = "dmlops.pipelines.flights_features:definitions"


@pytest.fixture
def kfp_store(s3_server, monkeypatch):
    """Bucket "mlpipeline" on the S3 server, named as KFP's store by the endpoint override alone."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", storage.KFP_LAUNCHER_PROVIDERS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(storage.KFP_OBJECT_STORE_ENDPOINT_ENV, s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server)
    if "mlpipeline" not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="mlpipeline")
    return client


def upload(client, sources: dict[str, str], prefix: str) -> dict[str, str]:
    uris = {}
    for name, path in sources.items():
        key = f"v2/artifacts/{prefix}/{name}"
        client.upload_file(path, "mlpipeline", key)
        uris[name] = f"minio://mlpipeline/{key}"
    return uris


def test_feature_sources_on_kfps_store_are_checked_where_kfp_keeps_them(kfp_store, sources, tmp_path):
    uris = upload(kfp_store, sources, "good")
    assert source_location(uris["weather"]) == "s3://mlpipeline/v2/artifacts/good/weather"
    check_sources(load_definitions(DEFINITIONS, uris))

    weather = pq.read_table(sources["weather"])
    pq.write_table(weather.drop(["temp"]), tmp_path / "weather")
    uris = upload(kfp_store, {**sources, "weather": str(tmp_path / "weather")}, "bad")
    with pytest.raises(FeatureDataError, match=r"minio://mlpipeline/v2/artifacts/bad/weather lacks columns \['temp'\]"):
        check_sources(load_definitions(DEFINITIONS, uris))


def test_materialize_reads_sources_where_kfp_keeps_them(kfp_store, sources, store):
    """No DuckDB extension and no other endpoint: the rows come through dmlops.platform.storage."""
    uris = upload(kfp_store, sources, "materialize")
    apply(store, DEFINITIONS, uris)
    report = materialize(store, start="2013-01-01", end="2013-01-08", views=["weather"])
    assert report.views[0]["status"] == "materialized"
    weather = pq.read_table(sources["weather"]).to_pandas()
    rows = weather[(weather["origin"] == "JFK") & (weather["time_hour"] <= "2013-01-08T00:00:00+00:00")]
    expected = rows.sort_values("time_hour")["temp"].iloc[-1]
    assert online_features(store, ["weather:temp"], [{"origin": "JFK"}])["weather__temp"] == [expected]
