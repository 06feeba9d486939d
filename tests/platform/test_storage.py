"""dmlops.platform.storage against real servers (moto's S3 server, the GCS emulator): KFP's minio:// URIs
and the endpoint of KFP's store, fetch and put, pod settings."""

import json

import pytest

from dmlops.platform import storage

# Every setting that decides where a minio:// URI is read.
ENDPOINT_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", storage.KFP_OBJECT_STORE_ENDPOINT_ENV,
                     storage.KFP_LAUNCHER_PROVIDERS_ENV, "MINIO_SERVICE_SERVICE_HOST", "MINIO_SERVICE_SERVICE_PORT")


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """Bucket "training" on moto's S3 server, which AWS_ENDPOINT_URL names."""
    import boto3

    for name in ENDPOINT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server)
    if "training" not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="training")
    return "s3://training"


def write_directory(root, files: dict[str, bytes], manifest: str = ""):
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    if manifest:
        (root / manifest).write_text(json.dumps({"files": storage.file_digests(root, exclude=manifest)}))
    return root


def test_a_minio_uri_is_the_s3_object_of_the_same_bucket_and_key(s3_bucket, tmp_path):
    source = write_directory(tmp_path / "model", {"model.bin": b"weights", "sub/vocab.txt": b"a\nb\n"})
    storage.put(source, "minio://training/storage/model")  # s3_bucket is bucket "training"
    fs, path = storage.filesystem(f"{s3_bucket}/storage/model")
    assert fs.cat_file(f"{path}/sub/vocab.txt") == b"a\nb\n"
    fetched = storage.fetch("minio://training/storage/model")
    assert storage.file_digests(fetched) == storage.file_digests(source)


def test_put_replaces_what_was_at_the_uri(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/storage/replaced"
    storage.put(write_directory(tmp_path / "one", {"old.bin": b"1", "kept.bin": b"1"}), uri)
    storage.put(write_directory(tmp_path / "two", {"kept.bin": b"2"}), uri)
    assert storage.file_digests(storage.fetch(uri)) == storage.file_digests(tmp_path / "two")
    local = tmp_path / "local-copy"
    storage.put(tmp_path / "one", str(local))
    storage.put(tmp_path / "two", str(local))
    assert sorted(path.name for path in local.iterdir()) == ["kept.bin"]


def test_fetch_checks_every_file_against_the_manifest(s3_bucket, tmp_path):
    source = write_directory(tmp_path / "export", {"model.onnx": b"graph"}, manifest="metadata.json")
    uri = f"{s3_bucket}/storage/export"
    storage.put(source, uri)
    assert (storage.fetch(uri, manifest="metadata.json") / "model.onnx").read_bytes() == b"graph"
    (source / "model.onnx").write_bytes(b"changed")
    storage.put(source, uri)
    with pytest.raises(storage.StorageError, match="file model.onnx is missing or its sha256 differs"):
        storage.fetch(uri, manifest="metadata.json")
    with pytest.raises(storage.StorageError, match="has no manifest.json"):
        storage.fetch(uri, manifest="manifest.json")


def test_a_minio_uri_without_an_endpoint_setting_reads_kfps_minio(monkeypatch):
    for name in ENDPOINT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    fs, path = storage.filesystem("minio://mlpipeline/v2/artifacts/run/task/model")
    assert (fs.endpoint_url, path) == (storage.MINIO_ENDPOINT, "mlpipeline/v2/artifacts/run/task/model")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://objects.example:9000")
    assert storage.filesystem("minio://mlpipeline/x")[0].endpoint_url != storage.MINIO_ENDPOINT


def test_pods_get_s3_uris_and_kfps_minio_credentials_by_reference(monkeypatch):
    for name in (*storage.OBJECT_STORE_SETTINGS, *ENDPOINT_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-copied")
    assert storage.pod_uri("minio://mlpipeline/v2/a?b&c", "train_uri") == "s3://mlpipeline/v2/a?b&c"
    assert storage.pod_uri("gs://bucket/data", "train_uri") == "gs://bucket/data"
    assert storage.pod_uri("", "checkpoint_uri") == ""
    env = storage.pod_env(["s3://other/x", "minio://mlpipeline/v2/a"])
    assert env == {
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": storage.MINIO_ENDPOINT,
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "accesskey"}},
        "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}},
    }
    assert storage.pod_env(["gs://bucket/data"]) == {"AWS_REGION": "eu-west-1"}


@pytest.mark.parametrize("local", ["/tmp/outputs/model", "relative/data.parquet", "file:///tmp/data"])
def test_pods_refuse_this_pods_local_paths(local):
    with pytest.raises(storage.StorageError, match=r"train_uri=.*cannot read this pod's local paths"):
        storage.pod_uri(local, "train_uri")


