"""Components for personal data: find it, pseudonymize it, erase one data subject everywhere."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pii_scan(
    dataset: Input[Dataset],
    report: Output[Artifact],
    markdown: Output[Markdown],
    sample_values: int = 200,
    min_share: float = 0.5,
):
    """Report the columns of a Parquet dataset that look like personal data: Presidio's pattern recognizers
    (e-mail, phone, credit card, IBAN, IP, US SSN, ...; offline, with a blank spaCy pipeline, so no NER)
    over sampled values, and the column names (name, e-mail, phone, address, birth, ...).

    Args:
        dataset: The Parquet dataset to scan.
        report: JSON: per flagged column the entity types found (share of the sample), the entity its
            name suggests and the suggested pii mark; ``schema_marks`` to merge into the schema document.
            No values. Metadata: pii_columns.
        markdown: The findings as a table.
        sample_values: Distinct values of each text column analyzed.
        min_share: A column is flagged when at least this share of its sampled values holds one entity type.
    """
    import json

    from dmlops.privacy.scan import scan

    result = scan(dataset.path, sample_values=sample_values, min_share=min_share)
    with open(report.path, "w", encoding="utf-8") as file:
        json.dump({**result.to_dict(), "schema_marks": result.schema_marks()}, file, indent=2)
    with open(markdown.path, "w", encoding="utf-8") as file:
        file.write(result.markdown())
    report.metadata["pii_columns"] = [finding.column for finding in result.findings]
    print(result.markdown())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pseudonymize(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    output: Output[Dataset],
):
    """Apply the schema's pii marks to a Parquet dataset: pseudonymize (keyed HMAC-SHA256, deterministic,
    so joins and Feast entity keys keep working), drop, mask or generalize each marked column.

    The key comes from the environment variable DMLOPS_PSEUDONYM_KEY (or the file DMLOPS_PSEUDONYM_KEY_FILE
    names), set from a Kubernetes Secret; it is never a parameter. When the schema marks the dataset
    "sensitive" ({"key_id": ..., "columns": [...]}), the output is written with Parquet modular encryption
    under that master key of the key file DMLOPS_PARQUET_KEYS_FILE (a Secret mounted as a file); an
    encrypted input is read the same way.

    Args:
        dataset: The Parquet dataset (a dataset or quarantine file) holding personal data.
        schema: The schema JSON whose columns carry "pii": "pseudonymize" | "drop" | "mask" | "generalize"
            (or {"action": ..., "keep" | "step" | "unit": ...}).
        output: The same rows with the marks applied, as Parquet. Metadata: rows, actions (column ->
            action), columns_missing (marked columns the dataset lacks) and encrypted.
    """
    from dmlops.privacy.pseudonymize import pseudonymize as apply

    result = apply(dataset.path, output.path, schema.path)
    output.metadata.update(result.metadata())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def erase_subject(
    column: str,
    locations: list,
    receipt: Output[Artifact],
    markdown: Output[Markdown],
    feast_store: dict = {},
    registry: str = "",
):
    """Erase one data subject: remove every row whose ``column`` holds the subject's value or its pseudonym
    (also inside the prediction log's JSON ``features``) from the Parquet files at ``locations`` and, with
    ``feast_store``, the subject's entity rows from its online store (SQLite or Redis), and write a
    receipt. The step fails if any matching row remains. The receipt also lists the registered model
    versions whose train or eval dataset (the sha256 ``register_model`` recorded) held the subject before
    erasure: they are not deleted and must be retrained.

    The subject's value is read from the environment variable DMLOPS_ERASURE_SUBJECT (a Secret made for
    the request), never a parameter, so the run's metadata never holds it; the pseudonym key from
    DMLOPS_PSEUDONYM_KEY(_FILE).

    Args:
        column: The column that names the subject, e.g. "passenger_email".
        locations: Parquet files or folders (local, gs://, s3://, minio://) that may hold the subject: the
            datasets of a run's lineage, Feast offline sources, prediction logs, quarantine files.
        receipt: JSON: per file the rows before, removed and remaining and the sha256 before and after;
            a sha256 of the subject, not its value; ``models``: the registered versions trained or
            evaluated on data that held the subject (name, version, aliases, run_id, dataset role, store),
            to retrain. Metadata: rows_removed, files, remaining, models_to_retrain.
        markdown: The receipt as a table.
        feast_store: The Feast store spec (feast_store's output) whose online store holds entities keyed
            by ``column``; {} for none. Its offline sources go in ``locations``.
        registry: The MLflow registry whose versions are checked; "" takes $MLFLOW_TRACKING_URI, else the
            local SQLite store.
    """
    import json
    import os

    from dmlops.privacy.erasure import erase_subject as erase

    result = erase(os.environ.get("DMLOPS_ERASURE_SUBJECT", ""), column, [str(location) for location in locations],
                   feast_store or None, registry)
    with open(receipt.path, "w", encoding="utf-8") as file:
        json.dump(result.to_dict(), file, indent=2)
    with open(markdown.path, "w", encoding="utf-8") as file:
        file.write(result.markdown())
    receipt.metadata.update({"rows_removed": result.rows_removed, "files": len(result.stores),
                             "remaining": result.remaining,
                             "models_to_retrain": [f"{model['name']}/{model['version']}" for model in result.models]})
    print(result.markdown())
    if result.remaining:
        raise RuntimeError(f"{result.remaining} rows of the subject remain after erasure; see the receipt")
