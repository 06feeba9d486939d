"""KFP's launcher, as it runs inside each task's pod: shipped in a ConfigMap and run by the image's python3.

What it does follows kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go`` (``execute``,
``downloadArtifacts``, ``prepareOutputFolders``, ``uploadOutputArtifacts``) and
``backend/src/v2/objectstore/object_store.go`` (``DownloadBlob``/``UploadBlob``: a key is one object or a
folder of objects under ``key/``):

1. download every input artifact from its ``minio://bucket/key`` URI to the local path KFP's SDK reads it
   from (``/minio/bucket/key``, ``kfp/dsl/types/artifact_types.py``);
2. create the folders of the output artifacts' local paths, of the output parameter files and of the
   executor output file (``/tmp/kfp_outputs/output_metadata.json``);
3. run the component's command and arguments (placeholders already filled in), with stdin/stdout/stderr
   passed through; a non-zero exit fails the task;
4. read the executor output file, merge each output artifact's metadata (``mergeRuntimeArtifacts``), read
   output parameters the executor output lacks from their files (``collectOutputParameters``), and upload
   every output artifact's local file or folder to its URI;
5. record the result: the real launcher publishes it to ML Metadata; here it is uploaded as JSON to the
   ``KFP_RESULT_URI`` the backend reads it from.

The MinIO credentials reach the launcher from the Secret ``mlpipeline-minio-artifact`` (the real launcher
reads that Secret through the API, ``objectstore.OpenBucket``); they are removed from the environment of
the component's own process, which never sees them.
"""

import json
import os
import subprocess
import sys
import time

import boto3

LOCAL_PREFIX = {"minio://": "/minio/", "s3://": "/s3/"}
CREDENTIALS = ("KFP_MINIO_ACCESS_KEY", "KFP_MINIO_SECRET_KEY")


def split_uri(uri):
    for scheme in LOCAL_PREFIX:
        if uri.startswith(scheme):
            bucket, _, key = uri[len(scheme):].partition("/")
            return bucket, key
    raise ValueError(f"unsupported artifact URI {uri!r}: this launcher reads minio:// and s3://")


def local_path(uri):
    for scheme, prefix in LOCAL_PREFIX.items():
        if uri.startswith(scheme):
            return prefix + uri[len(scheme):]
    raise ValueError(f"unsupported artifact URI {uri!r}")


def download(s3, uri, path):
    bucket, key = split_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/")
        objects = [item["Key"] for page in pages for item in page.get("Contents", [])]
        if not objects:
            raise FileNotFoundError(f"input artifact {uri} has no object and no objects under it")
        for name in objects:
            target = os.path.join(path, os.path.relpath(name, key.rstrip("/")))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            s3.download_file(bucket, name, target)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s3.download_file(bucket, key, path)


def upload(s3, path, uri):
    bucket, key = split_uri(uri)
    if os.path.isdir(path):
        for folder, _, files in os.walk(path):
            for name in files:
                source = os.path.join(folder, name)
                s3.upload_file(source, bucket, key.rstrip("/") + "/" + os.path.relpath(source, path))
    elif os.path.exists(path):
        s3.upload_file(path, bucket, key)
    else:
        print(f"launcher: output artifact {uri}: local path {path} does not exist; nothing uploaded", flush=True)


def parameter_from_text(text, parameter_type):
    # metadata.TextToPbValue: strings as they are, everything else as JSON.
    return text if parameter_type == "STRING" else json.loads(text)


def main(argv):
    separator = argv.index("--")
    options = dict(zip(argv[:separator:2], argv[1:separator:2]))
    executor_input = json.loads(options["--executor-input"])
    output_types = json.loads(options["--output-parameter-types"])
    command = argv[separator + 1:]
    s3 = boto3.client("s3", endpoint_url=os.environ["KFP_MINIO_ENDPOINT"],
                      aws_access_key_id=os.environ["KFP_MINIO_ACCESS_KEY"],
                      aws_secret_access_key=os.environ["KFP_MINIO_SECRET_KEY"], region_name="us-east-1")
    timings = {}
    started = time.monotonic()
    for artifacts in executor_input["inputs"].get("artifacts", {}).values():
        for artifact in artifacts["artifacts"]:
            download(s3, artifact["uri"], local_path(artifact["uri"]))
    outputs = executor_input["outputs"]
    for artifacts in outputs.get("artifacts", {}).values():
        for artifact in artifacts["artifacts"]:
            os.makedirs(os.path.dirname(local_path(artifact["uri"])), exist_ok=True)
    for parameter in outputs.get("parameters", {}).values():
        os.makedirs(os.path.dirname(parameter["outputFile"]), exist_ok=True)
    os.makedirs(os.path.dirname(outputs["outputFile"]), exist_ok=True)
    timings["download_s"] = time.monotonic() - started

    body_env = {name: value for name, value in os.environ.items() if name not in CREDENTIALS}
    started = time.monotonic()
    exit_code = subprocess.call(command, env=body_env)
    timings["body_s"] = time.monotonic() - started
    if exit_code != 0:
        print(f"launcher: the component exited with {exit_code}", flush=True)
        return exit_code

    started = time.monotonic()
    executor_output = {}
    if os.path.exists(outputs["outputFile"]):
        with open(outputs["outputFile"]) as stream:
            executor_output = json.load(stream)
    parameters = dict(executor_output.get("parameterValues", {}))
    for name, parameter in outputs.get("parameters", {}).items():
        if name not in parameters:
            with open(parameter["outputFile"]) as stream:
                parameters[name] = parameter_from_text(stream.read(), output_types[name])
    artifacts = {}
    for name, listed in outputs.get("artifacts", {}).items():
        artifact = dict(listed["artifacts"][0])
        written = executor_output.get("artifacts", {}).get(name, {}).get("artifacts", [])
        if written:
            artifact["metadata"] = {**artifact.get("metadata", {}), **written[0].get("metadata", {})}
            artifact["uri"] = written[0].get("uri") or artifact["uri"]
        upload(s3, local_path(artifact["uri"]), artifact["uri"])
        artifacts[name] = artifact
    timings["upload_s"] = time.monotonic() - started
    result = {"parameters": parameters, "artifacts": artifacts, "timings": timings}
    bucket, key = split_uri(os.environ["KFP_RESULT_URI"])
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(result).encode())
    print(f"launcher: done (download {timings['download_s']:.2f} s, body {timings['body_s']:.2f} s, "
          f"upload {timings['upload_s']:.2f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