def test_kfps_store_is_minio_service_on_the_targeted_kfp_unless_kfp_or_the_user_says_otherwise(monkeypatch):
    for name in ENDPOINT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    uri = "minio://mlpipeline/v2/artifacts/run/task/model"
    assert storage.kfp_store(uri) == storage.KfpStore(endpoint="http://minio-service.kubeflow:9000",
                                                      secret="mlpipeline-minio-artifact",
                                                      access_key_key="accesskey", secret_key_key="secretkey")
    # A minio-service Service in this namespace (KFP's launcher up to 2.14 looks for it the same way).
    monkeypatch.setenv("MINIO_SERVICE_SERVICE_HOST", "10.0.0.9")
    monkeypatch.setenv("MINIO_SERVICE_SERVICE_PORT", "9000")
    assert storage.kfp_store(uri).endpoint == "http://10.0.0.9:9000"
    # The kfp-launcher ConfigMap's providers, as KFP 2.16+ installs name SeaweedFS.
    monkeypatch.setenv(storage.KFP_LAUNCHER_PROVIDERS_ENV, """
minio:
  default:
    endpoint: seaweedfs.kubeflow:9000
    disableSSL: true
    credentials:
      fromEnv: false
      secretRef: {secretName: mlpipeline-minio-artifact, accessKeyKey: accesskey, secretKeyKey: secretkey}
""")
    assert storage.kfp_store(uri).endpoint == storage.SEAWEEDFS_ENDPOINT
    assert storage.filesystem(uri)[0].endpoint_url == storage.SEAWEEDFS_ENDPOINT
    # The documented override wins over what KFP says.
    monkeypatch.setenv(storage.KFP_OBJECT_STORE_ENDPOINT_ENV, "http://objects.example:9000")
    assert storage.kfp_store(uri).endpoint == "http://objects.example:9000"


def test_the_launchers_providers_override_by_bucket_and_key_prefix(monkeypatch):
    for name in ENDPOINT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(storage.KFP_LAUNCHER_PROVIDERS_ENV, json.dumps({"minio": {
        "default": {"endpoint": "store.kubeflow:9000", "disableSSL": True, "credentials": {
            "secretRef": {"secretName": "default-creds", "accessKeyKey": "a", "secretKeyKey": "s"}}},
        "Overrides": [
            {"bucketName": "mlpipeline", "keyPrefix": "team-b/", "endpoint": "b.example:443",
             "disableSSL": False, "credentials": {"fromEnv": True}},
            {"bucketName": "mlpipeline", "keyPrefix": "team-c/", "credentials": {
                "secretRef": {"secretName": "c-creds", "accessKeyKey": "id", "secretKeyKey": "key"}}},
        ]}}))
    assert storage.kfp_store("minio://mlpipeline/team-a/x") == storage.KfpStore("http://store.kubeflow:9000",
                                                                                "default-creds", "a", "s")
    assert storage.kfp_store("minio://mlpipeline/team-b/x") == storage.KfpStore("https://b.example:443", "", "", "")
    assert storage.kfp_store("minio://mlpipeline/team-c") == storage.KfpStore("http://store.kubeflow:9000",
                                                                              "c-creds", "id", "key")
    assert storage.kfp_store("minio://other/team-b/x").endpoint == "http://store.kubeflow:9000"
    # Credentials the launcher takes from its environment have no Secret to refer to.
    assert storage.pod_env(["minio://mlpipeline/team-b/x"]) == {"AWS_ENDPOINT_URL": "https://b.example:443"}
    assert storage.pod_env(["minio://mlpipeline/team-c/x"])["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "c-creds", "key": "id"}}
    monkeypatch.setenv(storage.KFP_LAUNCHER_PROVIDERS_ENV, "minio: [unclosed")
    with pytest.raises(storage.StorageError, match="not the kfp-launcher ConfigMap's providers YAML"):
        storage.kfp_store("minio://mlpipeline/x")


def test_a_minio_uri_is_read_where_the_launchers_providers_say(s3_bucket, s3_server, monkeypatch, tmp_path):
    source = write_directory(tmp_path / "model", {"model.bin": b"weights"})
    storage.put(source, f"{s3_bucket}/launcher/model")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host_port = s3_server.removeprefix("http://")
    monkeypatch.setenv(storage.KFP_LAUNCHER_PROVIDERS_ENV, json.dumps(
        {"minio": {"default": {"endpoint": host_port, "disableSSL": True, "credentials": {"fromEnv": True}}}}))
    assert storage.file_digests(storage.fetch("minio://training/launcher/model")) == storage.file_digests(source)
    monkeypatch.setenv(storage.KFP_LAUNCHER_PROVIDERS_ENV, json.dumps(
        {"minio": {"default": {"endpoint": "127.0.0.1:1", "disableSSL": True, "credentials": {"fromEnv": True}}}}))
    with pytest.raises(Exception, match="127.0.0.1:1"):
        storage.fetch("minio://training/launcher/model")


def test_gs_uris_are_read_and_written_on_the_emulator(gcs_server, monkeypatch, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    gcs.Client(project="test", credentials=AnonymousCredentials()).create_bucket("models")
    source = write_directory(tmp_path / "model", {"model.bin": b"weights", "sub/vocab.txt": b"a\n"})
    storage.put(source, "gs://models/run-1/model")
    assert storage.file_digests(storage.fetch("gs://models/run-1/model")) == storage.file_digests(source)
