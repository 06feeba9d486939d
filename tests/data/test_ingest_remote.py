"""ingest against real servers on localhost: the GCS emulator, moto's S3 server and an HTTP server."""

import functools
import gzip
import hashlib
import http.server
import threading
import zipfile

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.core.authorization import enable_iam_authentication

from dmlops.data.errors import IngestError
from dmlops.data.ingest import ingest

CSV = b"id,name\n1,a\n2,b\n3,c\n"


def run(tmp_path, source, **options):
    result = ingest(source, str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"), progress=False, **options)
    return result, pq.read_table(tmp_path / "out.parquet")


@pytest.fixture
def s3(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="raw")
    return client


def test_s3_csv_gzip_and_parquet_folder(s3, tmp_path):
    packed = gzip.compress(CSV)
    s3.put_object(Bucket="raw", Key="events.csv.gz", Body=packed)
    result, table = run(tmp_path, "s3://raw/events.csv.gz")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert result.sources == [{"uri": "s3://raw/events.csv.gz", "bytes": len(packed),
                               "sha256": hashlib.sha256(packed).hexdigest(), "rows_in": 3}]

    for index in range(2):
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table({"id": [index * 10, index * 10 + 1]}), buffer)
        s3.put_object(Bucket="raw", Key=f"parts/part-{index}.parquet", Body=buffer.getvalue().to_pybytes())
    result, table = run(tmp_path, "s3://raw/parts")
    assert table.column("id").to_pylist() == [0, 1, 10, 11]
    assert [item["uri"] for item in result.sources] == ["s3://raw/parts/part-0.parquet",
                                                        "s3://raw/parts/part-1.parquet"]


def test_s3_missing_bucket_and_missing_key(s3, tmp_path):
    with pytest.raises(IngestError, match=r"s3://no-such-bucket/x.csv: not found"):
        run(tmp_path, "s3://no-such-bucket/x.csv")
    with pytest.raises(IngestError, match=r"s3://raw/missing.csv: not found"):
        run(tmp_path, "s3://raw/missing.csv")


def test_s3_permission_denied(s3, tmp_path):
    s3.put_object(Bucket="raw", Key="secret.csv", Body=CSV)
    with enable_iam_authentication():
        with pytest.raises(IngestError, match=r"s3://raw/secret.csv: permission denied .*grant"):
            run(tmp_path, "s3://raw/secret.csv")


def test_a_kfp_minio_uri_is_read_from_kfps_store(s3, s3_server, tmp_path, monkeypatch):
    from dmlops.platform import storage

    s3.put_object(Bucket="raw", Key="v2/artifacts/run/events.csv", Body=CSV)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # KFP's store is found as dmlops.platform.storage finds it
    monkeypatch.setenv(storage.KFP_OBJECT_STORE_ENDPOINT_ENV, s3_server)
    result, table = run(tmp_path, "minio://raw/v2/artifacts/run/events.csv")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert result.sources[0]["uri"] == "minio://raw/v2/artifacts/run/events.csv"
    with pytest.raises(IngestError, match=r"minio://raw/v2/missing.csv: not found"):
        run(tmp_path, "minio://raw/v2/missing.csv")


def test_gcs_emulator_glob(gcs_server, monkeypatch, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = client.create_bucket("lake")
    bucket.blob("day=1/events.csv").upload_from_string(CSV)
    bucket.blob("day=2/events.csv").upload_from_string(b"id,name\n4,d\n")
    result, table = run(tmp_path, "gs://lake/day=*/events.csv")
    assert table.column("id").to_pylist() == [1, 2, 3, 4]
    assert [item["uri"] for item in result.sources] == ["gs://lake/day=1/events.csv", "gs://lake/day=2/events.csv"]
    assert result.sources[0]["sha256"] == hashlib.sha256(CSV).hexdigest()
    with pytest.raises(IngestError, match=r"gs://lake/missing.csv: not found"):
        run(tmp_path, "gs://lake/missing.csv")


@pytest.fixture
def http_folder(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_csv_gzip_and_zip(http_folder, tmp_path):
    folder, url = http_folder
    (folder / "events.csv.gz").write_bytes(gzip.compress(CSV))
    with zipfile.ZipFile(folder / "events.csv.zip", "w") as archive:
        archive.writestr("events.csv", CSV)
    for name in ("events.csv.gz", "events.csv.zip"):
        result, table = run(tmp_path, f"{url}/{name}")
        assert table.column("name").to_pylist() == ["a", "b", "c"]
        assert result.sources[0] == {"uri": f"{url}/{name}", "bytes": (folder / name).stat().st_size,
                                     "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                                     "rows_in": 3}
    with pytest.raises(IngestError, match=r"missing.csv: not found"):
        run(tmp_path, f"{url}/missing.csv")
