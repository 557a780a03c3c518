"""Lake roots beyond a local folder: object stores with delta-rs, dbfs:/ through Spark.

No cloud is reachable here, so object-store roots are tested at the seam: every delta-rs
entry point and Spark's parquet reader/writer are wrapped to record the URI and storage
options they are given, then redirected to a local mirror folder so the write really
happens. ``file://`` roots take the same object-store path for real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from vlsafety.lake import Lake, LakeError, TableNotFoundError, spark_uri


def test_spark_uri_spells_object_stores_for_hadoop() -> None:
    assert spark_uri("s3://b/lake/t/data/x") == "s3a://b/lake/t/data/x"
    assert spark_uri("s3a://b/lake") == "s3a://b/lake"
    assert spark_uri("abfss://c@a.dfs.core.windows.net/l") == "abfss://c@a.dfs.core.windows.net/l"
    assert spark_uri("gs://b/l") == "gs://b/l"
    assert spark_uri("file:///tmp/l") == "file:///tmp/l"
    assert spark_uri("/tmp/l") == "/tmp/l"


# ----------------------------------------------------------- object-store seam
@dataclass
class Calls:
    delta: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    create: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    handlers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    spark_writes: list[str] = field(default_factory=list)
    spark_reads: list[str] = field(default_factory=list)


def _install_seam(monkeypatch: pytest.MonkeyPatch, mirror_root: Path) -> Calls:
    """Record what delta-rs and Spark are handed; serve it from ``mirror_root``."""
    import deltalake
    import deltalake.fs
    import deltalake.transaction
    from pyspark.sql.readwriter import DataFrameReader, DataFrameWriter

    calls = Calls()
    real_table = deltalake.DeltaTable
    real_create = deltalake.transaction.create_table_with_add_actions
    real_handler = deltalake.fs.DeltaStorageHandler
    real_write = DataFrameWriter.parquet
    real_read = DataFrameReader.parquet

    def mirror(uri: str) -> str:
        assert not uri.startswith("dbfs:"), f"delta-rs was handed {uri}"
        scheme, rest = uri.split("://", 1)
        scheme = "s3" if scheme == "s3a" else scheme
        local = mirror_root / scheme / rest
        return f"file://{local}"

    def unmirror(uri: str) -> str:
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        scheme, rest = Path(path).relative_to(mirror_root).as_posix().split("/", 1)
        return f"{scheme}://{rest}"

    class SpyTable(real_table):  # type: ignore[misc, valid-type]
        def __init__(
            self, table_uri: str, version: int | None = None, storage_options: Any = None
        ) -> None:
            calls.delta.append((str(table_uri), dict(storage_options or {})))
            super().__init__(mirror(str(table_uri)), version=version)

        @staticmethod
        def is_deltatable(table_uri: str, storage_options: Any = None) -> bool:
            calls.delta.append((str(table_uri), dict(storage_options or {})))
            return bool(real_table.is_deltatable(mirror(str(table_uri))))

        def file_uris(self, *args: Any, **kwargs: Any) -> list[str]:
            return [unmirror(u) for u in super().file_uris(*args, **kwargs)]

    def spy_create(table_uri: str, *args: Any, storage_options: Any = None, **kw: Any) -> Any:
        calls.create.append((table_uri, dict(storage_options or {})))
        return real_create(mirror(table_uri), *args, **kw)

    class SpyHandler(real_handler):  # type: ignore[misc, valid-type]
        def __init__(self, table_uri: str, options: Any = None, known_sizes: Any = None) -> None:
            calls.handlers.append((table_uri, dict(options or {})))
            local = mirror(table_uri)
            Path(local[len("file://") :]).mkdir(parents=True, exist_ok=True)
            super().__init__(local, None, known_sizes)

    def spy_write(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.spark_writes.append(path)
        return real_write(self, mirror(path), *args, **kwargs)

    def spy_read(self: Any, *paths: str, **kwargs: Any) -> Any:
        calls.spark_reads.extend(paths)
        return real_read(self, *[mirror(p) for p in paths], **kwargs)

    monkeypatch.setattr(deltalake, "DeltaTable", SpyTable)
    monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", spy_create)
    monkeypatch.setattr(deltalake.fs, "DeltaStorageHandler", SpyHandler)
    monkeypatch.setattr(DataFrameWriter, "parquet", spy_write)
    monkeypatch.setattr(DataFrameReader, "parquet", spy_read)
    return calls


@pytest.mark.parametrize(
    ("root", "spark_scheme"),
    [
        ("s3://bucket/lake", "s3a"),
        ("abfss://box@acct.dfs.core.windows.net/lake", "abfss"),
        ("gs://bucket/lake", "gs"),
    ],
)
def test_object_store_roots_pass_storage_options_and_uris(
    root: str, spark_scheme: str, spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _install_seam(monkeypatch, tmp_path / "mirror")
    options = {"AWS_REGION": "eu-west-1", "AZURE_STORAGE_ACCOUNT_NAME": "acct", "TOKEN": "x"}
    lake = Lake(root, spark, storage_options=options)
    assert lake.engine == "delta-rs"

    first = spark.createDataFrame([("a", 1), ("b", 2)], "id string, v long")
    assert lake.write(first, "t", "merge", keys=["id"]) == 0  # create: Spark stages
    assert lake.write(pa.table({"id": ["c"], "v": [3]}), "t", "append") == 1  # arrow stages
    again = spark.createDataFrame([("a", 9), ("d", 4)], "id string, v long")
    assert lake.write(again, "t", "merge") == 2  # reads the existing keys through Spark

    assert sorted(lake.read_arrow("t").to_pydict()["id"]) == ["a", "b", "c", "d"]
    assert sorted((r.id, r.v) for r in lake.read("t").collect()) == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
    ]
    assert lake.read_arrow("t", version=0).num_rows == 2
    assert lake.history("t")[0]["operation"] == "MERGE"
    assert lake.tables() == ["t"]

    table_uri = f"{root}/t"
    # every delta-rs call got the object-store URI of the table and the storage options
    assert calls.create == [(table_uri, options)]
    assert calls.delta and all(c == (table_uri, options) for c in calls.delta)
    assert calls.handlers and all(o == options for _, o in calls.handlers)
    assert {u for u, _ in calls.handlers} <= {table_uri, root}
    # Spark staged and read at the Hadoop spelling of the same place
    spark_table = spark_uri(table_uri)
    assert spark_table.startswith(f"{spark_scheme}://")
    assert len(calls.spark_writes) == 2
    assert all(p.startswith(f"{spark_table}/data/") for p in calls.spark_writes)
    assert calls.spark_reads and all(
        p.startswith(f"{spark_table}/data/") for p in calls.spark_reads
    )


def test_file_uri_root_takes_the_object_store_path_for_real(spark: Any, tmp_path: Path) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    root = f"file://{tmp_path / 'lake'}"
    lake = Lake(root, spark)
    assert lake.tables() == []
    df = spark.createDataFrame([("a", 1), ("b", 2)], "id string, v long")
    assert lake.write(df, "t", "merge", keys=["id"]) == 0
    assert lake.write(pa.table({"id": ["b", "c"], "v": [5, 3]}), "t", "merge") == 1
    assert lake.write(pa.table({"id": ["z"], "v": [0]}), "t", "overwrite") == 2
    assert lake.read_arrow("t", version=1).sort_by("id").to_pydict() == {
        "id": ["a", "b", "c"],
        "v": [1, 2, 3],
    }
    assert [r.id for r in lake.read("t").collect()] == ["z"]
    assert [h["version"] for h in lake.history("t")] == [2, 1, 0]
    assert lake.keys("t") == ["id"] and lake.tables() == ["t"]

    @F.udf(LongType())
    def boom(x):  # type: ignore[no-untyped-def]
        if x == 3:
            raise RuntimeError("model exploded")
        return x

    with pytest.raises(Exception, match="model exploded"):
        lake.write(spark.range(0, 8, numPartitions=2).select(boom("id").alias("v")), "u", "append")
    assert not lake.exists("u")
    staged = tmp_path / "lake" / "u" / "data"
    assert not staged.exists() or not any(p.is_file() for p in staged.rglob("*"))


# ------------------------------------------------------------------- dbfs:/
class _Row(dict[str, Any]):
    def asDict(self) -> dict[str, Any]:  # noqa: N802 - pyspark's spelling
        return dict(self)


class _FakeDF:
    def __init__(self, spark: _FakeDatabricks, data: pa.Table) -> None:
        self.spark, self.data = spark, data

    @property
    def schema(self) -> Any:
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(self.data.schema)

    def select(self, *cols: str) -> _FakeDF:
        return _FakeDF(self.spark, self.data.select(list(cols)))

    def toArrow(self) -> pa.Table:  # noqa: N802
        return self.data

    @property
    def columns(self) -> list[str]:
        return list(self.data.column_names)

    @property
    def write(self) -> _FakeIO:
        return _FakeIO(self.spark, self)


class _FakeIO:
    """``spark.read`` and ``df.write`` for format("delta")."""

    def __init__(self, spark: _FakeDatabricks, df: _FakeDF | None = None) -> None:
        self.spark, self.df, self.options = spark, df, {}

    def format(self, fmt: str) -> _FakeIO:
        assert fmt == "delta"
        return self

    def option(self, key: str, value: Any) -> _FakeIO:
        self.options[key] = str(value)
        return self

    def mode(self, mode: str) -> _FakeIO:
        self.options["mode"] = mode
        return self

    def load(self, path: str) -> _FakeDF:
        self.spark.loaded.append((path, dict(self.options)))
        return _FakeDF(self.spark, pa.table({"id": ["a", "b"], "v": [1, 2]}))

    def save(self, path: str) -> None:
        self.spark.saved.append((path, dict(self.options)))


class _FakeDatabricks:
    """Just enough of a Databricks session: Delta SQL metadata, delta reads and writes."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.loaded: list[tuple[str, dict[str, str]]] = []
        self.saved: list[tuple[str, dict[str, str]]] = []

    def sql(self, query: str) -> Any:
        self.queries.append(query)
        meta = {"vlsafety.operation": "APPEND", "vlsafety.rows": "2", "vlsafety.run_id": "r1"}
        if query.startswith("DESCRIBE HISTORY"):
            rows = [
                _Row(
                    version=v,
                    timestamp=datetime(2026, 1, 1 + v),
                    operation="WRITE",
                    userMetadata=json.dumps(meta),
                )
                for v in (1, 0)
            ]
        else:
            rows = [_Row(description=json.dumps({"keys": ["id"]}))]

        class _Result:
            def collect(self) -> list[_Row]:
                return rows

        return _Result()

    @property
    def read(self) -> _FakeIO:
        return _FakeIO(self)

    def createDataFrame(self, pdf: Any) -> _FakeDF:  # noqa: N802
        return _FakeDF(self, pa.Table.from_pandas(pdf, preserve_index=False))


