"""Keys on a cluster: the model-signing key reaches the training job's rank-0 pods from its Secret (never as
a value in the resource), the verify key every step and the predictor, the Parquet master keys every pod
that trains; a model trained with what the operator's pods carry verifies."""

import base64
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from crds import assert_valid
from kubernetes import client

from kubeharness.kubeflow import kubeflow  # noqa: F401 - fixture
from dmlops.platform import cluster_settings
from dmlops.privacy import encryption, signing
from dmlops.serving.packaging import inference_service
from dmlops.training.config import TrainConfig
from dmlops.training.export import METADATA_FILE, fetch
from dmlops.training.launch import PARQUET_KEYS_MOUNT_PATH, SIGNING_KEY_MOUNT_PATH, WorkerResources, training_job

SECRET = "dmlops-model-signing"
KEYS_SECRET = "dmlops-parquet-keys"
IMAGE = "ghcr.io/dmlops/torch-horovod:0.1.0"
KEY_FILE = f"{SIGNING_KEY_MOUNT_PATH}/signing-key.pem"


@pytest.fixture
def key_secret(monkeypatch):
    """The step's environment as the model_signing cluster setting gives it: the Secret keys by reference."""
    for variable in (signing.SIGNING_KEY, signing.VERIFY_KEY):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"{variable}_FILE", raising=False)
    monkeypatch.setenv(signing.SIGNING_SECRET, f"{SECRET}/private.pem")
    monkeypatch.setenv(signing.VERIFY_SECRET, f"{SECRET}/public.pem")
    monkeypatch.setenv(encryption.KEYS_SECRET, f"{KEYS_SECRET}/keys.json")


def config(strategy: str) -> TrainConfig:
    return TrainConfig(train_uri="s3://data/train.parquet", label="label", export_uri="s3://models/m", strategy=strategy)


def jobs(name: str = "train-signed", workers: int = 2) -> dict[str, dict]:
    built = {strategy: training_job(config(strategy), workers, WorkerResources(), IMAGE, "team-a", name)
             for strategy in ("torch-ddp", "tf-multiworker", "horovod-torch")}
    built["trainer"] = training_job(config("torch-ddp"), workers, WorkerResources(), IMAGE, "team-a", name,
                                    job_api="trainer")
    return built


def templates(job: dict) -> dict[str, dict]:
    spec = job["spec"]
    if job["kind"] == "TrainJob":
        return {entry["name"]: entry["template"]["spec"]["template"] for patch in spec["runtimePatches"]
                for entry in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]}
    replicas = spec.get("pytorchReplicaSpecs") or spec.get("tfReplicaSpecs") or spec["mpiReplicaSpecs"]
    return {role: replica["template"] for role, replica in replicas.items()}


def carries_key(pod_spec: dict) -> bool:
    """Whether a pod spec mounts the private key from the Secret and names the file for the worker."""
    volumes = [(volume["name"], volume["secret"]["secretName"], volume["secret"]["items"])
               for volume in pod_spec.get("volumes") or [] if (volume.get("secret") or {}).get("secretName") == SECRET]
    if volumes != [("model-signing-key", SECRET, [{"key": "private.pem", "path": "signing-key.pem"}])]:
        return False
    container = pod_spec["containers"][0]
    mounts = [(mount["mountPath"], mount.get("readOnly")) for mount in container.get("volumeMounts") or []
              if mount["name"] == "model-signing-key"]
    env = {entry["name"]: entry.get("value") for entry in container.get("env") or []}
    return mounts == [(SIGNING_KEY_MOUNT_PATH, True)] and env.get("DMLOPS_MODEL_SIGNING_KEY_FILE") == KEY_FILE


def carries_parquet_keys(pod_spec: dict) -> bool:
    """Whether a pod spec mounts the Parquet master key file and names it for the worker."""
    volumes = [volume["secret"]["items"] for volume in pod_spec.get("volumes") or []
               if (volume.get("secret") or {}).get("secretName") == KEYS_SECRET]
    container = pod_spec["containers"][0]
    env = {entry["name"]: entry.get("value") for entry in container.get("env") or []}
    return volumes == [[{"key": "keys.json", "path": "keys.json"}]] and PARQUET_KEYS_MOUNT_PATH in [
        mount["mountPath"] for mount in container.get("volumeMounts") or []] and (
        env.get(encryption.KEYS_VARIABLE) == f"{PARQUET_KEYS_MOUNT_PATH}/keys.json")


