"""The main file of dmlops's SparkApplications: ``spark_driver.py <operation> <arguments as JSON text>``.

spark-submit runs it in the driver pod (the spark image keeps it at
:data:`dmlops.data.spark_application.DRIVER_SCRIPT`); it runs the Spark engine's entry point
``python -m dmlops.data.spark <operation> <arguments.json>`` in this process. The engine's session starts
on the master in ``DMLOPS_SPARK_MASTER`` (else ``local[*]``): this script sets it to the master spark-submit
gave the driver, so the job runs on the executors the SparkApplication asked for.
"""

from __future__ import annotations

import json
import os
import sys

from dmlops.data.spark_application import run_entry_point

MASTER_VARIABLE = "DMLOPS_SPARK_MASTER"  # read by dmlops.data.spark.session


def submitted_master() -> str:
    """The master spark-submit gave this process ("" when spark-submit did not start it)."""
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # set by spark-submit's PythonRunner
        return ""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, whose configuration SparkConf reads
    return SparkConf().get("spark.master", "")


def main(argv: list[str]) -> None:
    """Parse ``<operation> <arguments JSON>`` and run the job on spark-submit's master."""
    if len(argv) != 2:
        raise SystemExit(f"usage: spark_driver.py <operation> <arguments as JSON text>; got {len(argv)} arguments")
    operation, arguments = argv
    master = submitted_master()
    if master:
        os.environ[MASTER_VARIABLE] = master
    run_entry_point(operation, json.loads(arguments))


if __name__ == "__main__":
    main(sys.argv[1:])
