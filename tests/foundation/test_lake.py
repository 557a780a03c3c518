from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlsafety.lake import (
    Lake,
    SchemaMismatchError,
    TableNotFoundError,
    commit_context,
    parse_table_ref,
)


def _rows(lake: Lake, table: str, version: int | None = None) -> list[tuple]:
    return sorted(tuple(r) for r in lake.read(table, version=version).collect())


def test_spark_pandas_arrow_round_trips(lake: Lake, spark) -> None:
    sdf = spark.createDataFrame(
        [("a", 1.0, [0.1, 0.2], b"\x00\x01"), ("b", 2.0, [0.3, 0.4], b"\x02")],
        "id string, x double, emb array<double>, img binary",
    )
    assert lake.write(sdf, "t", "append", keys=["id"]) == 0
    pdf = pd.DataFrame({"id": ["c"], "x": [3.0], "emb": [[0.5, 0.6]], "img": [b"\x03"]})
    assert lake.write(pdf, "t", "append") == 1
    tbl = pa.table({"id": ["d"], "x": [4.0], "emb": [[0.7]], "img": [b""]})
    assert lake.write(tbl, "t", "append") == 2
    got = lake.read_arrow("t").sort_by("id").to_pydict()
    assert got["id"] == ["a", "b", "c", "d"]
    assert got["emb"][1] == pytest.approx([0.3, 0.4])
    assert got["img"][0] == b"\x00\x01"
    assert [r.id for r in lake.read("t").orderBy("id").collect()] == ["a", "b", "c", "d"]
    assert lake.tables() == ["t"]
    assert lake.version("t") == 2
    assert lake.keys("t") == ["id"]


def test_overwrite_and_time_travel(lake: Lake) -> None:
    lake.write(pa.table({"id": ["a", "b"], "v": [1, 2]}), "t", "append", keys=["id"])
    time.sleep(0.05)
    lake.write(pa.table({"id": ["z"], "v": [9]}), "t", "overwrite")
    assert _rows(lake, "t") == [("z", 9)]
    assert _rows(lake, "t", version=0) == [("a", 1), ("b", 2)]
    hist = lake.history("t")
    assert [h["version"] for h in hist] == [1, 0]
    assert [h["operation"] for h in hist] == ["OVERWRITE", "APPEND"]
    # as of v0's commit timestamp we see v0; as of now, v1
    ts0 = hist[1]["timestamp"]
    assert lake.read_arrow("t", timestamp=ts0).num_rows == 2
    assert sorted(lake.read("t", timestamp=ts0).toPandas()["id"]) == ["a", "b"]
    assert lake.read_arrow("t", timestamp=hist[0]["timestamp"]).num_rows == 1
    with pytest.raises(TableNotFoundError):
        lake.read_arrow("t", timestamp="2001-01-01T00:00:00")
    with pytest.raises(TableNotFoundError, match="no version 7"):
        lake.read_arrow("t", version=7)
    # overwrite may change the schema
    lake.write(pa.table({"id": ["q"], "v": [1], "extra": [0.5]}), "t", "overwrite")
    assert lake.schema("t").names == ["id", "v", "extra"]
    assert lake.schema("t", version=0).names == ["id", "v"]


def test_merge_inserts_only_new_keys(lake: Lake, spark) -> None:
    lake.write(pa.table({"id": ["a", "b"], "v": [1, 2]}), "t", "merge", keys=["id"])
    # pandas input; duplicate key within the batch keeps its first row
    v = lake.write(pd.DataFrame({"id": ["b", "c", "c"], "v": [20, 3, 30]}), "t", "merge")
    assert v == 1
    assert _rows(lake, "t") == [("a", 1), ("b", 2), ("c", 3)]
    # Spark input, composite keys remembered from creation are reused
    sdf = spark.createDataFrame([("c", 99), ("d", 4)], "id string, v long")
    lake.write(sdf, "t", "merge")
    assert _rows(lake, "t") == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    # a merge that adds nothing still commits (a version with 0 rows) and loses nothing
    lake.write(pa.table({"id": ["a"], "v": [5]}), "t", "merge")
    assert lake.history("t")[0]["rows"] == 0
    assert len(_rows(lake, "t")) == 4


