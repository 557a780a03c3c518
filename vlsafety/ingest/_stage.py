"""The ingest stage on Spark: sources → ``images`` + ``raw_pool`` (+ ``rejects``).

The driver only lists records (paths, prompts, labels — cheap) and streams them, in
chunks of :data:`STAGE_CHUNK`, to a staging parquet folder under the lake root; Spark
reads that folder back. So the driver holds one chunk, never the pool: its memory does
not grow with the number of records. Reading the bytes, sha256, header decoding and the
perceptual hash run once, in Spark tasks (``mapInArrow``), written to the staging folder
too; so a 300K-image pool is never decoded on the driver nor cached in memory. Counts
and reject reasons come back as ``groupBy`` aggregates. Tables are merged on their
content keys, so a rerun adds nothing that is already there. The staging folder is
removed when the stage ends.
"""

from __future__ import annotations

import functools
import logging
import math
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlsafety.ingest._adapters import parse_source, scan_source
from vlsafety.ingest._images import phash_to_int64, read_image_header
from vlsafety.ingest._options import IngestOptions
from vlsafety.ingest._records import (
    REJECT_COLUMNS,
    Reject,
    SourceFile,
    SourceRecord,
    image_id_of,
    reject_id_of,
    rejects_to_arrow,
    sample_id_of,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from vlsafety.lake import Lake

__all__ = [
    "IMAGE_COLUMNS",
    "OWN_DATA_KINDS",
    "RAW_POOL_COLUMNS",
    "SOURCES_SCHEMA",
    "fit_images_schema",
    "ingest_batch",
    "read_image_bytes",
    "records_to_arrow",
    "run_ingest",
]

STAGE = "ingest"

log = logging.getLogger(__name__)

#: Records (and driver-side rejects) per staging write: what the driver holds at most.
STAGE_CHUNK = 20_000

#: Records per Arrow batch inside a task (bounds a task's Python memory with image bytes).
TASK_BATCH = 256

_LABELS = pa.map_(pa.string(), pa.string())

#: Arrow schema of the listed records the driver hands to Spark.
RECORD_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_ref", pa.string()),
        ("text", pa.string()),
        ("text_error", pa.string()),
        ("labels", _LABELS),
        ("intent", pa.string()),
        ("image_kind", pa.string()),
        ("image_uri", pa.string()),
        ("image_data", pa.binary()),
        ("image_column", pa.string()),
        ("image_row", pa.int64()),
    ]
)

#: Output of the per-record task: a sample (status "ok") or a reject, plus the image.
OUTPUT_SCHEMA = pa.schema(
    [
        ("status", pa.string()),
        ("reject_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("text", pa.string()),
        ("text_error", pa.string()),
        ("source", pa.string()),
        ("source_ref", pa.string()),
        ("labels", _LABELS),
        ("intent", pa.string()),
        ("bytes", pa.binary()),
        ("size_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("n_frames", pa.int32()),
        ("exif_orientation", pa.int32()),
        ("phash", pa.int64()),
        ("phash_hex", pa.string()),
        ("decode_error", pa.string()),
        ("phash_fine", pa.binary()),
    ]
)

_OUTPUT_DDL = (
    "status string, reject_id string, reason string, detail string, sample_id string, "
    "image_id string, text string, text_error string, source string, source_ref string, "
    "labels map<string,string>, intent string, bytes binary, size_bytes bigint, width int, "
    "height int, format string, mode string, n_frames int, exif_orientation int, phash bigint, "
    "phash_hex string, decode_error string, phash_fine binary"
)

#: Columns of the content-addressed ``images`` table (key: image_id).
IMAGE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "bytes",
    "size_bytes",
    "width",
    "height",
    "format",
    "mode",
    "n_frames",
    "exif_orientation",
    "phash",
    "phash_hex",
    "decode_error",
    "phash_fine",
)


def fit_images_schema(lake: Lake, images: DataFrame) -> DataFrame:
    """``images`` rows as the lake's ``images`` table takes them: a table written before
    the ``phash_fine`` column keeps its schema (preprocess then checks those images from
    their bytes, as it always did)."""
    if lake.exists("images") and "phash_fine" not in lake.schema("images").names:
        return images.drop("phash_fine")
    return images


#: The ``sources`` table: each ingested ``KIND:PATH`` (keys: kind, path). ``source`` is the
#: name its records carry in ``raw_pool.source`` (the kind); ``listed`` its records and
#: rejects when it was first ingested. What ``vlsafety contamination`` compares against.
SOURCES_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("kind", pa.string()),
        ("path", pa.string()),
        ("listed", pa.int64()),
        ("ingested_at", pa.string()),  # UTC, ISO 8601
    ]
)

