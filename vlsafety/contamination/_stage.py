"""The contamination check: a benchmark version against the ingested public benchmarks.

``vlsafety contamination --benchmark T@V [--against SOURCE ...]``: every sample of
``T@V`` is compared with every record of the named sources (default: each ingested
public benchmark, i.e. every ``sources`` kind but a user's own ``folder`` / ``manifest``
data) by :mod:`vlsafety.contamination._match`. The best match of each (sample, source,
kind) is merged into the ``contamination`` table under the check's content key, and a
per-source summary — the share of the benchmark with a match, overall and by kind —
comes back, is committed with the rows, logged to MLflow and shown in the report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlsafety.contamination._match import (
    KINDS,
    LEVELS,
    ContaminationOptions,
    exact_matches,
    key_units,
    near_matches,
    semantic_matches,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from vlsafety.config import Config
    from vlsafety.lake import Lake

__all__ = [
    "CONTAMINATION_SCHEMA",
    "REASON",
    "NoSourcesError",
    "check_contamination",
    "contaminated_samples",
    "format_summary",
    "ingested_sources",
    "latest_check",
    "resolve_against",
    "run_contamination",
    "summary_metrics",
]

TABLE = "contamination"
#: The reason prefix of a sample the build leaves out (``contaminated:<source>``).
REASON = "contaminated"

#: The ``contamination`` table (keys: check_id, sample_id, source, kind): per benchmark
#: sample, source and kind of match, the best matching record (highest similarity,
#: lowest record id on ties) and how many records of the source match that way.
CONTAMINATION_SCHEMA = pa.schema(
    [
        ("check_id", pa.string()),
        ("benchmark", pa.string()),
        ("benchmark_version", pa.int64()),
        ("sample_id", pa.string()),
        ("source", pa.string()),
        ("record_id", pa.string()),
        ("source_ref", pa.string()),
        ("kind", pa.string()),
        ("level", pa.string()),
        ("similarity", pa.float64()),
        ("n_matches", pa.int64()),
        ("checked_at", pa.string()),  # UTC, ISO 8601
    ]
)
_KEYS = ["check_id", "sample_id", "source", "kind"]


class NoSourcesError(ValueError):
    """Nothing to compare against: no public benchmark ingested, or an unknown name."""


def ingested_sources(lake: Lake) -> dict[str, list[str]]:
    """Source name (as ``raw_pool.source``) → the paths ingested under it: from the
    ``sources`` table (a small table, read on the driver), or for a lake ingested before
    it existed, the distinct ``raw_pool.source`` values (a Spark aggregate; no paths)."""
    if lake.exists("sources"):
        t = lake.read_arrow("sources", columns=["source", "path"])
        out: dict[str, list[str]] = {}
        for name, path in zip(
            t.column("source").to_pylist(), t.column("path").to_pylist(), strict=True
        ):
            out.setdefault(str(name), []).append(str(path))
        return {k: sorted(v) for k, v in sorted(out.items())}
    if not lake.exists("raw_pool"):
        return {}
    rows = lake.read("raw_pool").select("source").distinct().collect()
    return {str(r["source"]): [] for r in sorted(rows, key=lambda r: str(r["source"]))}


def resolve_against(available: dict[str, list[str]], against: Sequence[str] | None) -> list[str]:
    """The sources to compare with: ``against``, each of which must have been ingested,
    or every ingested public benchmark (not ``folder`` / ``manifest`` data)."""
    from vlsafety.ingest import OWN_DATA_KINDS

    known = ", ".join(available) or "none"
    if against:
        unknown = [a for a in against if a not in available]
        if unknown:
            raise NoSourcesError(
                f"--against {', '.join(unknown)}: not an ingested source (ingested: {known})"
            )
        return sorted(dict.fromkeys(against))
    public = [s for s in available if s not in OWN_DATA_KINDS]
    if not public:
        raise NoSourcesError(
            f"no public benchmark has been ingested (ingested: {known}); ingest one with "
            "`vlsafety ingest --source KIND:PATH` or name a source with --against"
        )
    return public


def _check_id(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _vector_column(columns: Sequence[str]) -> str | None:
    return next((c for c in ("embedding", "joint_embedding") if c in columns), None)


def _semantic_vectors(
    lake: Lake,
    q: DataFrame,
    r: DataFrame,
    q_vec: str | None,
    opts: ContaminationOptions,
    notes: list[str],
) -> tuple[DataFrame | None, int]:
    """(uid, vec) of both sides for the semantic level and their count, or None (with a
    note) when the embeddings are missing, of another dimension, or an untrained model's."""
    from pyspark.sql import functions as F

    if q_vec is None:
        notes.append("semantic: the benchmark has no embedding column")
        return None, 0
    if not lake.exists("pool") or "joint_embedding" not in lake.schema("pool").names:
        notes.append("semantic: no pool with joint embeddings (run `vlsafety preprocess`)")
        return None, 0
    pool = lake.read("pool")
    recs = r.select("uid", "record_id").join(
        pool.select(
            F.col("sample_id").alias("record_id"),
            F.col("joint_embedding").alias("vec"),
            *(["embedder_untrained"] if "embedder_untrained" in pool.columns else []),
        ),
        "record_id",
    )
    recs = recs.where(F.col("vec").isNotNull() & (F.size("vec") > 0))
    qv = q.select("uid", F.col(q_vec).alias("vec")).where(
        F.col("vec").isNotNull() & (F.size("vec") > 0)
    )
    untrained = (
        F.col("embedder_untrained").cast("int")
        if "embedder_untrained" in recs.columns
        else F.lit(0)
    )
    sides = qv.select(F.lit(0).alias("side"), "vec", F.lit(0).alias("untrained")).unionByName(
        recs.select(F.lit(1).alias("side"), "vec", untrained.alias("untrained"))
    )
    agg = {  # one job: the dimensions of each side, and whether the pool's model is trained
        int(x["side"]): x
        for x in sides.groupBy("side")
        .agg(
            F.min(F.size("vec")).alias("dmin"),
            F.max(F.size("vec")).alias("dmax"),
            F.max("untrained").alias("untrained"),
            F.count("*").alias("n"),
        )
        .collect()
    }
    if len(agg) < 2:
        notes.append("semantic: no embeddings on one side (benchmark or public records)")
        return None, 0
    q_d, r_d = (agg[0]["dmin"], agg[0]["dmax"]), (agg[1]["dmin"], agg[1]["dmax"])
    if len({*q_d, *r_d}) != 1:
        notes.append(
            f"semantic: embedding dimensions differ (benchmark {q_d[0]}-{q_d[1]}, "
            f"public records {r_d[0]}-{r_d[1]}); skipped"
        )
        return None, 0
    if agg[1]["untrained"] and not opts.trust_untrained:
        notes.append(
            "semantic: the pool's embedder is untrained (random weights); skipped "
            "(preprocess.trust_untrained compares them anyway)"
        )
        return None, 0
    return qv.unionByName(recs.select("uid", "vec")), int(agg[0]["n"]) + int(agg[1]["n"])


