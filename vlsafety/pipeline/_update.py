"""The update job (VLSafetyBencher §5.2): refresh an existing benchmark.

The benchmark's samples (a benchmark version, or rows of any table with ``image_id``,
``text``, ``category`` and an id — e.g. MM-SafetyBench or FigStep samples from ``pool``,
selected with ``--where``) are embedded, answered by the victim panel and judged (all
cached), ranked by the selection criterion ``C(s, B∖{s})``, and the worst share is
replaced by the best samples of the scored pool, chosen greedily against the kept set.
The result is written as the next version of the output table, with before/after
MAD / MEAN / GAP over the victim panel and DIV (the paper's Table 2), also kept in the
Delta commit's metadata (``quality_before`` / ``quality_after``) for the report.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from vlsafety.config import Config
from vlsafety.lake import Lake
from vlsafety.pipeline._build import load_models
from vlsafety.tracking import track

__all__ = ["BENCHMARK_COLUMNS", "QUALITY_KEYS", "quality_table", "update"]

#: Columns of a benchmark version written by update (missing ones are null).
BENCHMARK_COLUMNS = (
    "candidate_id",
    "parent_sample_id",
    "image_id",
    "text",
    "category",
    "subcategory",
    "strategy",
    "harm_pattern",
    "origin",
    "p_h",
    "harm",
    "harmful",
    "elite",
    "embedding",
)


def _as_candidates(df: Any) -> Any:
    from pyspark.sql import functions as F

    cols = set(df.columns)
    if "candidate_id" not in cols:
        if "sample_id" not in cols:
            raise ValueError("benchmark rows need a candidate_id or sample_id column")
        df = df.withColumn("candidate_id", F.col("sample_id"))
    missing = [c for c in ("image_id", "text", "category") if c not in df.columns]
    if missing:
        raise ValueError(
            f"benchmark rows lack column(s) {missing} (preprocess categorizes samples)"
        )
    if "strategy" not in df.columns:
        df = df.withColumn("strategy", F.lit("original"))
    return df.dropDuplicates(["candidate_id"])


def _project(parts: list[pa.Table]) -> pa.Table:
    """``parts`` stacked in :data:`BENCHMARK_COLUMNS` plus the lineage columns of a
    public benchmark that any part has (:data:`vlsafety.pipeline.PUBLIC_COLUMNS`); a
    column a part lacks is null there, typed as in the part that has it."""
    from vlsafety.pipeline._public import PUBLIC_COLUMNS

    names = [*BENCHMARK_COLUMNS, *(c for c in PUBLIC_COLUMNS if c not in BENCHMARK_COLUMNS)]
    types: dict[str, pa.DataType] = {}
    for t in parts:
        for f in t.schema:
            if f.name in names and not pa.types.is_null(f.type):
                types.setdefault(f.name, f.type)
    names = [c for c in names if c in BENCHMARK_COLUMNS or c in types]
    out = []
    for t in parts:
        cols = []
        for c in names:
            typ = types.get(c, pa.string())
            cols.append(t.column(c).cast(typ) if c in t.column_names else pa.nulls(t.num_rows, typ))
        out.append(pa.table(cols, names=names))
    return pa.concat_tables(out)


def _quality(harmful: list[list[bool | None]], victims: list[str]) -> dict[str, float]:
    from vlsafety.metrics import benchmark_quality

    # None: the model's response had no judgment (score.missing: exclude) — not a 0.
    flags = np.asarray([[np.nan if v is None else v for v in row] for row in harmful], dtype=float)
    if flags.size == 0:
        return {}
    with np.errstate(invalid="ignore"):
        asr = np.nanmean(flags, axis=0)
    return benchmark_quality(dict(zip(victims, asr.tolist(), strict=True)))


def _div(category: NDArray[np.int64], embedding: NDArray[np.float64], n_categories: int) -> float:
    """DIV (VLSafetyBencher §5.1.1) of a set taken in a fixed order: the caller's (ids
    ascending, a content-hash order that favours neither the old nor the new set)."""
    from vlsafety.metrics import diversity

    return diversity(category, embedding, n_categories)


#: Row order of the before/after table (the paper's Table 2 columns).
QUALITY_KEYS = ("mad", "mean", "gap", "div")


def quality_table(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """The before → after lines ``update`` prints (VLSafetyBencher Table 2)."""
    lines = [f"  {'metric':<6} {'before':>8}  {'after':>8}  {'change':>8}"]
    for key in QUALITY_KEYS:
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            continue
        lines.append(f"  {key.upper():<6} {b:>8.4f} → {a:>8.4f}  {a - b:>+8.4f}")
    return lines


def update(
    cfg: Config,
    lake: Lake,
    benchmark: str,
    version: int | None,
    *,
    replace: float,
    out: str | None = None,
    where: str | None = None,
    pool: str = "scored",
    pool_version: int | None = None,
    command: str = "vlsafety update",
) -> dict[str, Any]:
    """Replace the worst ``replace`` share of ``benchmark@version`` by the best samples
    of ``pool@pool_version`` (any build's ``scored`` table; see the module docstring).

    Multiple-choice questions (a public benchmark's ``multiple_choice`` rows) are left
    out of the experiment, as in §5.2: not scored, ranked or replaced, not in the
    figures, and carried over unchanged (``update_role`` ``excluded``). The summary's
    ``before`` / ``after`` hold MAD / MEAN / GAP over the victim panel and DIV (the set
    in candidate-id order) of the scored part.
    """
    from pyspark.sql import functions as F

    from vlsafety.pipeline._public import panel_score
    from vlsafety.selection import update_benchmark
    from vlsafety.taxonomy import load_taxonomy

    if not 0.0 <= replace <= 1.0:
        raise ValueError(f"--replace must be in [0, 1], got {replace}")
    models = load_models(cfg)
    if models.embedder is None or not models.victims or len(models.judges) < 1:
        raise ValueError("update needs models.embedder, models.victims and models.judges")
    if not lake.exists(pool):
        raise ValueError(f"no pool {pool!r} to draw replacements from: run `vlsafety build` first")
    pool_version = lake.version(pool) if pool_version is None else pool_version
    out = out or cfg.build.benchmark_table
    version = lake.version(benchmark) if version is None else version
    taxonomy = load_taxonomy(cfg.select.taxonomy)
    names = taxonomy.names
    victims = [s.id for s in models.victims]
    started = time.perf_counter()
    with track(cfg, command, lake=lake, run_name="update") as rec:
        src = lake.read(benchmark, version=version)
        if where:
            src = src.where(where)
        rows = _as_candidates(src)
        mcq = F.coalesce(F.col("multiple_choice"), F.lit(False))
        if "multiple_choice" in rows.columns:
            excluded = rows.where(mcq).toArrow()
            bench = rows.where(~mcq)
        else:
            excluded, bench = None, rows
        n_bench = bench.count()
        if n_bench == 0:
            raise ValueError(
                f"{benchmark}@{version} has no rows{' matching --where' if where else ''}"
                + (" that are not multiple-choice questions" if excluded is not None else "")
            )
        bench_tbl, stage = panel_score(cfg, lake, bench, models, parent=rec)
        order = pc.sort_indices(bench_tbl, sort_keys=[("candidate_id", "ascending")])
        bench_tbl = bench_tbl.take(order)
        pool_tbl = lake.read_arrow(pool, version=pool_version)
        pool_tbl = pool_tbl.filter(
            pc.invert(
                pc.is_in(
                    pool_tbl.column("candidate_id"), value_set=bench_tbl.column("candidate_id")
                )
            )
        )
        pool_tbl = pool_tbl.filter(pc.is_in(pool_tbl.column("category"), value_set=pa.array(names)))

        def arrays(t: pa.Table) -> tuple[Any, Any, Any, Any]:
            from vlsafety.arrays import vectors
            from vlsafety.selection import separability

            sep = separability(t.column("p_h").to_numpy().astype(float))
            harm = t.column("harm").to_numpy().astype(float)
            # category ids by the taxonomy's order, computed in Arrow (no Python strings)
            cat = pc.index_in(t.column("category"), value_set=pa.array(names)).to_numpy()
            emb = vectors(t, "embedding", np.float64)
            return sep, harm, np.asarray(cat, dtype=np.int64), emb

        unknown = [c for c in set(bench_tbl.column("category").to_pylist()) if c not in names]
        if unknown:
            raise ValueError(
                f"benchmark categories {unknown} are not in taxonomy {cfg.select.taxonomy!r}"
            )
        b = arrays(bench_tbl)
        if pool_tbl.num_rows:
            p = arrays(pool_tbl)
        else:
            p = (np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, b[3].shape[1])))
        result = update_benchmark(
            *b, *p, n_categories=len(names), replace_fraction=replace, weights=cfg.select.weights
        )
        kept = bench_tbl.take(pa.array(result.kept))
        added = pool_tbl.take(pa.array(result.added)) if len(result.added) else pool_tbl.slice(0, 0)
        pool_ref = f"{pool}@{pool_version}"
        if "source" in kept.column_names and "source" not in added.column_names:
            added = added.append_column(
                "source", pa.array([pool_ref] * added.num_rows, pa.string())
            )
        parts = [kept, added] + ([excluded] if excluded is not None else [])
        new = _project(parts)
        roles = ["kept"] * kept.num_rows + ["added"] * added.num_rows
        roles += ["excluded"] * (excluded.num_rows if excluded is not None else 0)
        new = new.append_column("update_role", pa.array(roles))
        before = _quality(bench_tbl.column("harmful").to_pylist(), victims)
        scored_part = new.slice(0, kept.num_rows + added.num_rows)
        after = _quality(scored_part.column("harmful").to_pylist(), victims)
        before["div"] = _div(b[2], b[3], len(names))
        after_order = pc.sort_indices(scored_part, sort_keys=[("candidate_id", "ascending")])
        after_arrays = np.concatenate([b[2][result.kept], p[2][result.added]])
        after_emb = np.concatenate([b[3][result.kept], p[3][result.added]])
        idx = np.asarray(after_order)
        after["div"] = _div(after_arrays[idx], after_emb[idx], len(names))
        new_version = lake.write(
            new,
            out,
            "overwrite",
            keys=["candidate_id"],
            metadata={
                "update_of": f"{benchmark}@{version}",
                "pool": pool_ref,
                "replace": replace,
                "where": where or "",
                "quality_before": json.dumps(before, sort_keys=True),
                "quality_after": json.dumps(after, sort_keys=True),
            },
        )
        rec.log_metrics({f"before.{k}": v for k, v in before.items()})
        rec.log_metrics({f"after.{k}": v for k, v in after.items()})
        summary = {
            "run_id": rec.run_id,
            "source": f"{benchmark}@{version}",
            "pool": pool_ref,
            "out": f"{out}@{new_version}",
            "removed": [bench_tbl.column("candidate_id")[int(i)].as_py() for i in result.removed],
            "added": added.column("candidate_id").to_pylist(),
            "n_before": bench_tbl.num_rows,
            "n_after": scored_part.num_rows,
            "n_excluded": excluded.num_rows if excluded is not None else 0,
            "before": before,
            "after": after,
            "stages": [stage],
            "duration_s": time.perf_counter() - started,
        }
        rec.log_dict(json.loads(json.dumps(summary, default=str)), "update_summary.json")
    return summary