def test_rank_zero_pods_get_the_signing_key_from_its_secret(key_secret):
    built = jobs()
    for job in built.values():
        assert_valid(job)
        assert "PRIVATE KEY" not in json.dumps(job)
    pytorch, tf, mpi, trainer = (templates(built[name]) for name in ("torch-ddp", "tf-multiworker", "horovod-torch",
                                                                     "trainer"))
    assert carries_key(pytorch["Master"]["spec"]) and "model-signing" not in json.dumps(pytorch["Worker"])
    assert carries_key(tf["Chief"]["spec"]) and "model-signing" not in json.dumps(tf["Worker"])
    # horovodrun starts rank 0 on the first Worker with the Launcher's environment
    assert carries_key(mpi["Worker"]["spec"]) and "volumes" not in mpi["Launcher"]["spec"]
    launcher_env = {entry["name"]: entry.get("value") for entry in mpi["Launcher"]["spec"]["containers"][0]["env"]}
    assert launcher_env["DMLOPS_MODEL_SIGNING_KEY_FILE"] == KEY_FILE
    node = trainer["node"]["spec"]
    assert node["volumes"][0]["secret"]["secretName"] == SECRET
    assert node["containers"][0]["volumeMounts"][0] == {
        "name": "model-signing-key", "mountPath": SIGNING_KEY_MOUNT_PATH, "readOnly": True}
    assert node["containers"][0]["name"] == "node"
    assert {"name": "DMLOPS_MODEL_SIGNING_KEY_FILE", "value": KEY_FILE} in built["trainer"]["spec"]["trainer"]["env"]


def test_every_training_pod_gets_the_parquet_keys_from_their_secret(key_secret):
    built = jobs()
    pytorch, tf, mpi, trainer = (templates(built[name]) for name in ("torch-ddp", "tf-multiworker", "horovod-torch",
                                                                     "trainer"))
    for template in (pytorch["Master"], pytorch["Worker"], tf["Chief"], tf["Worker"], mpi["Worker"]):
        assert carries_parquet_keys(template["spec"])
    launcher_env = {entry["name"]: entry.get("value") for entry in mpi["Launcher"]["spec"]["containers"][0]["env"]}
    assert launcher_env[encryption.KEYS_VARIABLE] == f"{PARQUET_KEYS_MOUNT_PATH}/keys.json"  # forwarded to the ranks
    assert [volume["secret"]["secretName"] for volume in trainer["node"]["spec"]["volumes"]] == [SECRET, KEYS_SECRET]


def test_without_a_signing_secret_no_pod_mounts_a_key(monkeypatch):
    monkeypatch.delenv(signing.SIGNING_SECRET, raising=False)
    for job in jobs().values():
        assert "model-signing-key" not in json.dumps(job) and "SIGNING_KEY" not in json.dumps(job)


def test_a_malformed_secret_reference_is_refused(monkeypatch):
    monkeypatch.setenv(signing.SIGNING_SECRET, SECRET)
    with pytest.raises(ValueError, match=f"{signing.SIGNING_SECRET}='{SECRET}': expected <secret name>/<key>"):
        jobs()


def test_the_predictor_gets_the_verify_key_from_its_secret(key_secret, monkeypatch):
    service = inference_service("flights", "team-a", "s3://models/m")
    assert_valid(service)
    assert service["spec"]["predictor"]["model"]["env"] == [{"name": "DMLOPS_MODEL_VERIFY_KEY", "valueFrom": {
        "secretKeyRef": {"name": SECRET, "key": "public.pem"}}}]
    monkeypatch.delenv(signing.VERIFY_SECRET)
    assert "env" not in inference_service("flights", "team-a", "s3://models/m")["spec"]["predictor"]["model"]


