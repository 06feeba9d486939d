"""dmlops.platform.storage against a real S3 server (moto): KFP's minio:// URIs, fetch and put, pod settings."""

import json

import pytest

from dmlops.platform import storage


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
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    fs, path = storage.filesystem("minio://mlpipeline/v2/artifacts/run/task/model")
    assert (fs.endpoint_url, path) == (storage.MINIO_ENDPOINT, "mlpipeline/v2/artifacts/run/task/model")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://objects.example:9000")
    assert storage.filesystem("minio://mlpipeline/x")[0].endpoint_url != storage.MINIO_ENDPOINT


def test_pods_get_s3_uris_and_kfps_minio_credentials_by_reference(monkeypatch):
    for name in storage.OBJECT_STORE_SETTINGS:
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