def test_merge_composite_keys(lake: Lake) -> None:
    lake.write(
        pa.table({"s": ["x", "x"], "m": ["m1", "m2"], "p": [0.1, 0.2]}),
        "j",
        "merge",
        keys=["s", "m"],
    )
    lake.write(pa.table({"s": ["x", "y"], "m": ["m1", "m1"], "p": [0.9, 0.3]}), "j", "merge")
    assert sorted(lake.read_arrow("j").to_pylist(), key=lambda r: (r["s"], r["m"])) == [
        {"s": "x", "m": "m1", "p": 0.1},
        {"s": "x", "m": "m2", "p": 0.2},
        {"s": "y", "m": "m1", "p": 0.3},
    ]


def test_merge_needs_keys(lake: Lake) -> None:
    with pytest.raises(ValueError, match="needs key columns"):
        lake.write(pa.table({"id": ["a"]}), "t", "merge")
    with pytest.raises(ValueError, match="key column"):
        lake.write(pa.table({"id": ["a"]}), "t", "merge", keys=["nope"])
    assert not lake.exists("t")


def test_history_carries_run_id_and_command(lake: Lake) -> None:
    with commit_context(run_id="run-123", command="vlsafety build"):
        lake.write(pa.table({"id": ["a"]}), "t", "append", metadata={"stage": "ingest"})
    lake.write(pa.table({"id": ["b"]}), "t", "append")
    hist = lake.history("t")
    assert hist[1]["run_id"] == "run-123"
    assert hist[1]["command"] == "vlsafety build"
    assert hist[1]["metadata"]["stage"] == "ingest"
    assert hist[1]["rows"] == 1
    assert hist[0]["run_id"] is None


def test_failed_spark_write_leaves_previous_version(lake: Lake, spark) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    lake.write(pa.table({"id": [1, 2]}), "t", "append")

    @F.udf(LongType())
    def boom(x):  # type: ignore[no-untyped-def]
        if x == 7:
            raise RuntimeError("model exploded")
        return x

    df = spark.range(0, 20, numPartitions=2).select(boom("id").alias("id"))
    with pytest.raises(Exception, match="model exploded"):
        lake.write(df, "t", "append")
    assert lake.version("t") == 0
    assert _rows(lake, "t") == [(1,), (2,)]
    # the failed write's staged files are gone: only the committed stage folder remains
    stages = list((Path(lake.path("t")) / "data").iterdir())
    assert len(stages) == 1


def test_schema_mismatch_is_refused_before_commit(lake: Lake) -> None:
    lake.write(pa.table({"id": ["a"], "v": [1]}), "t", "append")
    with pytest.raises(SchemaMismatchError, match="does not match its schema"):
        lake.write(pa.table({"id": ["b"], "v": ["not an int"]}), "t", "append")
    assert lake.version("t") == 0
    assert len(list((Path(lake.path("t")) / "data").iterdir())) == 1


