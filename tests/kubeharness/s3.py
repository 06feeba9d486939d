"""An S3 server that pods reach: moto's server standing in for the MinIO that Kubeflow Pipelines installs.

KFP keeps its artifacts at ``minio://mlpipeline/...`` on the MinIO of its own install (kubeflow/pipelines
``manifests/kustomize/third-party/minio``: Service ``minio-service`` in namespace ``kubeflow``, port 9000,
bucket ``mlpipeline``) and gives pipeline pods its credentials through the Secret
``mlpipeline-minio-artifact`` (keys ``accesskey``/``secretkey``,
``manifests/kustomize/base/installs/generic/mysql-secret.yaml`` and the profile controller's
``sync.py``, which copies it into every profile namespace). Here moto's server listens on every address of
this machine, so pods reach it through the node IP, and the test process through 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from dmlops.platform.local import free_ports
from kubeharness.listening import wait_listening

BUCKET = "mlpipeline"
# KFP's default MinIO credentials (manifests/kustomize/third-party/minio/base/mlpipeline-minio-artifact-secret.yaml).
ACCESS_KEY = "minio"
SECRET_KEY = "minio123"
REGION = "us-east-1"


class S3Unavailable(RuntimeError):
    """moto's server is not installed; the message says how to get it."""


@dataclass
class S3Server:
    """A running moto server: ``endpoint`` for this process, ``pod_endpoint`` for pods on the node."""

    endpoint: str
    pod_endpoint: str
    port: int
    process: subprocess.Popen = field(repr=False)

    def client(self):
        """A boto3 S3 client on this server with KFP's MinIO credentials."""
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def keys(self, bucket: str = BUCKET, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in ``bucket``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3(pod_host: str, log: Path, buckets: tuple[str, ...] = (BUCKET,)) -> S3Server:
    """Start moto's server on 0.0.0.0 (a free port) and create ``buckets``; pods reach it at ``pod_host``."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        found = shutil.which("moto_server")
        if found is None:
            raise S3Unavailable("moto_server is not installed (pip install 'moto[server]'; the dev extra has it)")
        binary = Path(found)
    (port,) = free_ports(1)
    # Pods call it by a Service host name (minio-service.kubeflow): path-style addressing as MinIO serves it,
    # not the first label of the host taken for a bucket name.
    environment = {**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"}
    process = subprocess.Popen([str(binary), "-H", "0.0.0.0", "-p", str(port)], stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True, env=environment)
    if not wait_listening(process, "127.0.0.1", port, timeout_s=30):
        raise RuntimeError(f"moto_server did not start on port {port}: {log.read_text()[-2000:]}")
    server = S3Server(f"http://127.0.0.1:{port}", f"http://{pod_host}:{port}", port, process)
    for bucket in buckets:
        server.client().create_bucket(Bucket=bucket)
    return server
