"""Component that ingests CSV, Parquet or JSON Lines from a file, glob or folder into one Parquet dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from dmlops.components.images import BASE_IMAGE


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
):
    """Ingest ``source`` (local path, file://, gs://, s3://, http(s)://, pkg://<package>/<path>; one file,
    a glob or a folder of CSV, Parquet or JSON Lines) into a Parquet ``dataset``. Rows that cannot be
    parsed or break ``schema_json`` (a dmlops schema document) go to ``quarantine`` with a reason; the
    step fails when more than ``max_bad_fraction`` of the rows are bad. ``delimiter`` "" sniffs it.
    """
    from dmlops.data.ingest import ingest as run_ingest

    result = run_ingest(
        source, dataset.path, quarantine.path,
        file_format=file_format, schema=schema_json or None, max_bad_fraction=max_bad_fraction,
        delimiter=delimiter or None, progress=False,
    )
    dataset.metadata.update(result.metadata())
    quarantine.metadata.update({
        "rows": result.rows_quarantined, "reasons": result.quarantine_reasons, "source_uris":
        [item["uri"] for item in result.sources],
    })
    with open(report.path, "w") as handle:
        handle.write(result.to_markdown())
