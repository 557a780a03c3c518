"""Delta Lake storage: one API over two engines.

``Lake(root, spark)`` stores each table as a Delta table under ``root/<table>``.

* **native** — when the Spark session has Delta (Databricks, delta-spark jars):
  ``format("delta")``, ``versionAsOf``, ``DeltaTable.merge``.
* **delta-rs** — the embedded default (no Delta jars here): Spark (or pyarrow on the
  driver, for small frames) writes parquet into a fresh ``data/<uuid>/`` folder under
  the table root, then the driver commits exactly those files as one Delta
  transaction with ``deltalake`` (delta-rs). Files are checked to exist and to match
  the table schema before the commit; a failed write removes its staged files, so a
  table is always at a clean version.

Roots: a local folder, or an object-store URI (``s3://``, ``abfss://``, ``gs://``,
``file://``). With delta-rs, object-store roots pass ``storage_options`` to every
delta-rs call and to the filesystem that lists staged files and reads their footers;
Spark stages and reads at the Hadoop spelling of the same place (``s3://`` → ``s3a://``).
``dbfs:/`` roots are Databricks': everything goes through Spark's native Delta and no
``dbfs:/`` path is ever handed to delta-rs. :func:`check_shared_root` refuses a local
root under a non-local Spark master unless the config declares it shared.

Every write is one atomic commit that carries the active MLflow run id and CLI
command (see :func:`commit_context`), so ``history`` links tables to runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from vlsafety.config import ConfigError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from vlsafety.config import LakeConfig

__all__ = [
    "Lake",
    "GarbageReport",
    "LakeError",
    "LakeNotSharedError",
    "SchemaMismatchError",
    "Scratch",
    "TableNotFoundError",
    "WriteMode",
    "check_shared_root",
    "commit_context",
    "parse_table_ref",
    "spark_uri",
    "validate_table_name",
]

WriteMode = Literal["append", "overwrite", "merge"]
_MODES: tuple[str, ...] = ("append", "overwrite", "merge")
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_META_PREFIX = "vlsafety."
#: ``scheme:`` of a URI; one letter is a Windows drive, not a scheme.
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")
_COMMIT_FILE = re.compile(r"^\d+\.json$")
#: Object-store schemes as delta-rs spells them → as Spark's Hadoop connectors do.
_HADOOP_SCHEMES = {"s3": "s3a"}
#: Local-looking roots that Databricks mounts on every node (FUSE): shared by nature.
_CLUSTER_MOUNTS = ("/dbfs/", "/Volumes/")

#: Commit metadata attached to every write made inside the context (run id, command).
_COMMIT_CONTEXT: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "vlsafety_commit_context", default=None
)


class LakeError(RuntimeError):
    """A lake operation failed; the message says which table and why."""


class TableNotFoundError(LakeError, KeyError):
    """The table (or the requested version of it) does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else "table not found"


class SchemaMismatchError(LakeError):
    """Data files do not match the table schema (checked before committing)."""


class LakeNotSharedError(ConfigError, LakeError):
    """A local lake root under a non-local Spark master (the CLI exits 2, one line)."""


def _scheme(root: str) -> str:
    """``"s3"`` for ``s3://b/x``, ``"dbfs"`` for ``dbfs:/x``, ``""`` for a plain path."""
    m = _SCHEME.match(root)
    return m.group(1).lower() if m else ""


def spark_uri(uri: str) -> str:
    """The Hadoop spelling Spark needs for an object-store URI (``s3://`` → ``s3a://``);
    others (``abfss://``, ``gs://``, ``file://``, plain paths) are unchanged."""
    scheme = _scheme(uri)
    if scheme in _HADOOP_SCHEMES:
        return _HADOOP_SCHEMES[scheme] + uri[len(scheme) :]
    return uri


def check_shared_root(root: str, master: str, *, shared: bool = False) -> None:
    """Refuse a local-looking lake ``root`` under a non-local Spark ``master``.

    Executors stage parquet under the root and the driver commits what it sees there:
    with a root on each machine's own disk the driver would silently commit only its
    own files. Object stores, ``dbfs:/`` and Databricks' ``/dbfs/`` and ``/Volumes/``
    mounts are visible everywhere; any other local root must be declared
    ``lake.shared: true`` (an NFS-style mount on every node).

    Raises:
        LakeNotSharedError: one line naming the root, the master and the fix.
    """
    from vlsafety.spark import is_local_master

    scheme = _scheme(root)
    if shared or is_local_master(master) or scheme not in ("", "file"):
        return
    path = root[len("file://") :] if scheme == "file" else root
    if any(os.path.abspath(path).startswith(m) for m in _CLUSTER_MOUNTS):
        return
    raise LakeNotSharedError(
        f"lake.root: {root!r} is a local path but Spark runs on {master!r}; executors would "
        "stage files the driver cannot see. Use a root every node sees (s3://, abfss://, "
        "gs://, dbfs:/) or declare a shared mount with lake.shared: true"
    )


def validate_table_name(name: str) -> str:
    """Table names are lower-case identifiers: ``[a-z][a-z0-9_]*``, at most 64 chars."""
    if not isinstance(name, str) or not _TABLE_NAME.match(name):
        raise ValueError(
            f"bad table name {name!r}: use lower-case letters, digits and '_', "
            "starting with a letter (at most 64 characters)"
        )
    return name


def parse_table_ref(ref: str) -> tuple[str, int | None]:
    """``"benchmark@3"`` → (``"benchmark"``, 3); ``"benchmark"`` → (``"benchmark"``, None)."""
    name, sep, version = ref.partition("@")
    validate_table_name(name)
    if not sep:
        return name, None
    if not version.isdigit():
        raise ValueError(f"bad table reference {ref!r}: version after '@' must be an integer")
    return name, int(version)