def test_the_model_signing_setting_gives_train_the_private_key_and_every_step_the_public_key(tmp_path):
    import yaml
    from kfp import compiler, dsl

    from dmlops.components import train
    from dmlops.platform.cluster_settings import ClusterSettings, apply_to_current_pipeline, build_pipeline

    assert (cluster_settings.SIGNING_KEY, cluster_settings.SIGNING_SECRET, cluster_settings.VERIFY_KEY,
            cluster_settings.VERIFY_SECRET) == (signing.SIGNING_KEY, signing.SIGNING_SECRET, signing.VERIFY_KEY,
                                                signing.VERIFY_SECRET)

    @dsl.component(base_image="python:3.11")
    def evaluate_step():
        pass

    @dsl.pipeline
    def pipeline(data: str):
        dataset = dsl.importer(artifact_uri=data, artifact_class=dsl.Dataset).output
        train(train_data=dataset, eval_data=dataset, label="label")
        evaluate_step()
        apply_to_current_pipeline()

    settings = ClusterSettings(model_signing={"secret": SECRET, "private_key": "private.pem"},
                               parquet_keys={"secret": KEYS_SECRET})
    compiler.Compiler().compile(build_pipeline(pipeline, settings), str(tmp_path / "pipeline.yaml"))
    documents = list(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text()))
    executors = documents[0]["deploymentSpec"]["executors"]
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]

    def secrets(step: str) -> dict[str, str]:
        return {entry["keyToEnv"][0]["envVar"]: entry["keyToEnv"][0]["secretKey"]
                for entry in platform[f"exec-{step}"]["secretAsEnv"]}

    def env(step: str) -> dict[str, str]:
        return {entry["name"]: entry["value"] for entry in executors[f"exec-{step}"]["container"].get("env", [])}

    assert secrets("train") == {"DMLOPS_MODEL_VERIFY_KEY": "public.pem", "DMLOPS_MODEL_SIGNING_KEY": "private.pem"}
    assert secrets("evaluate-step") == {"DMLOPS_MODEL_VERIFY_KEY": "public.pem"}
    assert env("train")["DMLOPS_MODEL_SIGNING_SECRET"] == f"{SECRET}/private.pem"
    assert env("evaluate-step") == {"DMLOPS_MODEL_VERIFY_SECRET": f"{SECRET}/public.pem",
                                    "DMLOPS_PARQUET_KEYS_FILE": f"{PARQUET_KEYS_MOUNT_PATH}/keys.json",
                                    "DMLOPS_PARQUET_KEYS_SECRET": f"{KEYS_SECRET}/keys.json"}
    for step in ("train", "evaluate-step"):
        assert platform[f"exec-{step}"]["secretAsVolume"] == [{
            "secretName": KEYS_SECRET, "secretNameParameter": {"runtimeValue": {"constant": KEYS_SECRET}},
            "mountPath": PARQUET_KEYS_MOUNT_PATH, "optional": False}]
    assert "PRIVATE KEY" not in (tmp_path / "pipeline.yaml").read_text()
    with pytest.raises(ValueError, match="model_signing needs 'secret'"):
        build_pipeline(pipeline, ClusterSettings(model_signing={"private": "x"}))


# --- on a real API server with the simulated operators ------------------------------------------------------


def _pods(kubeflow, namespace: str, selector: str, count: int) -> list[dict]:
    core = client.CoreV1Api(kubeflow.kube.api)
    return kubeflow.wait_for(lambda: (lambda pods: len(pods) == count and pods)(
        [kubeflow.kube.to_dict(pod) for pod in core.list_namespaced_pod(namespace, label_selector=selector).items]),
        what=f"{count} pods {selector}")


