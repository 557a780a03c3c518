"""The one SparkSession factory.

**The cluster decides the cluster.** When Spark was launched before vlsafety runs —
``spark-submit`` (its JVM holds the master and ``--conf`` settings), a Databricks
notebook or job, or any session already running in this process — its master and
settings win: the builder is never given the YAML master, and the YAML only fills in
settings the launcher left open. The YAML master (``local[*]`` by default) applies only
when vlsafety launches Spark itself. Settings that can change at runtime (``spark.sql.*``:
shuffle partitions, Arrow batch size, session time zone, parquet timestamp type) are set
on an existing session; static ones (driver memory, ...) cannot be and are logged as
skipped. :func:`session_plan` decides all of this as a pure function.

On local masters the driver binds to 127.0.0.1 and Python workers run the current
interpreter, so a venv just works.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlsafety.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "SessionPlan",
    "get_spark",
    "has_native_delta",
    "is_local_master",
    "launcher_conf",
    "session_master",
    "session_plan",
    "stop_spark",
]

log = logging.getLogger(__name__)

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"

#: Settings the lake and the Arrow UDFs need to be correct, not merely fast: set even
#: where the launcher chose otherwise (delta-rs reads what Spark writes; INT96
#: timestamps are deprecated in Delta; all timestamps are UTC).
REQUIRED_CONF: Mapping[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
}


def is_local_master(master: str) -> bool:
    """``local``, ``local[4]``, ``local[*]`` — but not ``local-cluster[...]``."""
    return master == "local" or master.startswith("local[")


def _base_conf(cfg: SparkConfig, *, local: bool) -> dict[str, str]:
    conf = {
        **REQUIRED_CONF,
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.arrow_batch_size),
        "spark.python.worker.reuse": "true",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.ui.showConsoleProgress": "true" if cfg.progress_bar else "false",
        "spark.driver.memory": cfg.driver_memory,
    }
    if local:
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.ui.enabled"] = "false"
    conf.update(cfg.conf)
    return conf


@dataclass(frozen=True)
class SessionPlan:
    """How to get the session: what the builder is told, and what the launcher kept.

    Attributes:
        master: the master to give the builder; ``None`` when the launcher decided it.
        effective_master: the master the session runs on (the launcher's or the YAML's).
        conf: settings to apply (builder conf for a new session; ``spark.conf.set`` on
            an existing one, where the key is modifiable at runtime).
        kept: settings the launcher set to another value, left as the launcher set them.
    """

    master: str | None
    effective_master: str
    conf: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return "the config" if self.master is not None else "the launcher (spark-submit/cluster)"


def session_plan(cfg: SparkConfig, launcher: Mapping[str, str] | None = None) -> SessionPlan:
    """Decide the master and the settings for a session (pure; see the module docstring).

    Args:
        cfg: the project's Spark settings (YAML).
        launcher: settings already decided by whoever launched Spark — spark-submit's
            ``--master``/``--conf`` or a running SparkContext's conf; ``None`` (or
            without ``spark.master``) when vlsafety launches Spark itself.
    """
    launched = launcher is not None and "spark.master" in launcher
    master = launcher["spark.master"] if launcher is not None and launched else cfg.master
    conf: dict[str, str] = {}
    kept: dict[str, str] = {}
    for key, value in _base_conf(cfg, local=is_local_master(master)).items():
        theirs = launcher.get(key) if launched and launcher is not None else None
        if launched and key == "spark.driver.memory":
            # the driver JVM is already running: only spark-submit --driver-memory counts
            if theirs != value:
                kept[key] = theirs or "the launcher's default"
            continue
        if theirs is not None and theirs != value and key not in REQUIRED_CONF:
            kept[key] = theirs  # spark-submit's / the cluster's setting wins
        else:
            conf[key] = value
    return SessionPlan(None if launched else cfg.master, master, conf, kept)


def launcher_conf() -> dict[str, str] | None:
    """Settings of a Spark launched before us, or ``None`` when there is none.

    A running SparkContext in this process (Databricks, a notebook, an earlier call), or
    spark-submit: it starts the JVM first and hands the Python driver its port in
    ``PYSPARK_GATEWAY_PORT``; the JVM's system properties hold ``spark.master`` and every
    ``--conf``, which ``SparkConf()`` loads once connected to it.
    """
    from pyspark import SparkConf, SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        return dict(sc.getConf().getAll())
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    SparkContext._ensure_initialized()  # connect to spark-submit's JVM (starts nothing)
    conf = SparkConf()
    return dict(conf.getAll()) if conf.contains("spark.master") else None


def _existing_session() -> SparkSession | None:
    """The active session of this thread, else the process' default one."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    default = SparkSession._instantiatedSession
    alive = default is not None and getattr(default._sc, "_jsc", None) is not None
    return default if alive else None


def session_master(spark: SparkSession) -> str:
    """The master ``spark`` runs on (``"remote"`` for a Spark Connect session)."""
    try:
        return str(spark.sparkContext.master)
    except Exception:  # Spark Connect has no SparkContext
        return str(spark.conf.get("spark.master", None) or "remote")


def _adopt(spark: SparkSession, cfg: SparkConfig) -> None:
    """Apply the runtime-modifiable settings of ``cfg`` to an existing session."""
    try:
        launcher: dict[str, str] = dict(spark.sparkContext.getConf().getAll())
    except Exception:  # Spark Connect: only the session conf is visible
        launcher = {"spark.master": session_master(spark)}
    plan = session_plan(cfg, launcher)
    applied, skipped = [], []
    for key, value in plan.conf.items():
        if not spark.conf.isModifiable(key):
            if launcher.get(key) != value:
                skipped.append(key)
            continue
        if spark.conf.get(key, None) != value:
            spark.conf.set(key, value)
            applied.append(f"{key}={value}")
    log.debug(
        "Spark: using the existing session on %s; set %s; static, not changed: %s; "
        "kept the launcher's: %s",
        plan.effective_master,
        ", ".join(applied) or "nothing",
        ", ".join(skipped) or "none",
        ", ".join(f"{k}={v}" for k, v in plan.kept.items()) or "none",
    )


def get_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Return the existing SparkSession (with ``cfg``'s runtime settings) or start one.

    The first session decides the master (Spark allows one SparkContext per driver),
    so tests and the CLI share one JVM; see the module docstring for who wins.
    """
    from pyspark.sql import SparkSession

    cfg = cfg or SparkConfig()
    existing = _existing_session()
    if existing is not None:
        _adopt(existing, cfg)
        return existing
    plan = session_plan(cfg, launcher_conf())
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if plan.master is not None and is_local_master(plan.master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(cfg.app_name)
    if plan.master is not None:
        builder = builder.master(plan.master)
    for key, value in plan.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    log.info("Spark master: %s (from %s)", session_master(spark), plan.source)
    if plan.kept:
        log.info(
            "Spark: kept the launcher's %s", ", ".join(f"{k}={v}" for k, v in plan.kept.items())
        )
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
