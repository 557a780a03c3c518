"""Who decides the session: spark-submit / the cluster over the YAML; the shared lake rule.

The suite shares one local SparkContext (tests/conftest.py) and a process can hold only
one, so fresh launches are tested through the pure :func:`session_plan` and a fake
builder; the real spark-submit path runs in tests/cluster/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from vlsafety.config import LakeConfig, SparkConfig, load_config
from vlsafety.lake import Lake, LakeNotSharedError, check_shared_root
from vlsafety.spark import (
    REQUIRED_CONF,
    get_spark,
    is_local_master,
    launcher_conf,
    session_master,
    session_plan,
)

CLUSTER = "spark://10.0.0.1:7077"


# ----------------------------------------------------------------- session_plan
def test_fresh_launch_uses_the_yaml_master_and_settings() -> None:
    cfg = SparkConfig(master="local[3]", shuffle_partitions=5, driver_memory="3g")
    plan = session_plan(cfg, None)
    assert plan.master == plan.effective_master == "local[3]"
    assert plan.conf["spark.sql.shuffle.partitions"] == "5"
    assert plan.conf["spark.driver.memory"] == "3g"
    assert plan.conf["spark.driver.bindAddress"] == "127.0.0.1"  # local: loopback only
    assert plan.kept == {}
    # a non-local YAML master gets no loopback binding
    remote = session_plan(SparkConfig(master="local-cluster[1,1,512]"), None)
    assert remote.master == "local-cluster[1,1,512]"
    assert "spark.driver.bindAddress" not in remote.conf


def test_launcher_master_and_settings_win_over_the_yaml() -> None:
    cfg = SparkConfig(
        master="local[*]",
        shuffle_partitions=4,
        driver_memory="8g",
        conf={"spark.executor.memory": "16g", "spark.sql.files.maxRecordsPerFile": "1000"},
    )
    launcher = {
        "spark.master": CLUSTER,
        "spark.sql.shuffle.partitions": "400",
        "spark.executor.memory": "4g",
        "spark.sql.session.timeZone": "Europe/Paris",
    }
    plan = session_plan(cfg, launcher)
    assert plan.master is None  # the builder is not told a master
    assert plan.effective_master == CLUSTER
    assert plan.kept["spark.sql.shuffle.partitions"] == "400"
    assert plan.kept["spark.executor.memory"] == "4g"
    assert "spark.sql.shuffle.partitions" not in plan.conf
    # what the launcher left open, the YAML fills in
    assert plan.conf["spark.sql.files.maxRecordsPerFile"] == "1000"
    # correctness settings are not negotiable (delta-rs reads what Spark writes)
    for key, value in REQUIRED_CONF.items():
        assert plan.conf[key] == value
    # the driver JVM already runs: its memory is spark-submit's to set
    assert "spark.driver.memory" not in plan.conf
    assert plan.kept["spark.driver.memory"] == "the launcher's default"
    assert "spark.driver.bindAddress" not in plan.conf  # not local


def test_is_local_master() -> None:
    assert is_local_master("local") and is_local_master("local[2]")
    assert is_local_master("local[*]") and is_local_master("local[*, 4]")  # Databricks single node
    assert not is_local_master("local-cluster[1,2,1024]")
    assert not is_local_master(CLUSTER) and not is_local_master("yarn")
    assert not SparkConfig(master="local-cluster[1,2,1024]").is_local
    assert SparkConfig(master="local[2]").is_local


# --------------------------------------------------------- an existing session
@pytest.fixture()
def restore_conf(spark: Any) -> Iterator[None]:
    keys = [
        "spark.sql.session.timeZone",
        "spark.sql.files.maxRecordsPerFile",
        "spark.sql.shuffle.partitions",
        "spark.sql.execution.arrow.maxRecordsPerBatch",
    ]
    before = {k: spark.conf.get(k, None) for k in keys}
    yield
    for key, value in before.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


@pytest.mark.usefixtures("restore_conf")
def test_existing_session_keeps_its_master_and_gets_runtime_settings(spark: Any) -> None:
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    cfg = SparkConfig(
        master=CLUSTER,  # must not reach the session that already runs
        shuffle_partitions=7,
        driver_memory="16g",
        conf={"spark.sql.files.maxRecordsPerFile": "123", "spark.executor.memory": "9g"},
    )
    got = get_spark(cfg)
    assert got is spark
    assert session_master(got) == "local[2]"
    assert got.conf.get("spark.sql.session.timeZone") == "UTC"  # required: reapplied
    assert got.conf.get("spark.sql.files.maxRecordsPerFile") == "123"  # runtime: applied
    # the session's own launch settings win (the test fixture set 2 partitions)
    assert got.conf.get("spark.sql.shuffle.partitions") == "2"
    # static settings cannot change at runtime: skipped, not an error
    assert got.sparkContext.getConf().get("spark.executor.memory", None) != "9g"
    assert got.sparkContext.getConf().get("spark.driver.memory") == "2g"


def test_launcher_conf_sees_the_running_context(spark: Any) -> None:
    conf = launcher_conf()
    assert conf is not None and conf["spark.master"] == "local[2]"
    assert session_plan(SparkConfig(master=CLUSTER), conf).master is None


class _FakeBuilder:
    """Records what get_spark tells the builder (no second SparkContext in-process)."""

    def __init__(self) -> None:
        self.masters: list[str] = []
        self.conf: dict[str, str] = {}

    def appName(self, name: str) -> _FakeBuilder:  # noqa: N802 - pyspark's spelling
        return self

    def master(self, master: str) -> _FakeBuilder:
        self.masters.append(master)
        return self

    def config(self, key: str, value: str) -> _FakeBuilder:
        self.conf[key] = value
        return self

    def getOrCreate(self) -> Any:  # noqa: N802
        class _SC:
            master = "yarn"

            def setLogLevel(self, level: str) -> None:  # noqa: N802
                pass

        class _Session:
            sparkContext = _SC()

        return _Session()


@pytest.mark.parametrize(
    ("launcher", "expected_masters"),
    [
        ({"spark.master": "yarn", "spark.sql.shuffle.partitions": "64"}, []),  # spark-submit
        (None, ["local[*]"]),  # vlsafety launches Spark itself
    ],
)
def test_builder_gets_the_yaml_master_only_on_a_fresh_launch(
    monkeypatch: pytest.MonkeyPatch, launcher: dict[str, str] | None, expected_masters: list[str]
) -> None:
    import pyspark.sql

    import vlsafety.spark as spark_mod

    builder = _FakeBuilder()
    monkeypatch.setattr(spark_mod, "_existing_session", lambda: None)
    monkeypatch.setattr(spark_mod, "launcher_conf", lambda: launcher)
    monkeypatch.setattr(pyspark.sql.SparkSession, "builder", builder)
    get_spark(SparkConfig(master="local[*]", shuffle_partitions=3))
    assert builder.masters == expected_masters
    if launcher is not None:
        assert "spark.sql.shuffle.partitions" not in builder.conf  # spark-submit's 64 stays
        assert "spark.driver.host" not in builder.conf
    else:
        assert builder.conf["spark.sql.shuffle.partitions"] == "3"
        assert builder.conf["spark.driver.host"] == "127.0.0.1"


# ------------------------------------------------------------ shared lake rule
@pytest.mark.parametrize(
    "root",
    ["lake", "/data/lake", "file:///data/lake"],
)
@pytest.mark.parametrize("master", [CLUSTER, "yarn", "local-cluster[1,2,1024]"])
def test_local_root_with_a_cluster_master_is_refused(root: str, master: str) -> None:
    with pytest.raises(LakeNotSharedError) as info:
        check_shared_root(root, master)
    message = str(info.value)
    assert "\n" not in message
    assert root in message and master in message and "lake.shared" in message
    check_shared_root(root, master, shared=True)  # declared shared: accepted


@pytest.mark.parametrize(
    "root",
    ["s3://bucket/lake", "abfss://c@acct.dfs.core.windows.net/lake", "gs://b/l", "dbfs:/lake"],
)
def test_shared_roots_and_local_masters_pass(root: str) -> None:
    check_shared_root(root, CLUSTER)
    check_shared_root("/dbfs/mnt/lake", CLUSTER)  # Databricks mounts every node sees
    check_shared_root("/Volumes/main/default/lake", CLUSTER)
    check_shared_root("/data/lake", "local[2]")
    check_shared_root("/data/lake", "local")


def test_lake_from_config_checks_the_session_master(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vlsafety.spark as spark_mod

    lake = Lake.from_config(LakeConfig(root=str(tmp_path / "lake")), spark)  # local[2]: fine
    assert lake.spark is spark
    monkeypatch.setattr(spark_mod, "session_master", lambda s: CLUSTER)
    with pytest.raises(LakeNotSharedError):
        Lake.from_config(LakeConfig(root=str(tmp_path / "lake")), spark)
    shared = Lake.from_config(LakeConfig(root=str(tmp_path / "lake"), shared=True), spark)
    assert shared.root == str((tmp_path / "lake").resolve())
    Lake.from_config(LakeConfig(root=str(tmp_path / "lake")), None)  # no session, no check


def test_lake_shared_is_a_validated_config_key(tmp_path: Path) -> None:
    from vlsafety.config import ConfigError

    assert load_config(None, ["lake.shared=true"]).lake.shared is True
    assert load_config(None, []).lake.shared is False
    with pytest.raises(ConfigError, match=r"lake\.shared: expected true/false"):
        load_config(None, ["lake.shared=maybe"])


def test_cli_refuses_a_local_lake_on_a_cluster_with_one_line(
    spark: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import vlsafety.spark as spark_mod
    from vlsafety.cli import main

    root = tmp_path / "lake"
    Lake(root).write(pa.table({"id": ["a"]}), "t", "append")
    Lake(root).write(pa.table({"id": ["b"]}), "t", "append")
    monkeypatch.setattr(spark_mod, "session_master", lambda s: CLUSTER)
    rc = main(["--lake", str(root), "diff", "t@0", "t@1", "--json"])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlsafety: error: lake.root:")
    assert "lake.shared" in lines[0] and out == ""
    rc = main(["--lake", str(root), "--set", "lake.shared=true", "diff", "t@0", "t@1", "--json"])
    assert rc == 0, capsys.readouterr().err