#: Adapter kinds that read a user's own data rather than a public benchmark release.
OWN_DATA_KINDS = ("folder", "manifest")


#: Columns of ``raw_pool`` (key: sample_id).
RAW_POOL_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "image_id",
    "text",
    "text_error",
    "source",
    "source_ref",
    "labels",
    "intent",
)


def records_to_arrow(records: Sequence[SourceRecord]) -> pa.Table:
    """Listed records as an Arrow table (:data:`RECORD_SCHEMA`)."""
    cols: dict[str, list[Any]] = {f.name: [] for f in RECORD_SCHEMA}
    for r in records:
        img = r.image
        cols["source"].append(r.source)
        cols["source_ref"].append(r.source_ref)
        cols["text"].append(r.text)
        cols["text_error"].append(r.text_error)
        cols["labels"].append(list(r.labels.items()))
        cols["intent"].append(r.intent)
        cols["image_kind"].append(img.kind if img else None)
        cols["image_uri"].append(img.uri if img else None)
        cols["image_data"].append(img.data if img else None)
        cols["image_column"].append(img.column if img else None)
        cols["image_row"].append(img.row if img else None)
    return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in RECORD_SCHEMA})


class _ParquetRows:
    """Reads single cells of parquet files by row index, caching the last row group
    (records of one file arrive in row order, so each row group is read once)."""

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}
        self._cached: tuple[str, str, int, pa.ChunkedArray] | None = None

    def get(self, uri: str, column: str, row: int) -> Any:
        import pyarrow.parquet as pq

        pf = self._files.get(uri)
        if pf is None:
            pf = self._files[uri] = pq.ParquetFile(uri)
        start = 0
        for rg in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            if row < start + n:
                if self._cached is None or self._cached[:3] != (uri, column, rg):
                    values = pf.read_row_group(rg, columns=[column]).column(0)
                    self._cached = (uri, column, rg, values)
                return self._cached[3][row - start].as_py()  # one cell, not the row group
            start += n
        raise IndexError(f"row {row} is past the end of {uri}")


def _fetch(url: str, options: IngestOptions) -> bytes:
    """Fetch an allowed remote image (http/https via urllib, s3 via pyarrow.fs)."""
    limit = options.max_fetch_bytes
    if url.lower().startswith("s3://"):
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(url)
        with filesystem.open_input_stream(path) as stream:
            data = stream.read(limit + 1)
    else:
        req = urllib.request.Request(url, headers={"User-Agent": "vlsafety-ingest"})
        # the scheme is http(s): is_remote() admitted only those (and s3, handled above)
        with urllib.request.urlopen(req, timeout=options.fetch_timeout_s) as resp:
            data = resp.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than max_fetch_bytes={limit}")
    return bytes(data)


