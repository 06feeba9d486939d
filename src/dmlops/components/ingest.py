"""Component that ingests CSV, Parquet or JSON Lines from a file, glob or folder, or a Kafka topic, into one Parquet
dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    source: str,
    dataset: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Markdown],
    schema_json: str = "",
    file_format: str = "auto",
    max_bad_fraction: float = 0.0,
    delimiter: str = "",
    null_values: list = ["", "NA", "N/A", "NULL", "null"],
    batch_size_bytes: int = 1048576,
):
    """Ingest ``source`` (local path, file://, gs://, s3://, http(s)://, pkg://<package>/<path>,
    dvc://<repo>/<path>@<rev>; one file, a glob or a folder of CSV, Parquet or JSON Lines; or a Kafka topic,
    kafka://host:port/topic?group=<group>) into a Parquet ``dataset``. Rows that cannot be
    parsed or break ``schema_json`` (a dmlops schema document) go to ``quarantine`` with a reason; the
    step fails when more than ``max_bad_fraction`` of the rows are bad. ``delimiter`` "" sniffs it. Every
    physical CSV line is one record (a quote left open on its line quarantines that line only), so rows
    in = rows out + rows quarantined always holds. A source with a header and no rows gives 0 rows and a
    warning. The outputs appear only when the step succeeds (the quarantine also when it fails for bad rows).

    Args:
        source: What to read: a path or URI (local, file://, gs://, s3://, http(s)://,
            ``pkg://<package>/<path>``, ``dvc://<repo path or git URL>/<path>@<rev>``) naming one file, a
            glob or a folder; .gz, .bz2, .zst and .zip files are decompressed. Or
            ``kafka://host:port/topic?group=<consumer group>``: the JSON messages from the group's
            committed offsets to the end offsets at the step's start, committed once the dataset is
            written (a retried step reads each message exactly once).
        dataset: The rows that conform, as one Parquet file. Metadata: rows, rows_in, rows_quarantined,
            quarantine_reasons, bytes, bytes_in, schema, source_uris, sources (uri, bytes, rows, sha256 each;
            dvc_md5 and git_rev for dvc://, partition and offsets for kafka://), warnings, and kafka
            (brokers, topic, group, partitions with their start and end offsets).
        quarantine: The bad rows as Parquet: raw values as strings plus _source, _line, _row, _reason and
            _raw. Metadata: rows, reasons (reason -> rows) and source_uris.
        report: A Markdown summary: rows in = rows out + quarantined, each source with its sha256, the
            output schema and the quarantine reasons.
        schema_json: A dmlops schema document (as infer_schema writes it), as JSON text or a path to the
            file, declaring column types and nullability. Undeclared CSV columns get the narrowest type
            (int64, double, bool, date, timestamp, else string) that every value of the whole input fits, or
            that all but a minority within max_bad_fraction fit (those rows are quarantined); an integer
            beyond int64 is quarantined, never widened to double.
        file_format: "auto" (from each file's extension: .csv/.tsv/.txt, .parquet/.pq, .jsonl/.ndjson/.json),
            "csv", "parquet" or "jsonl".
        max_bad_fraction: The largest fraction of rows (0 to 1) that may be quarantined before the step
            fails; 0.0 fails on the first bad row.
        delimiter: The CSV field delimiter; "" uses "," (tab for .tsv) and switches to tab, ";" or "|"
            when the header reads as one column holding one of them.
        null_values: The CSV cells read as null (exact matches); [] reads every cell as a value.
        batch_size_bytes: The bytes read per block (memory per step grows with it); a longer line
            grows its block.
    """
    from dmlops.data.ingest import ingest as run_ingest

    result = run_ingest(
        source, dataset.path, quarantine.path,
        file_format=file_format, schema=schema_json or None, max_bad_fraction=max_bad_fraction,
        delimiter=delimiter or None, null_values=null_values, batch_size_bytes=batch_size_bytes,
        progress=False,
    )
    dataset.metadata.update(result.metadata())
    quarantine.metadata.update({
        "rows": result.rows_quarantined, "reasons": result.quarantine_reasons, "source_uris":
        [item["uri"] for item in result.sources],
    })
    with open(report.path, "w") as handle:
        handle.write(result.to_markdown())
