"""The main file of dmlops's SparkApplications: ``spark_driver.py <operation> <arguments as JSON text>``.

spark-submit runs it in the driver pod (the spark image keeps it at
:data:`dmlops.data.spark_application.DRIVER_SCRIPT`); it runs the Spark engine's entry point
``python -m dmlops.data.spark <operation> <arguments.json>`` in this process, whose SparkSession then takes
the master and executors spark-submit configured.
"""

from __future__ import annotations

import json
import sys

from dmlops.data.spark_application import run_entry_point


def main(argv: list[str]) -> None:
    """Parse ``<operation> <arguments JSON>`` and run the job."""
    if len(argv) != 2:
        raise SystemExit(f"usage: spark_driver.py <operation> <arguments as JSON text>; got {len(argv)} arguments")
    operation, arguments = argv
    run_entry_point(operation, json.loads(arguments))


if __name__ == "__main__":
    main(sys.argv[1:])
