"""The Spark engine of dmlops's data operations (``engine="spark"``), embedded ``local[*]`` or a cluster's.

Each operation gives the report the DuckDB engine gives: Spark measures (counts, statistics, exact
quantiles, bins) and the DuckDB engine's code builds the report from those values. User expressions are
Spark SQL (:mod:`dmlops.data.engines` says how the dialects differ), checked by
:mod:`dmlops.data.spark.sandbox` before they run.

A job runs one operation in its own process, as a SparkApplication's driver does::

    python -m dmlops.data.spark <operation> <arguments.json>

- ``operation``: the name of the data component: ``derive_columns``, ``split_by_time``, ``infer_schema``,
  ``validate``, ``compare``, ``running_means`` or ``feast_training_set``.
- ``arguments.json``: one JSON object, the component's inputs and outputs by their names. An artifact
  (``Input[...]`` or ``Output[...]``) is the path or URI (``s3://``, ``gs://``, ``minio://``) of its file;
  parameters are their values, defaults as in the component. Inputs are read from their URIs and
  outputs written to theirs.
- Outputs: each output artifact's file, as the component writes it; and, where ``arguments`` has
  ``"metadata"`` (a path or URI), a JSON object with the metadata the component records for each output
  artifact (``{"output": {...}, "quarantine": {...}}``), its metrics (``"metrics": {name: value}``) and its
  return values (``"outputs": {name: value}``).
- Exit status 0 on success; on failure a message on stderr and status 1 (a ``validate`` whose findings
  reach ``fail_on`` fails after writing its report and metadata, as the component does); 2 for a wrong
  command line.
"""