@contextlib.contextmanager
def commit_context(**values: str) -> Iterator[None]:
    """Attach ``values`` (e.g. ``run_id=..., command=...``) to every commit made inside."""
    merged = {
        **(_COMMIT_CONTEXT.get() or {}),
        **{k: str(v) for k, v in values.items() if v is not None},
    }
    token = _COMMIT_CONTEXT.set(merged)
    try:
        yield
    finally:
        _COMMIT_CONTEXT.reset(token)


@dataclass(frozen=True)
class TableEvent:
    """A read or a write of one table version, passed to lake listeners (tracking)."""

    kind: Literal["read", "write"]
    table: str
    path: str
    version: int


def _nullable(field: pa.Field) -> pa.Field:
    """The field made nullable all the way down, without metadata (Spark marks some
    columns non-null and stamps its own metadata; Delta tables here are all-nullable)."""
    t = field.type
    if pa.types.is_struct(t):
        t = pa.struct([_nullable(t.field(i)) for i in range(t.num_fields)])
    elif pa.types.is_large_list(t):
        t = pa.large_list(_nullable(t.value_field))
    elif pa.types.is_list(t):
        t = pa.list_(_nullable(t.value_field))
    elif pa.types.is_map(t):
        t = pa.map_(t.key_type, _nullable(t.item_field).type)
    return pa.field(field.name, t, nullable=True)


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([_nullable(f) for f in schema])


def _delta_schema_json(schema: pa.Schema) -> Any:
    from deltalake import Schema as DeltaSchema

    return json.loads(DeltaSchema.from_arrow(normalize_schema(schema)).to_json())


def _stats(meta: pq.FileMetaData, n_rows: int) -> str:
    """Delta ``stats`` JSON (numRecords, minValues, maxValues, nullCount) from a parquet
    footer, for top-level primitive columns whose statistics are present."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    schema = meta.schema
    top_level = {schema.column(i).path: i for i in range(meta.num_columns)}
    for name, idx in top_level.items():
        if "." in name:
            continue
        col_min: Any = None
        col_max: Any = None
        n_null = 0
        ok = True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(idx).statistics
            if st is None or not st.has_null_count:
                ok = False
                break
            n_null += st.null_count
            if st.has_min_max:
                lo, hi = st.min, st.max
                if isinstance(lo, bytes | bytearray):
                    ok = False  # binary min/max are not useful and not JSON
                    break
                col_min = lo if col_min is None else min(col_min, lo)
                col_max = hi if col_max is None else max(col_max, hi)
        if not ok:
            continue
        nulls[name] = n_null
        if col_min is not None:
            mins[name] = col_min.isoformat() if hasattr(col_min, "isoformat") else col_min
            maxs[name] = col_max.isoformat() if hasattr(col_max, "isoformat") else col_max
    return json.dumps(
        {"numRecords": n_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls},
        default=str,
    )


def _to_arrow(data: pd.DataFrame | pa.Table | pa.RecordBatch) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    return pa.Table.from_pandas(data, preserve_index=False)


def _is_spark_df(data: Any) -> bool:
    return type(data).__module__.startswith("pyspark.sql") and hasattr(data, "sparkSession")


#: Commit attempts of one merge racing other writers (each re-checks the staged keys).
MERGE_ATTEMPTS = 30


class _StaleSnapshot(Exception):
    """A merge's snapshot is no longer the latest version (``version`` is)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"the table moved on to version {version}")
        self.version = version


def _key_array(table: pa.Table, keys: Sequence[str]) -> pa.Array:
    """One comparable array for the key columns (joined as text for composite keys)."""
    if len(keys) == 1:
        return table.column(keys[0]).combine_chunks()
    parts = [pc.cast(table.column(k), pa.string()).combine_chunks() for k in keys]
    return pc.binary_join_element_wise(*parts, "\x1f")


