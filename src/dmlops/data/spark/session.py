"""The one SparkSession of a process, set up for dmlops' data operations.

``local[*]`` (embedded, every core of this machine) unless ``DMLOPS_SPARK_MASTER`` names another master
(a SparkApplication's driver is given its master by spark-submit, which this respects). The session reads
and writes times in UTC, writes Parquet timestamps as microseconds (not Spark's legacy INT96), logs
errors only (an embedded session from its start: its JVM gets a log4j2 configuration at ERROR) and starts
no web UI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dmlops.data.errors import DataError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MASTER_VARIABLE = "DMLOPS_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"
# Small shuffles on one machine: Spark's default of 200 partitions costs more in task overhead than
# the work of a flights-sized aggregate.
LOCAL_SHUFFLE_PARTITIONS = 8

_CONFIG = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


# log4j2 configuration of an embedded session's JVM: errors only, to stderr.
_QUIET_LOG4J2 = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""


def _quiet_log_configuration() -> str:
    path = Path(tempfile.gettempdir()) / "dmlops-spark-log4j2.properties"
    if not path.exists() or path.read_text() != _QUIET_LOG4J2:
        path.write_text(_QUIET_LOG4J2)
    return str(path)


def spark_available() -> str:
    """Why the Spark engine cannot run here ("" when it can): pyspark or a Java runtime missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed: pip install 'dmlops[spark]'"
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not os.path.exists(java):
        return "no Java runtime: install one (Debian: apt-get install default-jre-headless) or set JAVA_HOME"
    return ""


def spark_session() -> SparkSession:
    """The process's SparkSession, started on first use (master from ``DMLOPS_SPARK_MASTER``, else
    ``local[*]``; an existing session, e.g. a driver's, is reused)."""
    missing = spark_available()
    if missing:
        raise DataError(f"engine='spark' cannot run: {missing}")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = os.environ.get(MASTER_VARIABLE, "") or DEFAULT_MASTER
    builder = SparkSession.builder.appName("dmlops").master(master)
    for key, value in _CONFIG.items():
        builder = builder.config(key, value)
    if master.startswith("local"):
        builder = builder.config("spark.sql.shuffle.partitions", str(LOCAL_SHUFFLE_PARTITIONS))
        builder = builder.config("spark.driver.extraJavaOptions",
                                 f"-Dlog4j2.configurationFile={_quiet_log_configuration()}")
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
