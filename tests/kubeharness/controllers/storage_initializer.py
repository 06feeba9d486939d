"""KServe's storage initializer as an init container: what it accepts, the credentials it gets, its pod parts.

| behaviour | upstream (kserve/kserve) |
|---|---|
| init container ``storage-initializer`` with args ``[<source URI>, /mnt/models]``, emptyDir ``kserve-provision-location`` mounted there (read-only in ``kserve-container``) | pkg/webhook/admission/pod/storage_initializer_injector.go |
| ``pvc://<claim>/<path>``: the claim mounted read-only at /mnt/pvc, the source becomes ``/mnt/pvc/<path>`` | storage_initializer_injector.go |
| accepted schemes gs://, s3://, hdfs://, webhdfs://, http(s)://, file:// and local paths; anything else (``minio://``) fails with "Cannot recognize storage type for ..." | python/storage/kserve_storage/kserve_storage.py (download) |
| S3 credentials from the ServiceAccount's Secrets holding ``AWS_SECRET_ACCESS_KEY``: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the Secret; S3_ENDPOINT, AWS_ENDPOINT_URL, S3_USE_HTTPS, S3_VERIFY_SSL, AWS_DEFAULT_REGION from its ``serving.kserve.io/s3-*`` annotations | pkg/credentials/service_account_credentials.go, pkg/credentials/s3/{s3_secret,utils}.go, config/configmap/inferenceservice.yaml |

The container runs in the serving runtime's image (no KServe image is loaded on the test node) with
``DOWNLOAD_SCRIPT``, which dispatches on the scheme as kserve_storage does and downloads with fsspec.
"""

from __future__ import annotations

from kubeharness.controllers.base import Kube, Obj

MODEL_DIR = "/mnt/models"
PVC_DIR = "/mnt/pvc"
VOLUME = "kserve-provision-location"
S3_ANNOTATIONS = {  # annotation -> env, as pkg/credentials/s3/utils.go BuildS3EnvVars
    "serving.kserve.io/s3-verifyssl": "S3_VERIFY_SSL",
    "serving.kserve.io/s3-region": "AWS_DEFAULT_REGION",
    "serving.kserve.io/s3-useanoncredential": "awsAnonymousCredential",
}

DOWNLOAD_SCRIPT = r'''
import os, re, shutil, sys, urllib.request
uri, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
if uri.startswith("file://") or os.path.exists(uri):
    source = uri[len("file://"):] if uri.startswith("file://") else uri
    if os.path.isdir(source):
        shutil.copytree(source, out, dirs_exist_ok=True)
    else:
        shutil.copy(source, out)
elif uri.startswith(("gs://", "s3://", "hdfs://", "webhdfs://")):
    import fsspec
    protocol = uri.split("://", 1)[0]
    options = {}
    if protocol == "s3":
        options = {"key": os.environ.get("AWS_ACCESS_KEY_ID"), "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
                   "client_kwargs": {"endpoint_url": os.environ.get("AWS_ENDPOINT_URL"),
                                     "region_name": os.environ.get("AWS_DEFAULT_REGION")}}
    filesystem = fsspec.filesystem(protocol, **options)
    path = uri.split("://", 1)[1]
    if filesystem.isdir(path):
        filesystem.get(path.rstrip("/") + "/", out, recursive=True)
    else:
        filesystem.get(path, out + "/")
elif re.search("https?://(.+)/(.+)", uri):
    with urllib.request.urlopen(uri) as response, open(os.path.join(out, uri.rsplit("/", 1)[1]), "wb") as target:
        shutil.copyfileobj(response, target)
else:
    raise Exception("Cannot recognize storage type for " + uri + "\n'gs://', 's3://', 'file://', 'http(s)://', "
                    "'hf://', 'modelscope://' and 'oci://' are the current available storage types.")
print("Successfully copied %s to %s" % (uri, out))
'''


def s3_env(secret: Obj) -> list[Obj]:
    """The env KServe sets from one S3 credentials Secret (its annotations first, then its data)."""
    name = secret["metadata"]["name"]
    annotations = secret["metadata"].get("annotations") or {}
    env = [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": name, "key": "AWS_ACCESS_KEY_ID"}}},
           {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": name, "key": "AWS_SECRET_ACCESS_KEY"}}}]
    endpoint = annotations.get("serving.kserve.io/s3-endpoint", "").strip()
    if endpoint:
        if endpoint.lower().startswith("https://"):
            use_https, host, url = "1", endpoint[8:], endpoint
        elif endpoint.lower().startswith("http://"):
            use_https, host, url = "0", endpoint[7:], endpoint
        else:
            use_https = annotations.get("serving.kserve.io/s3-usehttps", "")
            host, url = endpoint, ("http://" if use_https == "0" else "https://") + endpoint
        if use_https:
            env.append({"name": "S3_USE_HTTPS", "value": use_https})
        env += [{"name": "S3_ENDPOINT", "value": host}, {"name": "AWS_ENDPOINT_URL", "value": url}]
    env += [{"name": variable, "value": annotations[annotation]}
            for annotation, variable in S3_ANNOTATIONS.items() if annotation in annotations]
    return env


def credentials_env(kube: Kube, namespace: str, service_account: str) -> list[Obj]:
    """Env from the S3 Secrets the ServiceAccount lists (none when it does not exist, as KServe logs and goes on)."""
    account = kube.read("ServiceAccount", namespace, service_account or "default")
    env: list[Obj] = []
    for reference in (account or {}).get("secrets") or []:
        secret = kube.read("Secret", namespace, reference["name"])
        if secret is not None and "AWS_SECRET_ACCESS_KEY" in (secret.get("data") or {}):
            env += s3_env(secret)
    return env


def add_storage_initializer(kube: Kube, pod_spec: Obj, namespace: str, storage_uri: str, image: str) -> None:
    """Add the init container, its volumes and the model mount to ``pod_spec`` (first container serves)."""
    source = storage_uri
    volumes = pod_spec.setdefault("volumes", [])
    mounts = [{"name": VOLUME, "mountPath": MODEL_DIR}]
    if storage_uri.startswith("pvc://"):
        claim, _, path = storage_uri[len("pvc://"):].partition("/")
        volumes.append({"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "kserve-pvc-source", "mountPath": PVC_DIR, "readOnly": True})
        source = f"{PVC_DIR}/{path}"
    volumes.append({"name": VOLUME, "emptyDir": {}})
    pod_spec["containers"][0].setdefault("volumeMounts", []).append({"name": VOLUME, "mountPath": MODEL_DIR, "readOnly": True})
    pod_spec["initContainers"] = (pod_spec.get("initContainers") or []) + [{
        "name": "storage-initializer", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-c", DOWNLOAD_SCRIPT], "args": [source, MODEL_DIR],
        "env": credentials_env(kube, namespace, pod_spec.get("serviceAccountName", "")),
        "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError", "volumeMounts": mounts}]
