"""The one SparkSession factory.

``local[*]`` by default; a cluster master and extra Spark conf come from
:class:`~vlsafety.config.SparkConfig`. On local masters the driver binds to
127.0.0.1 and Python workers run the current interpreter, so a venv just works.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from vlsafety.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["get_spark", "has_native_delta", "is_local_master", "stop_spark"]

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def is_local_master(master: str) -> bool:
    """``local``, ``local[4]``, ``local[*]`` — but not ``local-cluster[...]``."""
    return master == "local" or master.startswith("local[")


def _base_conf(cfg: SparkConfig) -> dict[str, str]:
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.arrow_batch_size),
        "spark.python.worker.reuse": "true",
        # delta-rs reads what Spark writes: INT96 timestamps are deprecated in Delta.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.ui.showConsoleProgress": "true" if cfg.progress_bar else "false",
        "spark.driver.memory": cfg.driver_memory,
    }
    if is_local_master(cfg.master):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.ui.enabled"] = "false"
    conf.update(cfg.conf)
    return conf


def get_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Return the active SparkSession or create one from ``cfg``.

    The first call decides the session; later calls return it (Spark allows one
    active session per driver), so tests and the CLI share one JVM.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    cfg = cfg or SparkConfig()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if cfg.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(cfg.master).appName(cfg.app_name)
    for key, value in _base_conf(cfg).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def stop_spark() -> None:
    """Stop the active session, if any."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def has_native_delta(spark: SparkSession) -> bool:
    """Whether this session reads/writes ``format("delta")`` itself (Databricks, delta-spark).

    Databricks runtimes always do; elsewhere both the SQL extension and the
    ``io.delta.tables.DeltaTable`` class must be present.
    """
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if _DELTA_EXTENSION not in extensions:
        return False
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")  # type: ignore[union-attr]
    except Exception:
        return False
    return True
