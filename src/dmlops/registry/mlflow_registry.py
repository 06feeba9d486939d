"""Model versions in an MLflow model registry (``mlflow-skinny``, its client only).

- :func:`register`: one MLflow run holding the version's evidence (metrics; the sha256 of every model
  file; the digest and URI of each dataset it was trained and evaluated on; the pipeline run) and a
  model version whose source is the model's own storage URI (no copy), tagged with the same digests,
  alias ``challenger``. A registry server cannot read a path on the client's disk (MLflow refuses such a
  source, mlflow/server/handlers.py ``_validate_source_run``): a local model is then copied into the
  run's artifacts and the version points there.
- :func:`resolve`: ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the version and its
  source URI (read through :mod:`dmlops.platform.storage`), its files checked against the digests.
- :func:`record_deploy` / :func:`served_at`: each rollout of a registered version is a run in the
  experiment :data:`DEPLOYMENTS_EXPERIMENT` (endpoint, model, version, decision, time); promote moves
  ``champion`` to the version. Which version served an endpoint at a time is the last promoting event
  up to that time (MLflow's run search).

The registry is :func:`tracking_uri`: the argument, else ``$MLFLOW_TRACKING_URI`` (an MLflow server on a
cluster, see manifests/mlflow), else a SQLite store in ``$DMLOPS_OUTPUT_DIR`` (what ``dmlops run`` sets to
its output folder) or ``./local_outputs``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from dmlops.platform import storage

CHALLENGER, CHAMPION = "challenger", "champion"
DEPLOYMENTS_EXPERIMENT = "dmlops-deployments"
OUTPUT_DIR_ENV = "DMLOPS_OUTPUT_DIR"
FILE_TAG_PREFIX = "file_sha256/"
SERVING_ACTIONS = ("first-deploy", "promote")
MLFLOW_SCHEMES = ("mlflow-artifacts:", "runs:", "models:")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistryError(ValueError):
    """A malformed registry URI, or a version whose files differ from what was registered."""


class VersionNotFound(RegistryError):
    """A registry URI that names no version (yet)."""


def tracking_uri(uri: str = "") -> str:
    """The registry to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store."""
    if uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return uri or os.environ["MLFLOW_TRACKING_URI"]
    root = Path(os.environ.get(OUTPUT_DIR_ENV) or "local_outputs").resolve() / "registry"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    resolved = tracking_uri(uri)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def is_registry_uri(uri: str) -> bool:
    return uri.startswith("models:/")


def dataset_digest(uri: str) -> str:
    """The sha256 of a dataset: of its file, or for a directory of the lines ``<relative path>\\0<sha256>``
    of its files in path order."""
    fs, path = storage.filesystem(uri)
    path = path.rstrip("/")

    def file_sha256(name: str) -> str:
        digest = hashlib.sha256()
        with fs.open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    if not fs.isdir(path):
        return file_sha256(path)
    files = sorted(fs.find(path))
    if not files:
        raise RegistryError(f"dataset {uri} has no files")
    listing = "".join(f"{name[len(path):].lstrip('/')}\0{file_sha256(name)}\n" for name in files)
    return hashlib.sha256(listing.encode()).hexdigest()


@dataclass
class RegisteredVersion:
    """A model version: its name and number, the storage URI of its files, the MLflow run holding its
    evidence, its aliases and tags."""

    name: str
    version: str
    source: str
    run_id: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def file_digests(self) -> dict[str, str]:
        return {key[len(FILE_TAG_PREFIX):]: value for key, value in self.tags.items()
                if key.startswith(FILE_TAG_PREFIX)}


def _version(record) -> RegisteredVersion:
    return RegisteredVersion(record.name, str(record.version), record.source, record.run_id or "",
                             list(record.aliases or []), dict(record.tags or {}))


def register(
    name: str,
    model_uri: str,
    *,
    model_dir: str = "",
    metrics: dict[str, float] | None = None,
    datasets: dict[str, str] | None = None,
    pipeline_run: str = "",
    registry: str = "",
) -> RegisteredVersion:
    """Register the model at ``model_uri`` as a new version of ``name`` with alias ``challenger``.

    ``model_dir`` is a local copy of the model when the caller has one (read instead of downloading);
    ``datasets`` maps a role (``train``, ``eval``) to a dataset URI whose digest is recorded;
    ``pipeline_run`` names the pipeline run that made the model."""
    from mlflow.exceptions import MlflowException

    client = _client(registry)
    files = storage.file_digests(storage.fetch(model_dir or model_uri))
    if not files:
        raise RegistryError(f"model {model_uri} has no files")
    tags = {f"{FILE_TAG_PREFIX}{path}": digest for path, digest in files.items()}
    for role, uri in (datasets or {}).items():
        tags[f"dataset/{role}/uri"] = uri
        tags[f"dataset/{role}/sha256"] = dataset_digest(uri)
    if pipeline_run:
        tags["pipeline_run"] = pipeline_run
    run = client.create_run(_experiment_id(client, f"dmlops-models/{name}"), tags={**tags, "model_uri": model_uri},
                            run_name=f"register-{name}")
    for metric, value in (metrics or {}).items():
        client.log_metric(run.info.run_id, metric, float(value))
    source = model_uri
    on_server = tracking_uri(registry).startswith(("http://", "https://"))
    if on_server and ("://" not in model_uri or model_uri.startswith("file://")):
        client.log_artifacts(run.info.run_id, str(storage.fetch(model_dir or model_uri)), "model")
        source = f"{run.info.artifact_uri}/model"
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    created = client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, created.version)
    return _version(client.get_model_version(name, created.version))


def get_version(models_uri: str, registry: str = "") -> RegisteredVersion:
    """The version a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI names."""
    from mlflow.exceptions import MlflowException

    match = _MODELS_URI.match(models_uri)
    if not match:
        raise RegistryError(f"{models_uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    client = _client(registry)
    try:
        if match["alias"]:
            record = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            record = client.get_model_version(match["name"], match["version"])
    except MlflowException as error:
        raise VersionNotFound(f"{models_uri}: no such version in the registry {tracking_uri(registry)} "
                            f"({error.message})") from None
    return _version(record)


def resolve(models_uri: str, registry: str = "") -> tuple[RegisteredVersion, Path]:
    """The version a registry URI names and a local directory with its files, each checked against the
    sha256 recorded at registration."""
    version = get_version(models_uri, registry)
    if version.source.startswith(MLFLOW_SCHEMES):  # artifacts the server proxies
        import tempfile

        from mlflow.artifacts import download_artifacts

        directory = Path(download_artifacts(artifact_uri=version.source, dst_path=tempfile.mkdtemp(prefix="dmlops-"),
                                            tracking_uri=tracking_uri(registry)))
    else:
        directory = storage.fetch(version.source)
    actual = storage.file_digests(directory)
    changed = sorted(path for path, digest in version.file_digests.items() if actual.get(path) != digest)
    if changed:
        raise RegistryError(f"{models_uri} (version {version.version}, {version.source}): files {changed} are "
                            "missing or differ from their registered sha256")
    return version, directory


DATASET_ROLES = ("train", "eval")


def versions_trained_on(digests: set[str], registry: str = "") -> list[tuple[RegisteredVersion, str, str]]:
    """(version, role, digest) for every registered version whose ``dataset/<role>/sha256`` tag
    (recorded by :func:`register`) is one of ``digests``, by name and version."""
    client = _client(registry)
    found = []
    page_token = None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=page_token)
        for record in page:
            roles = [role for role in DATASET_ROLES if (record.tags or {}).get(f"dataset/{role}/sha256") in digests]
            if roles:  # a search result may lack the aliases: read the version itself
                version = _version(client.get_model_version(record.name, record.version))
                found += [(version, role, version.tags[f"dataset/{role}/sha256"]) for role in roles]
        page_token = page.token
        if not page_token:
            break
    return sorted(found, key=lambda item: (item[0].name, int(item[0].version), item[1]))


def set_alias(version: RegisteredVersion, alias: str, registry: str = "") -> None:
    _client(registry).set_registered_model_alias(version.name, alias, version.version)


def record_deploy(version: RegisteredVersion, endpoint: str, action: str, *, stable_version: str = "",
                  registry: str = "", at: float | None = None) -> None:
    """Record that ``version`` was rolled out to ``endpoint`` with ``action`` (first-deploy, promote or
    rollback) at ``at`` (seconds since the epoch; now by default); a promoting action moves
    ``champion`` to it."""
    client = _client(registry)
    started_ms = int((time.time() if at is None else at) * 1000)
    run = client.create_run(
        _experiment_id(client, DEPLOYMENTS_EXPERIMENT), start_time=started_ms, run_name=f"{endpoint}-{action}",
        tags={"endpoint": endpoint, "model_name": version.name, "model_version": version.version,
              "action": action, "source": version.source, "stable_version": stable_version},
    )
    client.set_terminated(run.info.run_id, end_time=started_ms)
    if action in SERVING_ACTIONS:
        client.set_registered_model_alias(version.name, CHAMPION, version.version)


@dataclass
class DeployEvent:
    """One rollout of a registered version to an endpoint."""

    endpoint: str
    model_name: str
    model_version: str
    action: str
    at: float
    stable_version: str = ""


def deploy_history(endpoint: str, registry: str = "", until: float | None = None) -> list[DeployEvent]:
    """The rollouts of registered versions to ``endpoint`` up to ``until`` (all by default), latest first."""
    client = _client(registry)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", endpoint):
        raise ValueError(f"endpoint {endpoint!r}: letters, digits, '.', '_' and '-' only")
    experiment = client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
    if experiment is None:
        return []
    query = f"tags.endpoint = '{endpoint}'"
    if until is not None:
        query += f" and attributes.start_time <= {int(until * 1000)}"
    runs = client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=1000)
    return [DeployEvent(endpoint, run.data.tags["model_name"], run.data.tags["model_version"], run.data.tags["action"],
                        run.info.start_time / 1000, run.data.tags.get("stable_version", "")) for run in runs]


def served_at(endpoint: str, at: float, registry: str = "") -> DeployEvent | None:
    """The rollout whose version served ``endpoint`` at ``at`` (seconds since the epoch): the last
    first-deploy or promote up to then; None before the first."""
    return next((event for event in deploy_history(endpoint, registry, until=at) if event.action in SERVING_ACTIONS),
                None)