def _dedupe_on_keys(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """First row for each key (stable)."""
    if table.num_rows == 0:
        return table
    index = pa.table({"k": _key_array(table, keys), "i": pa.array(range(table.num_rows))})
    firsts = index.group_by("k", use_threads=False).aggregate([("i", "min")]).column("i_min")
    return table.take(pc.take(firsts, pc.sort_indices(firsts)))


def _new_keys_only(table: pa.Table, existing: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Rows of ``table`` whose key is not in ``existing``."""
    if table.num_rows == 0 or existing.num_rows == 0:
        return table
    seen = pc.is_in(_key_array(table, keys), value_set=_key_array(existing, keys))
    return table.filter(pc.invert(seen))


class Lake:
    """Versioned Delta tables under one root. See the module docstring.

    Args:
        root: local folder (created on demand) or a URI (``s3://``, ``abfss://``, ``gs://``,
            ``file://``, ``dbfs:/``).
        spark: the Spark session; required to read as Spark DataFrames and to write them.
        engine: ``"auto"`` picks native Delta when the session has it, else delta-rs.
        storage_options: passed to delta-rs (and its object store) for cloud storage.

    Raises:
        LakeError: a ``dbfs:/`` root without a native-Delta Spark session.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        spark: SparkSession | None = None,
        *,
        engine: Literal["auto", "delta-rs", "native"] = "auto",
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        root_str = os.fspath(root)
        scheme = _scheme(root_str)
        self._local = scheme == ""
        self._dbfs = scheme == "dbfs"
        self.root = str(Path(root_str).resolve()) if self._local else root_str.rstrip("/")
        self.spark = spark
        self.storage_options = dict(storage_options or {})
        if engine == "auto":
            from vlsafety.spark import has_native_delta

            engine = "native" if spark is not None and has_native_delta(spark) else "delta-rs"
        if self._dbfs and engine != "native":
            raise LakeError(
                f"{self.root}: dbfs:/ roots are read and written through Spark's native Delta "
                "(Databricks); this session has none"
            )
        self.engine = engine
        self._listeners: list[Callable[[TableEvent], None]] = []

    @classmethod
    def from_config(cls, cfg: LakeConfig, spark: SparkSession | None = None) -> Lake:
        """The lake ``cfg`` declares; with a session, first :func:`check_shared_root`."""
        if spark is not None:
            from vlsafety.spark import session_master

            check_shared_root(cfg.root, session_master(spark), shared=cfg.shared)
        return cls(cfg.root, spark, storage_options=cfg.storage_options)

    # ------------------------------------------------------------------ paths
    def path(self, table: str) -> str:
        """Location of ``table`` (a local path or URI)."""
        validate_table_name(table)
        return f"{self.root}/{table}"

    def _delta_uri(self, table: str) -> str:
        """``table``'s location as delta-rs is given it: never a ``dbfs:/`` path."""
        if self._dbfs:  # pragma: no cover - __init__ refuses delta-rs on dbfs:/ roots
            raise LakeError(f"delta-rs cannot open {self.path(table)}: dbfs:/ is Spark's")
        return self.path(table)

    def _spark_location(self, table: str, rel: str = "") -> str:
        """Where Spark reads and writes ``table`` (Hadoop scheme: ``s3a://``)."""
        where = self.path(table) + (f"/{rel}" if rel else "")
        return where if self._local else spark_uri(where)

    def _files(self, table: str) -> tuple[pa_fs.FileSystem, str]:
        """A filesystem over ``table``'s files and the table folder's path in it.

        Local roots use pyarrow's local filesystem; object-store roots delta-rs' own
        object store (same ``storage_options`` as the commits), rooted at the table.
        """
        if self._local:
            return pa_fs.LocalFileSystem(), self.path(table)
        from deltalake.fs import DeltaStorageHandler

        uri = self._delta_uri(table)
        if _scheme(uri) == "file":  # object_store's local backend wants the folder to exist
            Path(_file_uri_path(uri)).mkdir(parents=True, exist_ok=True)
        return pa_fs.PyFileSystem(DeltaStorageHandler(uri, self.storage_options or None)), ""

    def add_listener(self, fn: Callable[[TableEvent], None]) -> None:
        """Call ``fn`` on every table read/write (used by tracking to log Delta versions)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[TableEvent], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def _emit(self, kind: Literal["read", "write"], table: str, version: int) -> None:
        event = TableEvent(kind, table, self.path(table), version)
        for fn in list(self._listeners):
            fn(event)

    # ------------------------------------------------------------------ garbage
    def _root_fs(self) -> tuple[pa_fs.FileSystem, str]:
        """A filesystem over the lake root and the root's path in it."""
        if self._local:
            return pa_fs.LocalFileSystem(), self.root
        from deltalake.fs import DeltaStorageHandler

        if _scheme(self.root) == "file":
            Path(_file_uri_path(self.root)).mkdir(parents=True, exist_ok=True)
        return pa_fs.PyFileSystem(DeltaStorageHandler(self.root, self.storage_options or None)), ""

    def collect_garbage(
        self, *, older_than_s: float = 24 * 3600.0, dry_run: bool = False
    ) -> GarbageReport:
        """Remove what killed writers left behind; never a file any table version reads.

        A write killed between staging and commit (SIGKILL, a lost driver) leaves its
        ``<table>/data/<id>/`` folder, which no commit names, and a killed job its
        ``_staging/<job>/`` scratch folder. Both are removed once their newest file is
        older than ``older_than_s`` (a live writer may be about to commit a younger one).
        A stage folder with any file named by a retained log entry or checkpoint (add or
        remove: older versions stay readable) is kept whole. Native-engine tables are
        Spark Delta's (``VACUUM``) and are only listed in ``skipped``.
        """
        rep = GarbageReport(older_than_s=float(older_than_s), dry_run=dry_run)
        if self._dbfs:
            raise LakeError("collect_garbage: dbfs:/ roots are Databricks' (use VACUUM)")
        fs, base = self._root_fs()
        cutoff = time.time() - float(older_than_s)

        def sweep(folder: str, label: str, out: list[str]) -> None:
            files = [
                i
                for i in fs.get_file_info(pa_fs.FileSelector(folder, recursive=True))
                if i.type == pa_fs.FileType.File
            ]
            newest = max((i.mtime.timestamp() for i in files if i.mtime), default=0.0)
            if newest > cutoff:
                rep.young += 1
                return
            out.append(label)
            rep.n_files += len(files)
            rep.n_bytes += sum(i.size or 0 for i in files)
            if not dry_run:
                fs.delete_dir(folder)

        for table in self.tables():
            if self.engine == "native":
                rep.skipped.append(table)
                continue
            table_dir = _join(base, table)
            data_dir = _join(table_dir, "data")
            stages = [
                i
                for i in fs.get_file_info(pa_fs.FileSelector(data_dir, allow_not_found=True))
                if i.type == pa_fs.FileType.Directory
            ]
            if not stages:
                continue
            refs = _log_references(fs, table_dir)
            used = {r.split("/")[1] for r in refs if r.startswith("data/") and r.count("/") >= 2}
            for info in stages:
                if info.base_name not in used:
                    sweep(info.path, f"{table}/data/{info.base_name}", rep.stages)
        scratch_root = _join(base, "_staging")
        for info in fs.get_file_info(pa_fs.FileSelector(scratch_root, allow_not_found=True)):
            if info.type == pa_fs.FileType.Directory:
                sweep(info.path, f"_staging/{info.base_name}", rep.scratch)
        return rep

    # -------------------------------------------------------------- metadata
    def _dt(self, table: str, version: int | None = None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError as DeltaNotFound

        try:
            return DeltaTable(
                self._delta_uri(table),
                version=version,
                storage_options=self.storage_options or None,
            )
        except DeltaNotFound as exc:
            raise TableNotFoundError(f"table {table!r} not found under {self.root}") from exc
        except Exception as exc:  # delta-rs raises a generic error for a missing version
            if version is not None and self.exists(table):
                raise TableNotFoundError(
                    f"table {table!r} has no version {version} (latest is {self.version(table)})"
                ) from exc
            raise

    def exists(self, table: str) -> bool:
        if self.engine == "native":
            try:
                self._native_history(table, 1)
            except TableNotFoundError:
                return False
            return True
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(self._delta_uri(table), self.storage_options or None))

    def tables(self) -> list[str]:
        """Names of the Delta tables directly under the root (not under ``dbfs:/``)."""
        if self._dbfs:
            raise LakeError("listing tables under dbfs:/ is not supported; use a catalog")
        if self._local or _scheme(self.root) == "file":
            local = Path(self.root if self._local else _file_uri_path(self.root))
            if not local.is_dir():
                return []
            return sorted(
                p.name
                for p in local.iterdir()
                if (p / "_delta_log").is_dir() and _TABLE_NAME.match(p.name)
            )
        from deltalake.fs import DeltaStorageHandler

        fs = pa_fs.PyFileSystem(DeltaStorageHandler(self.root, self.storage_options or None))
        infos = fs.get_file_info(pa_fs.FileSelector("", allow_not_found=True))
        names = [i.base_name for i in infos if i.type == pa_fs.FileType.Directory]
        return sorted(n for n in names if _TABLE_NAME.match(n) and self.exists(n))

    def version(self, table: str) -> int:
        if self.engine == "native":
            return int(self._native_history(table, 1)[0]["version"])
        return int(self._dt(table).version())

    def keys(self, table: str) -> list[str]:
        """Key columns declared when the table was created (empty if none)."""
        if self.engine == "native":
            desc = self._native_detail(table).get("description")
        else:
            desc = self._dt(table).metadata().description
        if not desc:
            return []
        try:
            return list(json.loads(desc).get("keys", []))
        except (ValueError, AttributeError):
            return []

    def schema(self, table: str, version: int | None = None) -> pa.Schema:
        if self.engine == "native":
            from pyspark.sql.pandas.types import to_arrow_schema

            return normalize_schema(to_arrow_schema(self.read(table, version, track=False).schema))
        return pa.schema(self._dt(table, version).schema().to_arrow())

    # ------------------------------------------------- native (Spark) metadata
    def _native_history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """``DESCRIBE HISTORY`` as delta-rs shaped entries (our commit metadata unpacked)."""
        spark = self._require_spark()
        sql = f"DESCRIBE HISTORY delta.`{self._spark_location(table)}`"
        if limit:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = spark.sql(sql).collect()  # one small row per version, not table data
        except Exception as exc:
            raise TableNotFoundError(f"table {table!r} not found under {self.root}") from exc
        if not rows:
            raise TableNotFoundError(f"table {table!r} not found under {self.root}")
        entries = []
        for row in rows:
            d = row.asDict()
            entry: dict[str, Any] = {"version": d["version"], "operation": d.get("operation")}
            ts: Any = d.get("timestamp")
            entry["timestamp"] = ts.timestamp() * 1000 if isinstance(ts, datetime) else ts
            with contextlib.suppress(ValueError):  # not ours: no metadata to unpack
                entry.update(json.loads(d.get("userMetadata") or "{}"))
            entries.append(entry)
        return entries

    def _native_detail(self, table: str) -> dict[str, Any]:
        spark = self._require_spark()
        try:
            rows = spark.sql(f"DESCRIBE DETAIL delta.`{self._spark_location(table)}`").collect()
        except Exception as exc:
            raise TableNotFoundError(f"table {table!r} not found under {self.root}") from exc
        return dict(rows[0].asDict()) if rows else {}

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first: version, timestamp (UTC ISO), operation, run id, command, metadata."""
        out = []
        entries = (
            self._native_history(table, limit)
            if self.engine == "native"
            else self._dt(table).history(limit)
        )
        for entry in entries:
            meta = {
                k[len(_META_PREFIX) :]: v for k, v in entry.items() if k.startswith(_META_PREFIX)
            }
            ts = entry.get("timestamp")
            out.append(
                {
                    "version": int(entry["version"]),
                    "timestamp": datetime.fromtimestamp(ts / 1000, UTC).isoformat()
                    if ts is not None
                    else None,
                    "operation": meta.pop("operation", None) or entry.get("operation"),
                    "run_id": meta.pop("run_id", None),
                    "command": meta.pop("command", None),
                    "rows": int(meta.pop("rows")) if "rows" in meta else None,
                    "metadata": meta,
                }
            )
        return sorted(out, key=lambda e: e["version"], reverse=True)

    # ------------------------------------------------------------------ read
    def _resolve_version(
        self, table: str, version: int | None, timestamp: datetime | str | None
    ) -> Any:
        if version is not None and timestamp is not None:
            raise ValueError("give a version or a timestamp, not both")
        dt = self._dt(table, version)
        if timestamp is not None:
            ts = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            ts_ms = ts.timestamp() * 1000
            eligible = [
                int(h["version"]) for h in dt.history() if h.get("timestamp", 0) <= ts_ms + 1e-6
            ]
            if not eligible:
                raise TableNotFoundError(
                    f"table {table!r} has no version at or before {ts.isoformat()}"
                )
            dt.load_as_version(max(eligible))
        return dt

    def read(
        self,
        table: str,
        version: int | None = None,
        timestamp: datetime | str | None = None,
        *,
        track: bool = True,
    ) -> DataFrame:
        """The table (at ``version`` or as of ``timestamp``) as a Spark DataFrame."""
        spark = self._require_spark()
        if self.engine == "native":
            reader = spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            if timestamp is not None:
                reader = reader.option("timestampAsOf", str(timestamp))
            df = reader.load(self._spark_location(table))
            if track:
                self._emit("read", table, version if version is not None else self.version(table))
            return df
        from pyspark.sql.types import StructType

        dt = self._resolve_version(table, version, timestamp)
        spark_schema = StructType.fromJson(json.loads(dt.schema().to_json()))
        files = [spark_uri(f) for f in dt.file_uris()]
        if files:
            df = spark.read.schema(spark_schema).parquet(*files)
        else:
            df = spark.createDataFrame([], spark_schema)
        if track:
            self._emit("read", table, int(dt.version()))
        return df

    def read_arrow(
        self,
        table: str,
        version: int | None = None,
        timestamp: datetime | str | None = None,
        columns: Sequence[str] | None = None,
        *,
        track: bool = True,
    ) -> pa.Table:
        """The table as a pyarrow Table, read on the driver (pyarrow dataset over the files)."""
        if self.engine == "native":
            df = self.read(table, version, timestamp, track=False)
            result = (df.select(*columns) if columns is not None else df).toArrow()
            if track:
                self._emit("read", table, version if version is not None else self.version(table))
            return result
        dt = self._resolve_version(table, version, timestamp)
        schema = normalize_schema(pa.schema(dt.schema().to_arrow()))
        files = dt.file_uris()
        cols = list(columns) if columns is not None else None
        if cols:
            missing = [c for c in cols if c not in schema.names]
            if missing:
                raise KeyError(f"table {table!r} has no column(s) {missing}")
        if not files:
            empty = schema.empty_table()
            result = empty.select(cols) if cols else empty
        else:
            result = self._dataset(dt, schema).to_table(columns=cols)
            # the scan's read-ahead and decompression buffers: give them back to the OS
            pa.default_memory_pool().release_unused()
        if track:
            self._emit("read", table, int(dt.version()))
        return result

    def arrow_dataset(self, table: str, version: int | None = None) -> Any:
        """A pyarrow dataset over one version of ``table`` (row order = ``read_arrow``'s),
        for reading a large column batch by batch or a few rows by index. The native engine
        reads through Spark and has none: None.
        """
        if self.engine == "native":
            return None
        dt = self._resolve_version(table, version, None)
        return self._dataset(dt, normalize_schema(pa.schema(dt.schema().to_arrow())))

    def _dataset(self, dt: Any, schema: pa.Schema) -> Any:
        import pyarrow.dataset as ds

        files = dt.file_uris()
        if not files:
            return ds.dataset(schema.empty_table())
        if self._local:
            return ds.dataset(files, schema=schema, format="parquet")
        # object stores: delta-rs' filesystem, with the lake's storage options
        return dt.to_pyarrow_dataset(schema=schema)

    # ----------------------------------------------------------------- write
    def write(
        self,
        df: DataFrame | pd.DataFrame | pa.Table,
        table: str,
        mode: WriteMode = "append",
        *,
        keys: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Write ``df`` to ``table`` as one atomic Delta commit; return the new version.

        Modes: ``append``; ``overwrite`` (replaces all rows, may change the schema);
        ``merge`` — insert rows whose ``keys`` are not in the table yet, leave existing
        keys alone (the resume primitive). Keys given at creation are remembered, so
        later merges may omit them. ``idempotency_key`` makes a retried write a no-op
        (a Delta app transaction): the second call commits nothing and returns the
        current version.
        """
        validate_table_name(table)
        if mode not in _MODES:
            raise ValueError(f"bad write mode {mode!r}: use one of {', '.join(_MODES)}")
        exists = self.exists(table)
        declared = list(keys) if keys else (self.keys(table) if exists else [])
        if mode == "merge" and not declared:
            raise ValueError(f"merge into {table!r} needs key columns (keys=[...])")
        app_id = f"vlsafety/{table}/{idempotency_key}" if idempotency_key else None
        if self.engine == "native":
            # Delta skips a write whose app transaction it has seen (txnAppId/txnVersion)
            version = self._write_native(df, table, mode, declared, metadata, exists, app_id)
        elif app_id and exists and self._dt(table).transaction_version(app_id) is not None:
            return self.version(table)
        else:
            version = self._write_delta_rs(df, table, mode, declared, metadata, exists, app_id)
        self._emit("write", table, version)
        return version

    def _commit_metadata(
        self, mode: str, rows: int, metadata: Mapping[str, Any] | None, write_id: str
    ) -> dict[str, str]:
        meta: dict[str, str] = {
            f"{_META_PREFIX}operation": mode.upper(),
            f"{_META_PREFIX}rows": str(rows),
            f"{_META_PREFIX}write_id": write_id,
        }
        for k, v in {**(_COMMIT_CONTEXT.get() or {}), **dict(metadata or {})}.items():
            meta[f"{_META_PREFIX}{k}"] = v if isinstance(v, str) else json.dumps(v, default=str)
        return meta

    def _require_spark(self) -> SparkSession:
        if self.spark is None:
            raise LakeError("this operation needs a Spark session: Lake(root, spark=...)")
        return self.spark

    def _write_delta_rs(
        self,
        df: Any,
        table: str,
        mode: str,
        keys: list[str],
        metadata: Mapping[str, Any] | None,
        exists: bool,
        app_id: str | None,
    ) -> int:
        stage_rel = f"data/{uuid.uuid4().hex}"
        columns = df.column_names if isinstance(df, pa.Table) else list(df.columns)
        missing = [k for k in keys if k not in columns]
        if missing and (mode == "merge" or not exists):
            raise ValueError(f"key column(s) {missing} not in the data written to {table!r}")
        # a merge anti-joins against one snapshot and may only commit on top of it
        read_version = self.version(table) if exists and mode == "merge" else None
        spark_staged = _is_spark_df(df)
        try:
            if spark_staged:
                arrow_schema = self._stage_spark(df, table, mode, keys, read_version, stage_rel)
            else:
                arrow_schema = self._stage_arrow(
                    _to_arrow(df), table, mode, keys, read_version, stage_rel
                )
            for attempt in range(MERGE_ATTEMPTS):
                try:
                    return self._commit(
                        table, mode, keys, metadata, app_id, stage_rel, arrow_schema, read_version
                    )
                except _StaleSnapshot as stale:
                    if attempt + 1 == MERGE_ATTEMPTS:
                        raise LakeError(
                            f"merge into {table!r}: other writers kept committing; gave up "
                            f"after {MERGE_ATTEMPTS} attempts (nothing was written)"
                        ) from stale
                    read_version = stale.version
                    stage_rel = self._restage(
                        table, keys, stage_rel, read_version, spark_staged=spark_staged
                    )
                    time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            fs, base = self._files(table)
            with contextlib.suppress(Exception):
                fs.delete_dir(_join(base, stage_rel))
            raise

    def _restage(
        self, table: str, keys: list[str], stage_rel: str, version: int, *, spark_staged: bool
    ) -> str:
        """After another writer committed: drop the staged rows whose key is now in the
        table at ``version``. Returns the stage to commit (the same one when no staged key
        was taken meanwhile, the common case of concurrent writers of different keys)."""
        fs, base = self._files(table)
        old = _join(base, stage_rel)
        new_rel = f"data/{uuid.uuid4().hex}"
        if spark_staged and self.spark is not None:
            staged = self.spark.read.parquet(self._spark_location(table, stage_rel))
            existing = self.read(table, version=version, track=False).select(*keys)
            if not staged.join(existing, on=keys, how="left_semi").limit(1).count():
                return stage_rel
            columns = list(staged.columns)
            fresh = staged.join(existing, on=keys, how="left_anti").select(*columns)
            fresh.write.mode("errorifexists").parquet(self._spark_location(table, new_rel))
        else:
            files = [
                i.path
                for i in fs.get_file_info(pa_fs.FileSelector(old, recursive=True))
                if i.type == pa_fs.FileType.File and i.base_name.endswith(".parquet")
            ]
            rows = pq.read_table(files, filesystem=fs) if files else None
            if rows is None or rows.num_rows == 0:
                return stage_rel
            taken = self.read_arrow(table, version=version, columns=keys, track=False)
            fresh_rows = _new_keys_only(rows, taken, keys)
            if fresh_rows.num_rows == rows.num_rows:
                return stage_rel
            stage = _join(base, new_rel)
            fs.create_dir(stage, recursive=True)
            if fresh_rows.num_rows:
                pq.write_table(
                    fresh_rows, f"{stage}/part-00000.parquet", filesystem=fs, coerce_timestamps="us"
                )
        with contextlib.suppress(Exception):
            fs.delete_dir(old)
        return new_rel

    def _stage_arrow(
        self,
        data: pa.Table,
        table: str,
        mode: str,
        keys: list[str],
        read_version: int | None,
        stage_rel: str,
    ) -> pa.Schema:
        if mode == "merge":
            data = _dedupe_on_keys(data, keys)
            if read_version is not None:
                existing = self.read_arrow(table, version=read_version, columns=keys, track=False)
                data = _new_keys_only(data, existing, keys)
        data = data.cast(normalize_schema(data.schema)).replace_schema_metadata(None)
        fs, base = self._files(table)
        stage = _join(base, stage_rel)
        fs.create_dir(stage, recursive=True)
        if data.num_rows:
            pq.write_table(
                data, f"{stage}/part-00000.parquet", filesystem=fs, coerce_timestamps="us"
            )
        return data.schema

    def _stage_spark(
        self,
        df: DataFrame,
        table: str,
        mode: str,
        keys: list[str],
        read_version: int | None,
        stage_rel: str,
    ) -> pa.Schema:
        from pyspark.sql.pandas.types import to_arrow_schema

        if mode == "merge":
            columns = list(df.columns)
            df = df.dropDuplicates(keys)
            if read_version is not None:
                existing = self.read(table, version=read_version, track=False).select(*keys)
                # a join moves the key columns first: restore the column order
                df = df.join(existing, on=keys, how="left_anti").select(*columns)
        df.write.mode("errorifexists").parquet(self._spark_location(table, stage_rel))
        return normalize_schema(to_arrow_schema(df.schema))

    def _commit(
        self,
        table: str,
        mode: str,
        keys: list[str],
        metadata: Mapping[str, Any] | None,
        app_id: str | None,
        stage_rel: str,
        schema: pa.Schema,
        read_version: int | None,
    ) -> int:
        """Commit the staged files. A merge (``read_version`` is the snapshot it
        anti-joined against, None when the table did not exist) commits only directly on
        top of that snapshot: otherwise :class:`_StaleSnapshot` (no retry inside delta-rs,
        whose conflict check lets two blind appends of the same keys both land)."""
        from deltalake import Schema as DeltaSchema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import (
            AddAction,
            CommitProperties,
            Transaction,
            create_table_with_add_actions,
        )

        merge = mode == "merge"
        exists = self.exists(table)
        if merge and exists and read_version is None:
            raise _StaleSnapshot(self.version(table))  # created by another writer meanwhile
        expected = _delta_schema_json(schema)
        if exists and mode != "overwrite":
            current = json.loads(self._dt(table).schema().to_json())
            if current != expected:
                raise SchemaMismatchError(
                    f"data for {table!r} does not match its schema: "
                    f"table {_fmt_schema(current)}, data {_fmt_schema(expected)}"
                )
        # sizes, times and footers through the same store the commit goes to
        fs, base = self._files(table)
        stage = _join(base, stage_rel)
        listed = fs.get_file_info(pa_fs.FileSelector(stage, recursive=True, allow_not_found=True))
        adds = []
        rows = 0
        for info in sorted(listed, key=lambda i: i.path):
            name = info.base_name
            if info.type != pa_fs.FileType.File or not name.endswith(".parquet"):
                continue
            if name.startswith((".", "_")):
                continue  # Spark's _SUCCESS and .crc checksum files
            try:
                with fs.open_input_file(info.path) as fh:
                    pf = pq.ParquetFile(fh)
                    meta = pf.metadata
                    got = _delta_schema_json(pf.schema_arrow)
            except (FileNotFoundError, OSError) as exc:
                raise LakeError(f"staged file vanished before commit: {info.path}") from exc
            if got != expected:
                raise SchemaMismatchError(
                    f"staged file {name} for {table!r} has schema {_fmt_schema(got)}, "
                    f"expected {_fmt_schema(expected)}"
                )
            n = meta.num_rows
            rows += n
            mtime = info.mtime.timestamp() if info.mtime is not None else time.time()
            adds.append(
                AddAction(
                    path=f"{stage_rel}/{info.path[len(stage) + 1 :]}",
                    size=int(info.size or 0),
                    partition_values={},
                    modification_time=int(mtime * 1000),
                    data_change=True,
                    stats=_stats(meta, n),
                )
            )
        write_id = stage_rel.rsplit("/", 1)[-1]
        props = CommitProperties(
            custom_metadata=self._commit_metadata(mode, rows, metadata, write_id),
            max_commit_retries=0 if merge else None,
            app_transactions=[Transaction(app_id, 1)] if app_id else None,
        )
        delta_schema = DeltaSchema.from_arrow(normalize_schema(schema))
        if not exists:
            try:
                create_table_with_add_actions(
                    self._delta_uri(table),
                    delta_schema,
                    adds,
                    mode="error",
                    description=json.dumps({"keys": keys}),
                    storage_options=self.storage_options or None,
                    commit_properties=props,
                )
                return self._version_of_write(table, write_id)
            except Exception as exc:
                if not self.exists(table):
                    raise
                if merge:  # another writer created it first: anti-join against its rows
                    raise _StaleSnapshot(self.version(table)) from exc
                # Another writer created the table first: fall through to a normal commit.
                current = json.loads(self._dt(table).schema().to_json())
                if current != expected and mode != "overwrite":
                    raise SchemaMismatchError(
                        f"{table!r} was created concurrently with a different schema"
                    ) from exc
        dt = self._dt(table, version=read_version)
        delta_mode = "overwrite" if mode == "overwrite" else "append"
        try:
            dt.create_write_transaction(adds, delta_mode, delta_schema, commit_properties=props)
        except CommitFailedError as exc:
            if not merge:
                raise
            # committed by us after all (an idempotent retry), or a newer snapshot
            if app_id and self._dt(table).transaction_version(app_id) is not None:
                return self.version(table)
            raise _StaleSnapshot(self.version(table)) from exc
        return self._version_of_write(table, write_id)

    def _version_of_write(self, table: str, write_id: str) -> int:
        """The version our commit got (other writers may have committed since).

        Read from the commit files themselves: delta-rs numbers ``history()`` entries by
        position, which is unreliable while other writers are committing.
        """
        fs, base = self._files(table)
        listed = fs.get_file_info(
            pa_fs.FileSelector(_join(base, "_delta_log"), allow_not_found=True)
        )
        commits = sorted(
            (i for i in listed if _COMMIT_FILE.match(i.base_name)),
            key=lambda i: int(i.base_name.split(".")[0]),
            reverse=True,
        )
        for commit in commits[:200]:
            with fs.open_input_stream(commit.path) as fh:
                text = fh.read().decode("utf-8")
            for line in text.splitlines():
                if write_id in line:
                    info = json.loads(line).get("commitInfo") or {}
                    if info.get(f"{_META_PREFIX}write_id") == write_id:
                        return int(commit.base_name.split(".")[0])
        raise LakeError(f"commit to {table!r} not found in its log")  # pragma: no cover

    def _write_native(
        self,
        df: Any,
        table: str,
        mode: str,
        keys: list[str],
        metadata: Mapping[str, Any] | None,
        exists: bool,
        app_id: str | None = None,
    ) -> int:
        """Spark-native Delta (Databricks / delta-spark). Not exercised here: no Delta jars."""
        spark = self._require_spark()
        if not _is_spark_df(df):
            df = spark.createDataFrame(_to_arrow(df).to_pandas())
        user_meta = json.dumps(self._commit_metadata(mode, -1, metadata, uuid.uuid4().hex))
        path = self._spark_location(table)
        if mode == "merge" and exists:
            from delta.tables import DeltaTable  # type: ignore[import-not-found]

            cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
            session_conf = {"spark.databricks.delta.commitInfo.userMetadata": user_meta}
            if app_id:
                session_conf["spark.databricks.delta.write.txnAppId"] = app_id
                session_conf["spark.databricks.delta.write.txnVersion"] = "1"
            for key, value in session_conf.items():
                spark.conf.set(key, value)
            try:
                retry_conflicts(
                    lambda: (
                        DeltaTable.forPath(spark, path)
                        .alias("t")
                        .merge(df.dropDuplicates(keys).alias("s"), cond)
                        .whenNotMatchedInsertAll()
                        .execute()
                    ),
                    what=f"merge into {table!r}",
                )
            finally:
                for key in session_conf:
                    spark.conf.unset(key)
        else:
            writer = df.write.format("delta").option("userMetadata", user_meta)
            if app_id:
                writer = writer.option("txnAppId", app_id).option("txnVersion", "1")
            if mode == "overwrite":
                writer = writer.mode("overwrite").option("overwriteSchema", "true")
            else:
                writer = writer.mode("append")
            if not exists and keys:
                writer = writer.option("description", json.dumps({"keys": keys}))
            writer.save(path)
        return self.version(table)


#: Delta's optimistic-concurrency conflicts (delta.exceptions; Databricks raises the same
#: names): the losing transaction may simply run again on the newer snapshot.
DELTA_CONFLICTS = frozenset(
    {
        "ConcurrentAppendException",
        "ConcurrentDeleteReadException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentTransactionException",
        "ConcurrentWriteException",
        "MetadataChangedException",
        "ProtocolChangedException",
    }
)


@dataclass
class GarbageReport:
    """What :meth:`Lake.collect_garbage` found (and removed unless ``dry_run``)."""

    older_than_s: float
    dry_run: bool
    #: ``table/data/<id>`` stage folders no version of their table references
    stages: list[str] = field(default_factory=list)
    #: ``_staging/<job>`` scratch folders of jobs that did not finish
    scratch: list[str] = field(default_factory=list)
    #: younger than ``older_than_s``: left alone (a writer may still be committing them)
    young: int = 0
    n_files: int = 0
    n_bytes: int = 0
    #: tables of the native engine (Spark's Delta manages their files: VACUUM)
    skipped: list[str] = field(default_factory=list)


def _log_references(fs: pa_fs.FileSystem, table_dir: str) -> set[str]:
    """Every data file path any retained log entry or checkpoint of a table names
    (adds and removes alike: a removed file is still read by older versions)."""
    from urllib.parse import unquote

    log_dir = _join(table_dir, "_delta_log")
    refs: set[str] = set()
    for info in fs.get_file_info(pa_fs.FileSelector(log_dir, allow_not_found=True)):
        name = info.base_name
        if info.type != pa_fs.FileType.File:
            continue
        if _COMMIT_FILE.match(name):
            with fs.open_input_stream(info.path) as fh:
                lines = fh.read().decode("utf-8").splitlines()
            for line in lines:
                action = json.loads(line) if line.strip() else {}
                for kind in ("add", "remove", "cdc"):
                    if isinstance(action.get(kind), dict) and action[kind].get("path"):
                        refs.add(unquote(action[kind]["path"]))
        elif ".checkpoint" in name and name.endswith(".parquet"):
            with fs.open_input_file(info.path) as fh:
                pf = pq.ParquetFile(fh)
                cols = [c for c in ("add", "remove") if c in pf.schema_arrow.names]
                ck = pf.read(columns=cols)
            for c in cols:
                for path in pc.struct_field(ck.column(c), "path").to_pylist():
                    if path:
                        refs.add(unquote(path))
    return refs


def _is_conflict(exc: BaseException) -> bool:
    names = {t.__name__ for t in type(exc).__mro__}
    # py4j wraps a JVM-side conflict: its text names the Java class
    return bool(names & DELTA_CONFLICTS) or any(n in str(exc)[:500] for n in DELTA_CONFLICTS)


def retry_conflicts(
    fn: Callable[[], Any],
    *,
    what: str,
    attempts: int = MERGE_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run a Delta transaction ``fn``, again on a concurrent-commit conflict (bounded, with
    jittered backoff). A native MERGE re-reads its target on each run, so a retried merge
    anti-joins against what the winner committed."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            if attempt + 1 == attempts:
                raise LakeError(f"{what}: still conflicting after {attempts} attempts") from exc
            log.info("%s: concurrent commit (%s); retrying", what, type(exc).__name__)
            sleep(random.uniform(0.05, 0.25) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


class Scratch:
    """A job's private parquet folder, ``<lake root>/_staging/<prefix>-<id>/``.

    Spark writes and reads it, so it works on every root Spark can write (local, shared
    mounts, object stores, DBFS) and survives the loss of an executor, which cached
    blocks do not. :meth:`checkpoint` materializes a DataFrame there and gives it back
    read from the files: later plans start from a file scan instead of carrying the whole
    lineage (a chain of cached DataFrames prints, and is shipped, as nested copies of
    every plan before it — megabytes of plan text per query).
    """

    def __init__(self, lake: Lake, prefix: str) -> None:
        if lake.spark is None:
            raise LakeError("a scratch folder needs the lake's Spark session")
        self.spark = lake.spark
        self.local = lake._local
        self.path = f"{lake.root}/_staging/{prefix}-{uuid.uuid4().hex}"
        self.uri = self.path if self.local else spark_uri(self.path)
        self._n = 0

    def checkpoint(self, df: DataFrame, name: str | None = None) -> DataFrame:
        """Write ``df`` under the folder and return it read back (computed exactly once)."""
        self._n += 1
        where = f"{self.uri}/{self._n:03d}-{name or 'part'}"
        df.write.mode("errorifexists").parquet(where)
        return self.spark.read.parquet(where)

    def remove(self) -> None:
        """Delete the folder (a failure to delete is logged, never raised)."""
        try:
            if self.local:
                shutil.rmtree(self.path, ignore_errors=True)
                return
            jvm: Any = self.spark._jvm  # Hadoop's FileSystem knows every scheme Spark writes
            path = jvm.org.apache.hadoop.fs.Path(self.uri)
            conf = self.spark._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
            path.getFileSystem(conf).delete(path, True)
        except Exception as exc:  # cleanup must not hide the job's own outcome
            log.warning("could not remove the scratch folder %s: %s", self.uri, exc)


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}" if base else rel


def _file_uri_path(uri: str) -> str:
    """``file:///a/b`` → ``/a/b``."""
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(uri).path)


def _fmt_schema(schema_json: Any) -> str:
    return (
        "(" + ", ".join(f"{f['name']}: {_fmt_type(f['type'])}" for f in schema_json["fields"]) + ")"
    )


def _fmt_type(t: Any) -> str:
    if isinstance(t, str):
        return t
    kind = t.get("type")
    if kind == "array":
        return f"array<{_fmt_type(t['elementType'])}>"
    if kind == "map":
        return f"map<{_fmt_type(t['keyType'])},{_fmt_type(t['valueType'])}>"
    if kind == "struct":
        return (
            "struct<" + ",".join(f"{f['name']}:{_fmt_type(f['type'])}" for f in t["fields"]) + ">"
        )
    return str(kind)