def _as_kubelet_would(pod: dict, core: client.CoreV1Api, namespace: str, root: Path) -> dict[str, str]:
    """The first container's environment as the kubelet gives it: secret volumes written from the Secrets on
    the API server under ``root`` (mount paths moved there), plain values kept, secretKeyRef values read."""
    moved: dict[str, str] = {}
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
    container = pod["spec"]["containers"][0]
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "secret" not in volume:
            continue
        data = core.read_namespaced_secret(volume["secret"]["secretName"], namespace).data
        directory = root / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True)
        for item in volume["secret"]["items"]:
            (directory / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        moved[mount["mountPath"]] = str(directory)
    environment = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            value = entry["value"]
            for mount_path, directory in moved.items():
                value = value.replace(mount_path, directory)
            environment[entry["name"]] = value
        elif "secretKeyRef" in (entry.get("valueFrom") or {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = base64.b64decode(core.read_namespaced_secret(ref["name"], namespace).data[
                ref["key"]]).decode()
    return environment


@pytest.mark.envtest
def test_operator_pods_carry_the_key_and_a_model_trained_with_it_verifies(key_secret, kubeflow, kube_namespace,  # noqa: F811
                                                                          tmp_path, monkeypatch):
    core = client.CoreV1Api(kubeflow.kube.api)
    private, public = signing.generate_key_pair()
    core.create_namespaced_secret(kube_namespace, {"metadata": {"name": SECRET}, "stringData": {
        "private.pem": private, "public.pem": public}})
    core.create_namespaced_secret(kube_namespace, {"metadata": {"name": KEYS_SECRET}, "stringData": {
        "keys.json": json.dumps({"datasets": base64.b64encode(os.urandom(32)).decode()})}})
    built = jobs("signed", workers=2)
    for strategy, name, plural in (("torch-ddp", "signed-pytorch", "pytorchjobs"), ("tf-multiworker", "signed-tf", "tfjobs"),
                                   ("horovod-torch", "signed-mpi", "mpijobs")):
        job = {**built[strategy], "metadata": {**built[strategy]["metadata"], "name": name, "namespace": kube_namespace}}
        group, version = job["apiVersion"].split("/")
        kubeflow.kube.custom.create_namespaced_custom_object(group, version, kube_namespace, plural, job)
    kubeflow.install_runtimes()
    try:
        trainjob = {**built["trainer"], "metadata": {**built["trainer"]["metadata"], "name": "signed-trainjob",
                                                     "namespace": kube_namespace}}
        kubeflow.kube.custom.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", kube_namespace,
                                                             "trainjobs", trainjob)
        pods = {pod["metadata"]["name"]: pod for selector, count in (
            ("training.kubeflow.org/job-name=signed-pytorch", 2), ("training.kubeflow.org/job-name=signed-tf", 2),
            ("training.kubeflow.org/job-name=signed-mpi,training.kubeflow.org/job-role=worker", 2),
            ("jobset.sigs.k8s.io/jobset-name=signed-trainjob", 2))
            for pod in _pods(kubeflow, kube_namespace, selector, count)}
    finally:
        kubeflow.kube.custom.delete_cluster_custom_object("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes",
                                                          "torch-distributed")
    # a TrainJob's pods are named by their Job (a random suffix); their host names are stable
    holders = sorted(pod["spec"].get("hostname") if "trainjob" in name else name for name, pod in pods.items()
                     if carries_key(pod["spec"]))
    assert all(carries_parquet_keys(pod["spec"]) for pod in pods.values())  # every pod reads the data
    assert holders == ["signed-mpi-worker-0", "signed-mpi-worker-1", "signed-pytorch-master-0", "signed-tf-chief-0",
                       "signed-trainjob-node-0-0", "signed-trainjob-node-0-1"]

    # play the kubelet for the PyTorchJob's master: its environment and files, then train as rank 0 does, on
    # encrypted data
    master = _as_kubelet_would(pods["signed-pytorch-master-0"], core, kube_namespace, tmp_path / "master")
    assert "PRIVATE KEY" in Path(master["DMLOPS_MODEL_SIGNING_KEY_FILE"]).read_text()
    assert master["RANK"] == "0"
    for variable in ("DMLOPS_MODEL_SIGNING_KEY_FILE", encryption.KEYS_VARIABLE):
        monkeypatch.setenv(variable, master[variable])
    from dmlops.training.worker import train

    rng = np.random.default_rng(3)
    hour = rng.integers(5, 23, 256)
    encryption.write_encrypted(pa.table({"dep_hour": hour, "distance": rng.uniform(100, 2500, 256),
                                         "label": (hour > 16).astype(np.int64)}), str(tmp_path / "train.parquet"),
                               key_id="datasets")  # sensitive data, read with the pod's key file
    export = tmp_path / "model"
    train(TrainConfig(train_uri=str(tmp_path / "train.parquet"), label="label", export_uri=str(export), epochs=1,
                      batch_size=64, hidden_units=[4], numeric_features=["dep_hour", "distance"], seed=0))
    assert (export / f"{METADATA_FILE}.sig").is_file()

    # the predictor deploy builds, as the InferenceService controller would run it, verifies that model
    service = inference_service("signed", kube_namespace, "s3://models/m")
    predictor_env = _as_kubelet_would({"spec": {"containers": [service["spec"]["predictor"]["model"]]}}, core,
                                      kube_namespace, tmp_path / "predictor")
    monkeypatch.delenv("DMLOPS_MODEL_SIGNING_KEY_FILE")
    monkeypatch.setenv("DMLOPS_MODEL_VERIFY_KEY", predictor_env["DMLOPS_MODEL_VERIFY_KEY"])
    assert fetch(str(export)) == export
    metadata = json.loads((export / METADATA_FILE).read_text())
    (export / METADATA_FILE).write_text(json.dumps({**metadata, "hyperparameters": {"tampered": True}}))
    with pytest.raises(signing.ModelIntegrityError, match="does not verify"):
        fetch(str(export))
    kubeflow.raise_errors()
