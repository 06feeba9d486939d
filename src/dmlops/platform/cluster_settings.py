"""Cluster settings applied to every task of a pipeline at compile time, with kfp-kubernetes.

Credentials come from Kubernetes Secrets as environment variables or volumes, never from pipeline
parameters. Settings live in a YAML file a platform team keeps beside the cluster::

    secret_env:            # Secret keys as environment variables of every task
      - secret: gcs-credentials
        keys: {GOOGLE_APPLICATION_CREDENTIALS_JSON: GOOGLE_APPLICATION_CREDENTIALS_JSON}
    secret_volumes:        # Secrets mounted as files
      - {secret: aws-credentials, mount_path: /var/secrets/aws}
    pvc_mounts:
      - {pvc: dmlops-checkpoints, mount_path: /checkpoints}
    node_selector: {cloud.google.com/gke-nodepool: cpu-pool}
    tolerations:
      - {key: dedicated, operator: Equal, value: ml, effect: NoSchedule}
    gpu:                   # per component name: accelerator limit (and type) of that task's pod
      train: {limit: 1, type: nvidia.com/gpu}
    retries: 2
    istio_sidecar: false   # true: the pods steps start (workers, trials) may get Istio sidecars
    model_signing:         # the Ed25519 key pair of signed models (dmlops.privacy.signing)
      secret: dmlops-model-signing
      private_key: private.pem   # given to train and its training job's rank-0 pods only
      public_key: public.pem     # given to every step (evaluate, deploy, ...) and the predictor
    parquet_keys:          # the master key file of encrypted datasets (dmlops.privacy.encryption)
      secret: dmlops-parquet-keys
      key: keys.json             # mounted in every step and every pod of a training job

Pipelines call :func:`apply_to_current_pipeline` as their last statement; :func:`build_pipeline` re-traces a
pipeline with settings active.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import pipeline_context

from dmlops.platform.mesh import ISTIO_SIDECAR_ENV

_active: list["ClusterSettings"] = []
# The variables dmlops.privacy.signing reads: the keys, and the Secret keys by reference for pods a step starts.
SIGNING_KEY, SIGNING_SECRET = "DMLOPS_MODEL_SIGNING_KEY", "DMLOPS_MODEL_SIGNING_SECRET"
VERIFY_KEY, VERIFY_SECRET = "DMLOPS_MODEL_VERIFY_KEY", "DMLOPS_MODEL_VERIFY_SECRET"
# ... and those dmlops.privacy.encryption reads; where every step finds the master key file.
KEYS_FILE, KEYS_SECRET = "DMLOPS_PARQUET_KEYS_FILE", "DMLOPS_PARQUET_KEYS_SECRET"
KEYS_MOUNT_PATH = "/var/run/secrets/dmlops/parquet-keys"


@dataclass
class ClusterSettings:
    """Kubernetes settings for every task of a pipeline (see the module docstring for the YAML form)."""

    secret_env: list[dict[str, Any]] = field(default_factory=list)
    secret_volumes: list[dict[str, str]] = field(default_factory=list)
    pvc_mounts: list[dict[str, str]] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    gpu: dict[str, dict[str, Any]] = field(default_factory=dict)
    retries: int = 0
    istio_sidecar: bool = False
    model_signing: dict[str, str] = field(default_factory=dict)
    parquet_keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ClusterSettings":
        """Settings from a YAML file; unknown keys are an error naming the file and the allowed keys."""
        document = yaml.safe_load(Path(path).read_text()) or {}
        allowed = {item.name for item in fields(cls)}
        unknown = set(document) - allowed
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**document)

    def apply(self, task: dsl.PipelineTask) -> None:
        """Apply these settings to one task."""
        for entry in self.secret_env:
            kubernetes.use_secret_as_env(task, secret_name=entry["secret"], secret_key_to_env=entry["keys"])
        for entry in self.secret_volumes:
            kubernetes.use_secret_as_volume(task, secret_name=entry["secret"], mount_path=entry["mount_path"])
        for entry in self.pvc_mounts:
            kubernetes.mount_pvc(task, pvc_name=entry["pvc"], mount_path=entry["mount_path"])
        for key, value in self.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in self.tolerations:
            kubernetes.add_toleration(task, **toleration)
        accelerator = self.gpu.get(task.component_spec.name.replace("-", "_"))
        if accelerator:
            task.set_accelerator_type(accelerator.get("type", "nvidia.com/gpu"))
            task.set_accelerator_limit(int(accelerator["limit"]))
        if self.retries:
            task.set_retry(num_retries=self.retries)
        if self.istio_sidecar:  # read by dmlops.platform.mesh when the step builds its pods
            task.set_env_variable(ISTIO_SIDECAR_ENV, "true")
        if self.model_signing:
            self._apply_model_signing(task)
        if self.parquet_keys:
            self._apply_parquet_keys(task)

    def _apply_parquet_keys(self, task: dsl.PipelineTask) -> None:
        """The Parquet master key file to every step, as a file, and by reference for the pods it starts."""
        secret, key = self.parquet_keys.get("secret", ""), self.parquet_keys.get("key", "keys.json")
        if not secret or set(self.parquet_keys) - {"secret", "key"}:
            raise ValueError(f"parquet_keys needs 'secret' and takes 'key'; got {sorted(self.parquet_keys)}")
        kubernetes.use_secret_as_volume(task, secret_name=secret, mount_path=KEYS_MOUNT_PATH)
        task.set_env_variable(KEYS_FILE, f"{KEYS_MOUNT_PATH}/{key}")
        task.set_env_variable(KEYS_SECRET, f"{secret}/{key}")

    def _apply_model_signing(self, task: dsl.PipelineTask) -> None:
        """The public key to every step (as DMLOPS_MODEL_VERIFY_KEY, and by reference for the predictor
        deploy builds); the private key to ``train`` only (for its own workers, and by reference for the
        training job's rank-0 pods)."""
        secret = self.model_signing.get("secret", "")
        unknown = set(self.model_signing) - {"secret", "private_key", "public_key"}
        if not secret or unknown:
            raise ValueError(f"model_signing needs 'secret' and takes 'private_key' and 'public_key'; got "
                             f"{sorted(self.model_signing)}")
        private_key = self.model_signing.get("private_key", "private.pem")
        public_key = self.model_signing.get("public_key", "public.pem")
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={public_key: VERIFY_KEY})
        task.set_env_variable(VERIFY_SECRET, f"{secret}/{public_key}")
        if task.component_spec.name.replace("-", "_") == "train":
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={private_key: SIGNING_KEY})
            task.set_env_variable(SIGNING_SECRET, f"{secret}/{private_key}")


def apply_to_current_pipeline() -> None:
    """Apply the active settings (if any) to every task of the pipeline being traced."""
    if not _active:
        return
    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        if task.pipeline_spec is not None:
            raise ValueError(
                f"task {task.name!r} is a nested pipeline: cluster settings reach only the tasks of the pipeline "
                "being compiled; add the nested pipeline's steps to it with a plain function instead")
        if task.container_spec is not None:
            _active[-1].apply(task)


@contextlib.contextmanager
def active(settings: ClusterSettings) -> Iterator[None]:
    """Make ``settings`` the ones :func:`apply_to_current_pipeline` applies."""
    _active.append(settings)
    try:
        yield
    finally:
        _active.pop()


def build_pipeline(pipeline: Any, settings: ClusterSettings) -> Any:
    """Re-trace a ``@dsl.pipeline`` with ``settings`` applied to each of its tasks."""
    with active(settings):
        return dsl.pipeline(name=pipeline.name, description=pipeline.description)(pipeline.pipeline_func)