def test_dbfs_goes_through_spark_and_never_reaches_delta_rs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import deltalake
    import deltalake.fs
    import deltalake.transaction

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"delta-rs was called with {args}")

    class NoDeltaTable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            forbidden(*args)

        is_deltatable = staticmethod(forbidden)

    monkeypatch.setattr(deltalake, "DeltaTable", NoDeltaTable)
    monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", forbidden)
    monkeypatch.setattr(deltalake.fs, "DeltaStorageHandler", forbidden)

    with pytest.raises(LakeError, match="dbfs"):
        Lake("dbfs:/mnt/lake")  # no session: nothing can read it
    fake = _FakeDatabricks()
    with pytest.raises(LakeError, match="native Delta"):
        Lake("dbfs:/mnt/lake", fake, engine="delta-rs")  # type: ignore[arg-type]
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    lake = Lake("dbfs:/mnt/lake", fake)  # type: ignore[arg-type]
    assert lake.engine == "native"

    assert lake.exists("t") and lake.version("t") == 1
    hist = lake.history("t")
    assert [h["version"] for h in hist] == [1, 0]
    assert hist[0]["operation"] == "APPEND" and hist[0]["run_id"] == "r1"
    assert lake.keys("t") == ["id"]
    assert lake.read("t", version=0).columns == ["id", "v"]
    assert fake.loaded[-1] == ("dbfs:/mnt/lake/t", {"versionAsOf": "0"})
    assert lake.read_arrow("t", columns=["id"]).column_names == ["id"]
    assert lake.schema("t").names == ["id", "v"]
    assert lake.write(pa.table({"id": ["c"], "v": [3]}), "t", "append", idempotency_key="k") == 1
    path, options = fake.saved[-1]
    assert path == "dbfs:/mnt/lake/t" and options["mode"] == "append"
    assert options["txnAppId"] == "vlsafety/t/k" and options["txnVersion"] == "1"
    assert all("delta.`dbfs:/mnt/lake/t`" in q for q in fake.queries)
    with pytest.raises(LakeError, match="catalog"):
        lake.tables()


def test_native_missing_table(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing(_FakeDatabricks):
        def sql(self, query: str) -> Any:
            raise RuntimeError("[DELTA_MISSING_DELTA_TABLE] not a Delta table")

    lake = Lake("dbfs:/mnt/lake", Missing(), engine="native")  # type: ignore[arg-type]
    assert not lake.exists("t")
    with pytest.raises(TableNotFoundError):
        lake.version("t")