def test_staged_files_are_checked(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    lake.write(pa.table({"id": ["a"]}), "t", "append")
    original = Lake._stage_arrow

    def stage_with_intruder(self, data, table, mode, keys, exists, stage_rel):  # type: ignore[no-untyped-def]
        schema = original(self, data, table, mode, keys, exists, stage_rel)
        stage = Path(self.path(table)) / stage_rel
        pq.write_table(pa.table({"other": [1.0]}), stage / "part-99999.parquet")
        return schema

    monkeypatch.setattr(Lake, "_stage_arrow", stage_with_intruder)
    with pytest.raises(SchemaMismatchError, match="part-99999"):
        lake.write(pa.table({"id": ["b"]}), "t", "append")
    assert lake.version("t") == 0


def test_add_actions_carry_stats(lake: Lake) -> None:
    from deltalake import DeltaTable

    lake.write(pa.table({"id": ["a", "b", "c"], "v": [3, 1, 2]}), "t", "append")
    actions = pa.table(DeltaTable(lake.path("t")).get_add_actions(flatten=True)).to_pydict()
    assert actions["num_records"] == [3]
    assert actions["min.v"] == [1] and actions["max.v"] == [3]


def test_idempotent_commit_adds_nothing(lake: Lake) -> None:
    data = pa.table({"id": ["a", "b"]})
    v1 = lake.write(data, "t", "append", idempotency_key="run-1/stage-ingest")
    v2 = lake.write(data, "t", "append", idempotency_key="run-1/stage-ingest")
    assert v1 == v2 == 0
    assert lake.read_arrow("t").num_rows == 2
    assert lake.write(data, "t", "append", idempotency_key="run-2/stage-ingest") == 1


def test_empty_write_creates_table_with_schema(lake: Lake, spark) -> None:
    df = spark.createDataFrame([], "id string, score double")
    assert lake.write(df, "empty", "append") == 0
    assert lake.read_arrow("empty").num_rows == 0
    assert lake.read("empty").columns == ["id", "score"]
    assert lake.read("empty").count() == 0


def test_racing_writers_end_clean(lake: Lake) -> None:
    lake.write(pa.table({"id": [0]}), "t", "append")
    errors: list[BaseException] = []
    versions: list[int] = []
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            versions.append(
                lake.write(pa.table({"id": [i * 10 + j for j in range(5)]}), "t", "append")
            )
        except BaseException as exc:  # a clean error is acceptable, corruption is not
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(versions) + len(errors) == 4
    assert sorted(versions) == list(range(1, len(versions) + 1))
    assert lake.version("t") == len(versions)
    assert lake.read_arrow("t").num_rows == 1 + 5 * len(versions)


def test_racing_table_creation(lake: Lake) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            lake.write(pa.table({"id": [i]}), "new", "append")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n_ok = 3 - len(errors)
    assert n_ok >= 1
    assert lake.read_arrow("new").num_rows == n_ok == lake.version("new") + 1


def test_bad_names_and_missing_tables(lake: Lake) -> None:
    for bad in ["", "Bad", "1abc", "a-b", "a/b", "../x", "x" * 65]:
        with pytest.raises(ValueError, match="bad table name"):
            lake.write(pa.table({"a": [1]}), bad)
    with pytest.raises(ValueError, match="bad write mode"):
        lake.write(pa.table({"a": [1]}), "t", "upsert")  # type: ignore[arg-type]
    with pytest.raises(TableNotFoundError, match="not found"):
        lake.read("nope")
    with pytest.raises(TableNotFoundError):
        lake.history("nope")
    assert parse_table_ref("benchmark@3") == ("benchmark", 3)
    assert parse_table_ref("benchmark") == ("benchmark", None)
    with pytest.raises(ValueError, match="must be an integer"):
        parse_table_ref("benchmark@x")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=4))
def test_merge_is_insert_if_absent(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[int]]
) -> None:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    expected: dict[int, int] = {}
    for b, keys in enumerate(batches):
        lake.write(
            pa.table(
                {"k": keys, "batch": [b] * len(keys)},
                schema=pa.schema([("k", pa.int64()), ("batch", pa.int64())]),
            ),
            "m",
            "merge",
            keys=["k"],
        )
        for k in keys:
            expected.setdefault(k, b)
    got = lake.read_arrow("m").to_pylist()
    assert len(got) == len(expected)
    assert {r["k"]: r["batch"] for r in got} == expected


def test_spark_merge_keeps_column_order_when_key_is_not_first(lake: Lake, spark) -> None:
    lake.write(pa.table({"v": [1], "id": ["a"]}), "t", "merge", keys=["id"])
    sdf = spark.createDataFrame([(2, "a"), (3, "b")], "v long, id string")
    lake.write(sdf, "t", "merge")
    assert sorted(lake.read_arrow("t").to_pylist(), key=lambda r: r["id"]) == [
        {"v": 1, "id": "a"},
        {"v": 3, "id": "b"},
    ]


def test_scratch_checkpoint_cuts_the_lineage_and_is_removed(lake: Lake) -> None:
    from pyspark.sql import functions as F

    from vlsafety.lake import Scratch

    assert lake.spark is not None
    scratch = Scratch(lake, "test")
    df = lake.spark.range(50).withColumn("sq", F.col("id") * F.col("id"))
    for _ in range(4):  # each step joins the previous one with itself
        df = scratch.checkpoint(df.join(df.select("id"), "id").withColumn("sq", F.col("sq") + 1))
        plan = df._jdf.queryExecution().toString()
        assert "Join" not in plan and "FileScan parquet" in plan
    assert sorted((r["id"], r["sq"]) for r in df.collect()) == [(i, i * i + 4) for i in range(50)]
    assert Path(scratch.path).is_dir() and Path(scratch.path).parent.name == "_staging"
    scratch.remove()
    assert not Path(scratch.path).exists()
