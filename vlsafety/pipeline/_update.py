"""The update job (VLSafetyBencher §5.2): refresh an existing benchmark.

The benchmark's samples (a benchmark version, or rows of any table with ``image_id``,
``text``, ``category`` and an id — e.g. MM-SafetyBench or FigStep samples from ``pool``,
selected with ``--where``) are embedded, answered by the victim panel and judged (all
cached), ranked by the selection criterion ``C(s, B∖{s})``, and the worst share is
replaced by the best samples of the scored pool, chosen greedily against the kept set.
The result is written as the next version of the output table, with before/after
MAD / MEAN / GAP over the victim panel.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlsafety.config import Config
from vlsafety.lake import Lake
from vlsafety.pipeline._build import _write_rejects, load_models, score_current
from vlsafety.pipeline._runner import run_stage
from vlsafety.tracking import RunRecorder, track

__all__ = ["BENCHMARK_COLUMNS", "update"]

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


def _project(table: pa.Table) -> pa.Table:
    cols = []
    names = []
    for c in BENCHMARK_COLUMNS:
        if c in table.column_names:
            cols.append(table.column(c))
        else:
            cols.append(pa.nulls(table.num_rows, pa.string()))
        names.append(c)
    return pa.table(cols, names=names)


def _quality(harmful: list[list[bool | None]], victims: list[str]) -> dict[str, float]:
    from vlsafety.metrics import benchmark_quality

    # None: the model's response had no judgment (score.missing: exclude) — not a 0.
    flags = np.asarray([[np.nan if v is None else v for v in row] for row in harmful], dtype=float)
    if flags.size == 0:
        return {}
    with np.errstate(invalid="ignore"):
        asr = np.nanmean(flags, axis=0)
    return benchmark_quality(dict(zip(victims, asr.tolist(), strict=True)))


def update(
    cfg: Config,
    lake: Lake,
    benchmark: str,
    version: int | None,
    *,
    replace: float,
    out: str | None = None,
    where: str | None = None,
    command: str = "vlsafety update",
) -> dict[str, Any]:
    """Replace the worst ``replace`` share of ``benchmark@version`` (see module docstring)."""
    from pyspark.sql import functions as F

    from vlsafety.pipeline._model_stages import embed_candidates, judge_responses, respond
    from vlsafety.selection import update_benchmark
    from vlsafety.taxonomy import load_taxonomy

    if not 0.0 <= replace <= 1.0:
        raise ValueError(f"--replace must be in [0, 1], got {replace}")
    models = load_models(cfg)
    if models.embedder is None or not models.victims or len(models.judges) < 1:
        raise ValueError("update needs models.embedder, models.victims and models.judges")
    if not lake.exists("scored"):
        raise ValueError("no scored pool to draw replacements from: run `vlsafety build` first")
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
        bench = _as_candidates(src)
        n_bench = bench.count()
        if n_bench == 0:
            raise ValueError(
                f"{benchmark}@{version} has no rows{' matching --where' if where else ''}"
            )

        def _score(r: RunRecorder) -> dict[str, Any]:
            embed_candidates(lake, bench, models.embedder)
            respond(lake, bench, models.victims)
            judge_responses(
                lake,
                bench,
                models.victims,
                models.judges,
                models.evaluator,
                min_token_mass=cfg.judges.elite.min_token_mass,
            )
            emb = lake.read("candidate_embeddings").where(F.col("model_id") == models.embedder.id)
            with score_current(
                lake,
                bench,
                emb.dropDuplicates(["candidate_id"]),
                models,
                harmful_threshold=cfg.build.harmful_threshold,
                missing=cfg.score.missing,
                min_token_mass=cfg.judges.elite.min_token_mass,
            ) as (scored, rejects):
                self_scored.append(scored.toPandas())
                n_bad = rejects.count()
                if n_bad:
                    _write_rejects(lake, rejects)
            return {"rows_in": n_bench, "rows_out": n_bench - n_bad, "rejected": n_bad}

        self_scored: list[Any] = []
        stage = run_stage("score", _score, cfg=cfg, lake=lake, parent=rec)
        bench_tbl = pa.Table.from_pandas(self_scored[0], preserve_index=False)
        pool = lake.read_arrow("scored")
        pool = pool.filter(
            pc.invert(
                pc.is_in(pool.column("candidate_id"), value_set=bench_tbl.column("candidate_id"))
            )
        )
        pool = pool.filter(pc.is_in(pool.column("category"), value_set=pa.array(names)))

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
        if pool.num_rows:
            p = arrays(pool)
        else:
            p = (np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, b[3].shape[1])))
        result = update_benchmark(
            *b, *p, n_categories=len(names), replace_fraction=replace, weights=cfg.select.weights
        )
        kept = bench_tbl.take(pa.array(result.kept))
        added = pool.take(pa.array(result.added)) if len(result.added) else pool.slice(0, 0)
        parts = [_project(kept), _project(added)]
        schema = pa.unify_schemas([t.schema for t in parts], promote_options="permissive")
        new = pa.concat_tables([t.cast(schema) for t in parts])
        new = new.append_column(
            "update_role", pa.array(["kept"] * kept.num_rows + ["added"] * added.num_rows)
        )
        before = _quality(bench_tbl.column("harmful").to_pylist(), victims)
        after = _quality(new.column("harmful").to_pylist(), victims)
        new_version = lake.write(
            new,
            out,
            "overwrite",
            keys=["candidate_id"],
            metadata={
                "update_of": f"{benchmark}@{version}",
                "replace": replace,
                "where": where or "",
            },
        )
        rec.log_metrics({f"before.{k}": v for k, v in before.items()})
        rec.log_metrics({f"after.{k}": v for k, v in after.items()})
        summary = {
            "run_id": rec.run_id,
            "source": f"{benchmark}@{version}",
            "out": f"{out}@{new_version}",
            "removed": [bench_tbl.column("candidate_id")[int(i)].as_py() for i in result.removed],
            "added": added.column("candidate_id").to_pylist(),
            "n_before": bench_tbl.num_rows,
            "n_after": new.num_rows,
            "before": before,
            "after": after,
            "stages": [stage.as_dict()],
            "duration_s": time.perf_counter() - started,
        }
        rec.log_dict(json.loads(json.dumps(summary, default=str)), "update_summary.json")
    return summary