def read_image_bytes(
    kind: str,
    uri: str | None,
    data: bytes | None,
    column: str | None,
    row: int | None,
    options: IngestOptions,
    parquet: _ParquetRows | None = None,
) -> bytes | tuple[str, str]:
    """The image bytes of one reference, or (reason, detail) when they cannot be read."""
    import os

    if kind == "inline":
        return data or b""
    if kind == "file":
        assert uri is not None
        try:
            size = os.stat(uri).st_size
            if size > options.max_file_bytes:
                return "file_too_large", f"{uri}: {size} bytes > {options.max_file_bytes}"
            with open(uri, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return "missing_file", f"{uri} disappeared before it was read"
        except OSError as exc:
            return "unreadable_file", f"{uri}: {exc}"
    if kind == "parquet":
        assert uri is not None and column is not None and row is not None
        try:
            value = (parquet or _ParquetRows()).get(uri, column, row)
        except (OSError, IndexError, pa.ArrowException) as exc:
            return "unreadable_file", f"{uri} row {row}: {exc}"
        if isinstance(value, dict):
            value = value.get("bytes")
        if not value:
            return "missing_file", f"{uri} row {row}: the embedded image is empty"
        if len(value) > options.max_file_bytes:
            return "file_too_large", f"{uri} row {row}: {len(value)} bytes"
        return bytes(value)
    if kind == "url":
        assert uri is not None
        if not options.allow_remote:
            return "remote_not_allowed", f"{uri} is remote; set allow_remote to fetch it"
        try:
            return _fetch(uri, options)
        except Exception as exc:  # network errors come in many types
            return "fetch_failed", f"{uri}: {type(exc).__name__}: {exc}"
    raise ValueError(f"unknown image reference kind {kind!r}")


def ingest_batch(
    batch: pa.RecordBatch, options: IngestOptions, parquet: _ParquetRows | None = None
) -> pa.RecordBatch:
    """Read, hash and describe the images of one batch of listed records."""
    out: dict[str, list[Any]] = {f.name: [] for f in OUTPUT_SCHEMA}
    parquet = parquet or _ParquetRows()
    none_image = dict.fromkeys(IMAGE_COLUMNS)

    def emit(**values: Any) -> None:
        for name in out:
            out[name].append(values.get(name))

    for rec in batch.to_pylist():
        base = {
            "text": rec["text"],
            "text_error": rec["text_error"],
            "source": rec["source"],
            "source_ref": rec["source_ref"],
            "labels": rec["labels"],
            "intent": rec["intent"],
        }
        if rec["image_kind"] is None:
            sid = sample_id_of(None, rec["text"], rec["source"], rec["source_ref"])
            emit(status="ok", sample_id=sid, **base, **none_image)
            continue
        got = read_image_bytes(
            rec["image_kind"],
            rec["image_uri"],
            rec["image_data"],
            rec["image_column"],
            rec["image_row"],
            options,
            parquet,
        )
        if isinstance(got, tuple):
            rid = reject_id_of(STAGE, got[0], rec["source"], rec["source_ref"], None)
            emit(status="reject", reject_id=rid, reason=got[0], detail=got[1], **base)
            continue
        image_id = image_id_of(got)
        header = read_image_header(got, max_pixels=options.max_pixels)
        sid = sample_id_of(image_id, rec["text"], rec["source"], rec["source_ref"])
        emit(
            status="ok",
            sample_id=sid,
            image_id=image_id,
            bytes=got,
            size_bytes=len(got),
            width=header.width,
            height=header.height,
            format=header.format,
            mode=header.mode,
            n_frames=header.n_frames,
            exif_orientation=header.exif_orientation,
            phash=None if header.phash is None else phash_to_int64(header.phash),
            phash_hex=None if header.phash is None else f"{header.phash:016x}",
            decode_error=header.decode_error,
            phash_fine=header.phash_fine,
            **base,
        )
    return pa.RecordBatch.from_pydict(
        {f.name: pa.array(out[f.name], type=f.type) for f in OUTPUT_SCHEMA}
    )


def _ingest_partition(
    batches: Iterator[pa.RecordBatch], options: IngestOptions
) -> Iterator[pa.RecordBatch]:
    parquet = _ParquetRows()
    for batch in batches:
        for start in range(0, batch.num_rows, TASK_BATCH):
            yield ingest_batch(batch.slice(start, TASK_BATCH), options, parquet)


class _Staging:
    """Listed records and driver-side rejects, appended chunk by chunk to parquet under
    ``<lake root>/_staging/ingest-<id>/`` (Spark writes, so every root Spark can write
    works: local, shared mounts, object stores, DBFS), read back as DataFrames."""

    def __init__(self, spark: SparkSession, lake: Lake, chunk: int | None = None) -> None:
        from vlsafety.lake import Scratch

        self.spark = spark
        self.chunk = chunk or STAGE_CHUNK
        self.scratch = Scratch(lake, "ingest")
        self.uri = self.scratch.uri
        self._records: list[SourceRecord] = []
        self._rejects: list[Reject] = []
        self.n_records = 0
        self.n_rejects = 0
        self.reasons: dict[str, int] = {}

    def add(self, item: SourceRecord | Reject) -> None:
        if isinstance(item, Reject):
            self._rejects.append(item)
            self.n_rejects += 1
            self.reasons[item.reason] = self.reasons.get(item.reason, 0) + 1
            if len(self._rejects) >= self.chunk:
                self._flush_rejects()
        else:
            self._records.append(item)
            self.n_records += 1
            if len(self._records) >= self.chunk:
                self._flush_records()

    def _flush_records(self) -> None:
        if self._records:
            table = records_to_arrow(self._records)
            self._records = []
            self.spark.createDataFrame(table).write.mode("append").parquet(f"{self.uri}/records")

    def _flush_rejects(self) -> None:
        if self._rejects:
            table = rejects_to_arrow(self._rejects)
            self._rejects = []
            self.spark.createDataFrame(table).write.mode("append").parquet(f"{self.uri}/rejects")

    def close(self) -> None:
        """Write what is left; the DataFrames below can be read from then on."""
        self._flush_records()
        self._flush_rejects()

    def records(self) -> DataFrame:
        return self.spark.read.parquet(f"{self.uri}/records")

    def rejects(self) -> DataFrame:
        return self.spark.read.parquet(f"{self.uri}/rejects")

    def remove(self) -> None:
        """Delete the staging folder (a failure to delete is logged, never raised)."""
        self.scratch.remove()


def _remember_sources(lake: Lake, listed: dict[str, int]) -> int:
    """Merge one ``sources`` row per ingested ``KIND:PATH`` (a source ingested before
    keeps its first row)."""
    from datetime import UTC, datetime

    rows: dict[str, list[Any]] = {f.name: [] for f in SOURCES_SCHEMA}
    now = datetime.now(UTC).isoformat()
    for spec, n in listed.items():
        kind, path = parse_source(spec)
        for name, value in zip(
            SOURCES_SCHEMA.names, (kind, kind, str(path.resolve()), n, now), strict=True
        ):
            rows[name].append(value)
    table = pa.table(rows, schema=SOURCES_SCHEMA)
    return lake.write(table, "sources", "merge", keys=["kind", "path"])


def run_ingest(
    spark: SparkSession,
    lake: Lake,
    sources: Sequence[str],
    options: IngestOptions | None = None,
    *,
    into: Callable[[DataFrame], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Ingest ``sources`` (``KIND:PATH`` strings) into the lake.

    With ``into``, the samples are not merged into ``raw_pool``: ``into`` is called
    once with them (the ``raw_pool`` columns, readable only during the call) and its
    counts are added to the result (``vlsafety ingest --as-benchmark``).

    Writes ``images`` (merge on image_id), ``raw_pool`` (merge on sample_id) and
    ``rejects`` (merge on reject_id). Returns counts: ``listed`` = ``samples`` +
    ``rejected`` (checked), ``rejected.<reason>`` per reason, ``images`` (distinct
    images read), ``intent.<intent>`` (listed records per intent), the table versions
    written, ``files.read`` / ``files.skipped`` and, per file the adapters looked at,
    ``file <kind>:<path>``: ``read, N listed`` or ``skipped: <why>``.

    Driver memory is bounded by :data:`STAGE_CHUNK` records, whatever the sources hold.
    """
    from pyspark.sql import functions as F

    options = options or IngestOptions()
    if not sources:
        raise ValueError("run_ingest: no sources given")
    seen: dict[tuple[str, str], str] = {}
    for spec in sources:
        kind, path = parse_source(spec)
        key = (kind, str(path.resolve()))
        if key in seen:
            raise ValueError(f"source {spec!r} is listed twice (also as {seen[key]!r})")
        seen[key] = spec
    if into is None and lake.exists("raw_pool") and "intent" not in lake.schema("raw_pool").names:
        raise ValueError(
            f"raw_pool under {lake.root} predates the intent column (harmful/benign/unknown); "
            "ingest into a new lake (preprocess still reads this one, as intent unknown)"
        )

    staging = _Staging(spark, lake)
    files: dict[str, str] = {}
    n_files = {"read": 0, "skipped": 0}
    intents: dict[str, int] = {}
    per_source: dict[str, int] = {}
    try:
        for spec in sources:
            current: str | None = None
            listed = 0
            taken = 0
            per_source[spec] = 0
            for item in scan_source(spec, options):
                if not isinstance(item, SourceFile):
                    if options.limit is not None and taken >= options.limit:
                        break
                    taken += 1
                if isinstance(item, SourceFile):
                    if current is not None:
                        files[current] = f"read, {listed} listed"
                    fkey = f"file {item.source}:{item.path}"
                    n_files["read" if item.read else "skipped"] += 1
                    current, listed = (fkey, 0) if item.read else (None, 0)
                    if not item.read:
                        files[fkey] = f"skipped: {item.reason}"
                    continue
                listed += 1
                per_source[spec] += 1
                if isinstance(item, SourceRecord):
                    intents[item.intent] = intents.get(item.intent, 0) + 1
                staging.add(item)
            if current is not None:
                files[current] = f"read, {listed} listed"
        staging.close()
        counts: dict[str, Any] = {
            "listed": staging.n_records + staging.n_rejects,
            "samples": 0,
            "rejected": 0,
            "images": 0,
        }
        reasons = dict(staging.reasons)
        reject_frames: list[DataFrame] = []
        if staging.n_rejects:
            reject_frames.append(staging.rejects())
        if staging.n_records:
            parts = options.partitions or max(
                1, math.ceil(staging.n_records / options.records_per_partition)
            )
            df = staging.records().repartition(parts)
            # Images are read and hashed once, into the staging folder; every later step
            # reads only the columns it needs from there. (A cache of the image bytes would
            # have to hold the whole pool in executor memory or spill it anyway.)
            df.mapInArrow(
                functools.partial(_ingest_partition, options=options), _OUTPUT_DDL
            ).write.parquet(f"{staging.uri}/read")
            out = spark.read.parquet(f"{staging.uri}/read")
            for row in out.groupBy("status", "reason").count().collect():
                if row["status"] == "ok":
                    counts["samples"] += int(row["count"])
                else:
                    reasons[row["reason"]] = reasons.get(row["reason"], 0) + int(row["count"])
            ok = out.filter(F.col("status") == "ok")
            images = ok.filter(F.col("image_id").isNotNull()).select(*IMAGE_COLUMNS)
            counts["images"] = images.select("image_id").distinct().count()
            task_rejects = (
                out.filter(F.col("status") == "reject")
                .withColumn("stage", F.lit(STAGE))
                .withColumn("sample_id", F.lit(None).cast("string"))
                .select(*REJECT_COLUMNS)
            )
            reject_frames.append(task_rejects)
            if counts["images"]:
                counts["images_version"] = lake.write(
                    fit_images_schema(lake, images), "images", "merge", keys=["image_id"]
                )
            if into is not None:
                counts.update(into(ok.select(*RAW_POOL_COLUMNS)))
            elif counts["samples"]:
                counts["raw_pool_version"] = lake.write(
                    ok.select(*RAW_POOL_COLUMNS), "raw_pool", "merge", keys=["sample_id"]
                )
        counts["sources_version"] = _remember_sources(lake, per_source)
        counts["rejected"] = sum(reasons.values())
        for reason, n in sorted(reasons.items()):
            counts[f"rejected.{reason}"] = n
        for intent, n in sorted(intents.items()):
            counts[f"intent.{intent}"] = n
        if counts["rejected"]:
            rejects = reject_frames[0]
            for frame in reject_frames[1:]:
                rejects = rejects.unionByName(frame)
            counts["rejects_version"] = lake.write(rejects, "rejects", "merge", keys=["reject_id"])
    finally:
        staging.remove()
    if counts["listed"] != counts["samples"] + counts["rejected"]:
        raise RuntimeError(
            f"ingest counts do not balance: listed {counts['listed']} != samples "
            f"{counts['samples']} + rejected {counts['rejected']}"
        )
    counts["files.read"] = n_files["read"]
    counts["files.skipped"] = n_files["skipped"]
    counts.update(files)
    return counts
