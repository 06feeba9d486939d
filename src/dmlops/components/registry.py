"""Registry components: register a trained model as a version in the MLflow model registry, and bring
a registered version into a pipeline as a Model artifact."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model(
    model: Input[Model],
    name: str,
    metrics: Input[Metrics] = None,
    train_data: Input[Dataset] = None,
    eval_data: Input[Dataset] = None,
    registry: str = "",
    pipeline_run: str = "",
) -> NamedTuple("RegisteredModel", [("model_uri", str), ("version", str), ("run_id", str)]):
    """Register ``model`` as a new version of ``name`` with the alias ``challenger``: an MLflow run holds
    its metrics, the sha256 of every model file, the digests of the datasets it was trained and evaluated
    on and the pipeline run; the version points at the model artifact's URI (on a registry server a
    model on the step's local disk is copied into the run's artifacts). ``champion`` moves only when a
    deploy of the version passes its gates.

    Args:
        model: The exported model (the train step's model artifact).
        name: The registered model's name (created on its first version).
        metrics: The evaluation metrics (the evaluate step's Metrics): each number is logged to the run.
        train_data: The training set: its sha256 and URI are recorded.
        eval_data: The evaluation set: its sha256 and URI are recorded.
        registry: The MLflow tracking server URL; "" takes $MLFLOW_TRACKING_URI, else a SQLite store
            under the local run's output folder.
        pipeline_run: The pipeline run that made the model (e.g. dsl.PIPELINE_JOB_NAME_PLACEHOLDER).

    Returns:
        model_uri: models:/<name>/<version>, what deploy takes.
        version: The new version's number.
        run_id: The MLflow run holding the version's evidence.
    """
    from collections import namedtuple

    from dmlops.registry.mlflow_registry import register

    numbers = {key: value for key, value in (metrics.metadata if metrics else {}).items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    datasets = {role: data.uri for role, data in (("train", train_data), ("eval", eval_data)) if data is not None}
    version = register(name, model.uri, model_dir=model.path, metrics=numbers, datasets=datasets,
                       pipeline_run=pipeline_run, registry=registry)
    print(f"registered {version.uri} (alias challenger) from {version.source}, run {version.run_id}")
    return namedtuple("RegisteredModel", ["model_uri", "version", "run_id"])(version.uri, version.version,
                                                                             version.run_id)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def registered_model(
    name: str,
    model: Output[Model],
    alias: str = "champion",
    version: str = "",
    registry: str = "",
) -> NamedTuple("RegisteredVersion", [("version", str), ("found", bool)]):
    """A registered version, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``, as a Model
    artifact (a copy of its files, checked against their registered sha256), e.g. the champion to
    evaluate beside a challenger; ``found`` is False (and the artifact empty) when it names no version
    yet, such as ``champion`` before a first deploy.

    Args:
        name: The registered model's name.
        model: The version's files. Metadata: name, version, source.
        alias: The alias naming the version (used when version is "").
        version: A version number; "" takes the alias.
        registry: The MLflow tracking server URL; "" takes $MLFLOW_TRACKING_URI, else the local SQLite store.

    Returns:
        version: The version's number ("" when not found).
        found: Whether the URI names a version.
    """
    import shutil
    from collections import namedtuple

    from dmlops.registry.mlflow_registry import VersionNotFound, resolve

    outputs = namedtuple("RegisteredVersion", ["version", "found"])
    model_uri = f"models:/{name}/{version}" if version else f"models:/{name}@{alias}"
    try:
        found, directory = resolve(model_uri, registry)
    except VersionNotFound as missing:
        print(missing)
        return outputs("", False)
    shutil.copytree(directory, model.path, dirs_exist_ok=True)
    model.metadata.update({"name": found.name, "version": found.version, "source": found.source})
    return outputs(found.version, True)