def run_contamination(
    spark: SparkSession,
    lake: Lake,
    table: str,
    version: int | None = None,
    *,
    against: Sequence[str] | None = None,
    options: ContaminationOptions | None = None,
) -> dict[str, Any]:
    """Compare ``table@version`` with the public records and merge the matches into
    ``contamination``. Returns the summary (see :func:`format_summary`); the driver
    receives counts and aggregates only.

    Raises:
        NoSourcesError: nothing to compare against.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    opts = options or ContaminationOptions()
    version = lake.version(table) if version is None else version
    sources = resolve_against(ingested_sources(lake), against)
    parts = opts.partitions or int(spark.conf.get("spark.sql.shuffle.partitions") or 8)
    bench = lake.read(table, version=version)
    id_col = "candidate_id" if "candidate_id" in bench.columns else "sample_id"
    q_vec = _vector_column(bench.columns)
    img_cols = ["image_id", "phash"] + (
        ["phash_fine"] if "phash_fine" in lake.schema("images").names else []
    )
    images = lake.read("images").select(*img_cols)
    if "phash_fine" not in img_cols:
        images = images.withColumn("phash_fine", F.lit(None).cast("binary"))
    # even uids: benchmark samples; odd uids: public records (semantic_matches relies on it)
    q = (
        bench.select(
            F.col(id_col).alias("sample_id"), "image_id", "text", *([q_vec] if q_vec else [])
        )
        .dropDuplicates(["sample_id"])
        .withColumn("uid", F.xxhash64("sample_id").bitwiseAND(F.lit(-2)))
        .join(images, "image_id", "left")
    )
    r = (
        lake.read("raw_pool")
        .where(F.col("source").isin(sources))
        .select(F.col("sample_id").alias("record_id"), "source", "source_ref", "image_id", "text")
        .withColumn("uid", F.xxhash64("record_id").bitwiseOR(F.lit(1)))
        .join(images, "image_id", "left")
    )
    q = q.persist(StorageLevel.MEMORY_AND_DISK)
    r = r.persist(StorageLevel.MEMORY_AND_DISK)
    notes: list[str] = []
    try:
        # one job: the benchmark's size (null source) and the records of each source
        sizes = {
            row["source"]: int(row["count"])
            for row in r.select("source")
            .unionByName(q.select(F.lit(None).cast("string").alias("source")))
            .groupBy("source")
            .count()
            .collect()
        }
        n_samples = sizes.pop(None, 0)
        records = {str(k): v for k, v in sizes.items()}
        q_keyed = key_units(q, opts, query=True).persist(StorageLevel.MEMORY_AND_DISK)
        r_keyed = key_units(r, opts, query=False).persist(StorageLevel.MEMORY_AND_DISK)
        matches = exact_matches(q, r).unionByName(near_matches(q_keyed, r_keyed, opts, parts))
        vecs, n_vecs = _semantic_vectors(lake, q, r, q_vec, opts, notes)
        stats: dict[str, float] = {}
        if vecs is not None:
            sem, stats = semantic_matches(vecs, n_vecs, opts, parts)
            if sem is not None:
                matches = matches.unionByName(sem)
        check_id = _check_id(
            {
                "benchmark": table,
                "version": version,
                "against": sources,
                # what decides the matches (the partition count does not)
                "options": {k: v for k, v in asdict(opts).items() if k != "partitions"},
                "inputs": {
                    t: lake.version(t)
                    for t in ("raw_pool", "images", "pool", "sources")
                    if lake.exists(t)
                },
            }
        )
        best = Window.partitionBy("sample_id", "source", "kind").orderBy(
            F.col("similarity").desc(), F.col("record_id")
        )
        named = (
            matches.join(q.select(F.col("uid").alias("q_uid"), "sample_id"), "q_uid")
            .join(
                r.select(F.col("uid").alias("r_uid"), "record_id", "source", "source_ref"),
                "r_uid",
            )
            .dropDuplicates(["sample_id", "record_id", "kind"])
        )
        level = F.create_map(*[x for k in KINDS for x in (F.lit(k), F.lit(LEVELS[k]))])
        rows = (
            named.withColumn("_rank", F.row_number().over(best))
            .withColumn(
                "n_matches", F.count("*").over(Window.partitionBy("sample_id", "source", "kind"))
            )
            .where(F.col("_rank") == 1)
            .select(
                F.lit(check_id).alias("check_id"),
                F.lit(table).alias("benchmark"),
                F.lit(version).cast("bigint").alias("benchmark_version"),
                "sample_id",
                "source",
                "record_id",
                "source_ref",
                "kind",
                level[F.col("kind")].alias("level"),
                "similarity",
                F.col("n_matches").cast("bigint"),
                F.lit(datetime.now(UTC).isoformat()).alias("checked_at"),
            )
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            # one job: distinct samples per (source, kind), per source, per kind and in all
            counts: dict[tuple[str | None, str | None], int] = {}
            for x in (
                rows.cube("source", "kind")
                .agg(F.countDistinct("sample_id").alias("n"), F.grouping_id().alias("g"))
                .collect()
            ):
                g = int(x["g"])
                key = (None if g & 2 else str(x["source"]), None if g & 1 else str(x["kind"]))
                counts[key] = int(x["n"])
            summary = _summary(f"{table}@{version}", n_samples, sources, records, counts)
            summary.update(check_id=check_id, notes=notes, **stats)
            summary["contamination_version"] = lake.write(
                rows,
                TABLE,
                "merge",
                keys=_KEYS,
                metadata={
                    "check_id": check_id,
                    "benchmark": table,
                    "benchmark_version": version,
                    "summary": summary,
                },
            )
        finally:
            rows.unpersist()
            q_keyed.unpersist()
            r_keyed.unpersist()
    finally:
        q.unpersist()
        r.unpersist()
    return summary


def _summary(
    benchmark: str,
    n: int,
    sources: list[str],
    records: dict[str, int],
    counts: dict[tuple[str | None, str | None], int],
) -> dict[str, Any]:
    """``counts``: distinct contaminated samples by (source, kind); None = all of them."""

    def part(source: str | None, n_records: int) -> dict[str, Any]:
        hit = counts.get((source, None), 0)
        return {
            "records": n_records,
            "contaminated": hit,
            "share": hit / n if n else 0.0,
            "kinds": {
                k: {
                    "samples": counts.get((source, k), 0),
                    "share": counts.get((source, k), 0) / n if n else 0.0,
                }
                for k in KINDS
            },
        }

    return {
        "benchmark": benchmark,
        "samples": n,
        "against": sources,
        "sources": {s: part(s, records.get(s, 0)) for s in sources},
        "any": part(None, sum(records.values())),
    }


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary as MLflow metrics: ``contamination.<source>.share`` and
    ``contamination.<source>.<kind>.share`` (``any`` for the union of the sources)."""
    out: dict[str, float] = {"contamination.samples": float(summary["samples"])}
    for name, s in [*summary["sources"].items(), ("any", summary["any"])]:
        out[f"contamination.{name}.share"] = float(s["share"])
        out[f"contamination.{name}.contaminated"] = float(s["contaminated"])
        for kind, k in s["kinds"].items():
            out[f"contamination.{name}.{kind}.share"] = float(k["share"])
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The per-source summary as a text table (share of the benchmark, by kind)."""
    head = (
        f"contamination of {summary['benchmark']} ({summary['samples']} samples) against "
        f"{', '.join(summary['against'])} (check {summary.get('check_id', '-')})"
    )
    cols = ["records", "contaminated", "share", *KINDS]
    width = max(12, *(len(s) for s in summary["sources"]))
    lines = [head, f"  {'source':<{width}} " + " ".join(f"{c:>12}" for c in cols)]
    for name, s in [*summary["sources"].items(), ("any", summary["any"])]:
        cells = [
            f"{s['records']:>12}",
            f"{s['contaminated']:>12}",
            f"{s['share']:>12.1%}",
            *(f"{s['kinds'][k]['share']:>12.1%}" for k in KINDS),
        ]
        lines.append(f"  {name:<{width}} " + " ".join(cells))
    lines.append("  share: of the benchmark's samples with a match of that source (and kind)")
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def latest_check(lake: Lake, table: str, version: int) -> dict[str, Any] | None:
    """The summary of the latest check of ``table@version`` (from the contamination
    table's commit metadata), or None."""
    if not lake.exists(TABLE):
        return None
    for entry in lake.history(TABLE):
        meta = entry.get("metadata") or {}
        if meta.get("benchmark") == table and str(meta.get("benchmark_version")) == str(version):
            raw = meta.get("summary")
            summary = json.loads(raw) if isinstance(raw, str) else raw
            if isinstance(summary, dict):
                return summary
    return None


def contaminated_samples(lake: Lake, check_id: str) -> pa.Table:
    """One row per contaminated sample of a check: ``sample_id, source, record_id, kind,
    similarity`` of its strongest match (kind order exact → near → semantic, then the
    highest similarity, then the source name). Bounded by the benchmark's size."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = F.create_map(*[x for i, k in enumerate(KINDS) for x in (F.lit(k), F.lit(i))])
    w = Window.partitionBy("sample_id").orderBy(
        order[F.col("kind")], F.col("similarity").desc(), F.col("source"), F.col("record_id")
    )
    rows = (
        lake.read(TABLE)
        .where(F.col("check_id") == check_id)
        .withColumn("_rank", F.row_number().over(w))
        .where(F.col("_rank") == 1)
        .select("sample_id", "source", "record_id", "kind", "similarity")
        .orderBy("sample_id")
    )
    return rows.toArrow()


def check_contamination(
    cfg: Config,
    lake: Lake,
    table: str,
    version: int | None,
    *,
    against: Sequence[str] | None = None,
    command: str = "vlsafety contamination",
) -> dict[str, Any]:
    """:func:`run_contamination` as one MLflow run (thresholds from ``preprocess.*``):
    the summary's shares as metrics, the summary as ``contamination_summary.json``."""
    from vlsafety.tracking import track

    if lake.spark is None:
        raise ValueError("the contamination check needs a Lake with a Spark session")
    opts = ContaminationOptions.from_preprocess(cfg.preprocess)
    with track(cfg, command, lake=lake, run_name="contamination") as rec:
        summary = run_contamination(lake.spark, lake, table, version, against=against, options=opts)
        rec.log_metrics(summary_metrics(summary))
        rec.log_dict(summary, "contamination_summary.json")
        summary["run_id"] = rec.run_id
    return summary
