"""Gathers a report's data from the lake and MLflow (``vlsafety report``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vlsafety.arrays import vectors
from vlsafety.config import Config
from vlsafety.lake import Lake, parse_table_ref
from vlsafety.report import ReportData, render_report
from vlsafety.tracking import track

__all__ = ["report_data", "resolve_ref", "write_report"]

log = logging.getLogger("vlsafety")


def resolve_ref(cfg: Config, lake: Lake, ref: str) -> tuple[str, int, str | None]:
    """``TABLE[@VERSION]`` or an MLflow run id → (table, version, run id)."""
    if "@" in ref or (_is_name(ref) and lake.exists(ref)):
        table, version = parse_table_ref(ref)
        version = lake.version(table) if version is None else version
        run_id = next((h["run_id"] for h in lake.history(table) if h["version"] == version), None)
        return table, version, run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    try:
        run = client.get_run(ref)
    except Exception as exc:
        raise ValueError(f"{ref!r} is neither a table reference nor an MLflow run id") from exc
    table = cfg.build.benchmark_table
    tag = run.data.tags.get(f"delta.write.{table}")
    if tag is None:
        raise ValueError(f"run {ref} wrote no {table!r} version (tags: delta.write.*)")
    return table, int(tag.rsplit("@v", 1)[1]), ref


def _is_name(ref: str) -> bool:
    try:
        parse_table_ref(ref)
    except ValueError:
        return False
    return True


def _harmful(bench: pd.DataFrame) -> np.ndarray | None:
    """The panel's 0/1 flags, or None when absent or incomplete (an unjudged model under
    ``score.missing: exclude`` has no flag, and these figures need a full panel)."""
    if "harmful" not in bench.columns or bench["harmful"].isna().any() or bench.empty:
        return None
    rows = [[np.nan if x is None else x for x in v] for v in bench["harmful"]]
    flags = np.asarray(rows, dtype=float)
    return None if np.isnan(flags).any() else flags


def report_data(
    cfg: Config, lake: Lake, table: str, version: int, run_id: str | None
) -> ReportData:
    """Collect every section's data for ``table@version`` (sections with no data say why)."""
    from vlsafety.metrics import benchmark_quality, stability
    from vlsafety.selection import separability, weight_sweep
    from vlsafety.taxonomy import load_taxonomy

    bench = lake.read_arrow(table, version=version).to_pandas()
    data = ReportData(
        title=f"{table}@{version}", subtitle=f"{len(bench)} samples · MLflow run {run_id or '-'}"
    )
    # leaderboard and quality
    if lake.exists("leaderboard"):
        lb = lake.read_arrow("leaderboard").to_pandas()
        lb = lb[(lb["benchmark"] == table) & (lb["benchmark_version"] == version)]
        if not lb.empty:
            lb = lb.sort_values("evaluated_at").drop_duplicates(
                ["model_id", "category"], keep="last"
            )
            data.leaderboard = lb.rename(columns={"model_id": "model"})
            overall = data.leaderboard[data.leaderboard["category"] == "overall"]
            if len(overall) >= 1:
                data.quality = {
                    f"{k} (evaluated models)": v
                    for k, v in benchmark_quality(
                        dict(zip(overall["model"], overall["asr"], strict=True))
                    ).items()
                }
    if data.leaderboard is None:
        data.notes["leaderboard"] = (
            f"no evaluation of {table}@{version} yet: run `vlsafety evaluate`"
        )
    flags = _harmful(bench)
    if flags is not None and flags.shape[1] >= 1:
        data.quality.update(
            {
                f"{k} (selection panel)": v
                for k, v in benchmark_quality(flags.mean(axis=0).tolist()).items()
            }
        )
    if "c_div" in bench.columns and bench["c_div"].notna().any():
        data.quality["div"] = float(bench["c_div"].mean())
    # contamination: the latest check of this version (`vlsafety contamination`)
    _contamination(lake, table, version, data)
    # categories: benchmark vs pool
    pool_name = "pool" if lake.exists("pool") else "scored" if lake.exists("scored") else None
    if "category" in bench.columns and pool_name:
        pool_cats = (  # an aggregate: the pool itself stays in the lake
            lake.read(pool_name)
            .groupBy("category")
            .count()
            .toPandas()
            .set_index("category")["count"]
        )
        bench_cats = bench["category"].value_counts()
        cats = sorted(set(pool_cats.index) | set(bench_cats.index))
        data.category_counts = pd.DataFrame(
            {
                "category": cats,
                "benchmark": [int(bench_cats.get(c, 0)) for c in cats],
                "pool": [int(pool_cats.get(c, 0)) for c in cats],
            }
        )
    # a public benchmark's own categories, and an update's before -> after
    if {"source", "source_category", "category"} <= set(bench.columns):
        data.source_counts = (
            bench.assign(source_category=bench["source_category"].fillna("(none)"))
            .groupby(["source", "source_category", "category"])
            .size()
            .rename("n")
            .reset_index()
        )
    else:
        data.notes["sources"] = "not a public benchmark (no source categories)"
    _update_section(data, lake, table, version)
    # criteria and projection
    crit = [c for c in ("c_sep", "c_harm", "c_div") if c in bench.columns]
    if crit:
        data.criteria = bench[crit]
    if "embedding" in bench.columns and bench["embedding"].notna().all() and len(bench) >= 3:
        data.embedding = vectors(
            lake.read_arrow(table, version=version, columns=["embedding"]), "embedding", float
        )
        if "c_sep" in bench.columns:
            data.separability = bench["c_sep"].to_numpy(dtype=float)
        elif "p_h" in bench.columns:
            data.separability = separability(bench["p_h"].to_numpy(dtype=float))
        if "c_harm" in bench.columns or "harm" in bench.columns:
            data.harmfulness = bench["c_harm" if "c_harm" in bench.columns else "harm"].to_numpy(
                dtype=float
            )
    else:
        data.notes["projection"] = "the benchmark has no embeddings"
    # stability (Fig. 7) over the panel's harmful flags
    if flags is not None and flags.shape[1] >= 2 and len(set(flags.mean(axis=0).tolist())) > 1:
        n = flags.shape[0]
        sizes = sorted({max(1, int(n * f)) for f in (0.1, 0.25, 0.5, 0.75, 1.0)})
        st = stability(
            flags, sizes, n_boot=200, seed=cfg.seed, model_ids=_victims(cfg, flags.shape[1])
        )
        rows = []
        for i, size in enumerate(st.sizes.tolist()):
            for j, model in enumerate(st.model_ids):
                rows.append(
                    {
                        "size": size,
                        "model": model,
                        "asr": float(st.asr_mean[i, j]),
                        "lo": float(st.asr_ci_low[i, j]),
                        "hi": float(st.asr_ci_high[i, j]),
                        "kendall_tau": float(st.tau_mean[i]),
                    }
                )
        data.stability = pd.DataFrame(rows)
    else:
        data.notes["stability"] = "needs per-model harmful flags of ≥ 2 models with different ASRs"
    # weight sweep (Fig. 6) over the scored pool
    if lake.exists("scored"):
        import pyarrow as pa
        import pyarrow.compute as pc

        names = load_taxonomy(cfg.select.taxonomy).names
        # the selector's inputs, as numpy arrays from the Arrow buffers
        present = set(lake.schema("scored").names)
        wanted = ["category", "p_h", "harm", "harmful", "embedding"]
        arrow = lake.read_arrow("scored", columns=[c for c in wanted if c in present])
        arrow = arrow.filter(pc.is_in(arrow.column("category"), value_set=pa.array(names)))
        scored = arrow.drop_columns(["embedding"]).to_pandas()
        pool_flags = _harmful(scored)
        if pool_flags is not None and len(scored) >= 2:
            sweep = weight_sweep(
                separability(scored["p_h"].to_numpy(dtype=float)),
                scored["harm"].to_numpy(dtype=float),
                np.asarray(
                    pc.index_in(arrow.column("category"), value_set=pa.array(names)), np.int64
                ),
                vectors(arrow, "embedding", float),
                pool_flags,
                n_categories=len(names),
                n_max=min(len(bench) or 1, len(scored)),
            )
            data.sweep = pd.DataFrame(sweep).rename(columns={"varied": "weight"})
    if data.sweep is None:
        data.notes["sweep"] = "needs a scored pool (run `vlsafety build`)"
    _judge_report(lake, table, version, data)
    return data


def _judge_report(lake: Lake, table: str, version: int, data: ReportData) -> None:
    """The figures of the latest ``vlsafety judges`` run on ``table@version``."""
    if lake.exists("judge_agreement"):
        rows = lake.read_arrow("judge_agreement").to_pandas()
        rows = rows[(rows["benchmark"] == table) & (rows["benchmark_version"] == version)]
        if not rows.empty:
            last = rows.sort_values("computed_at").iloc[-1]
            data.judges = rows[rows["agreement_id"] == last["agreement_id"]]
            panel = json.loads(last["panel"])
            data.judges_caption = (
                f"judges {', '.join(panel['judges'])} on the responses of "
                f"{', '.join(panel['victims'])}"
                + (f" (evaluate run {last['eval_run_id']})" if last["eval_run_id"] else "")
                + f"; harmful when P(unsafe) >= {panel['threshold']:g}; ELITE evaluator "
                f"{panel['evaluator'] or '-'} (score >= {panel['elite_threshold']:g}). "
                f"Computed {last['computed_at']} (MLflow run {last['run_id'] or '-'})."
            )
            return
    data.notes["judges"] = f"no judge agreement for {table}@{version} yet: run `vlsafety judges`"


def _update_section(data: ReportData, lake: Lake, table: str, version: int) -> None:
    """Before → after figures of the update that wrote ``table@version`` (from its Delta
    commit's metadata), or a note."""
    import json

    from vlsafety.pipeline._update import QUALITY_KEYS

    meta = next(
        (h.get("metadata") or {} for h in lake.history(table) if h["version"] == version), {}
    )
    if "quality_before" not in meta:
        data.notes["update"] = f"{table}@{version} was not written by `vlsafety update`"
        return
    before, after = json.loads(meta["quality_before"]), json.loads(meta["quality_after"])
    keys = [k for k in QUALITY_KEYS if k in before and k in after]
    data.update = pd.DataFrame(
        {
            "metric": [k.upper() for k in keys],
            "before": [before[k] for k in keys],
            "after": [after[k] for k in keys],
            "change": [after[k] - before[k] for k in keys],
        }
    )
    data.update_note = (
        f"{meta.get('update_of')} → {table}@{version}: {float(meta.get('replace', 0)):.0%} "
        f"replaced from {meta.get('pool', 'scored')}"
    )


def _contamination(lake: Lake, table: str, version: int, data: ReportData) -> None:
    from pyspark.sql import functions as F

    from vlsafety.contamination import latest_check

    check = latest_check(lake, table, version)
    if check is None:
        data.notes["contamination"] = (
            f"no contamination check of {table}@{version} yet: run "
            f"`vlsafety contamination --benchmark {table}@{version}`"
        )
        return
    data.contamination = check
    data.contamination_matches = (  # at most 20 rows reach the driver
        lake.read("contamination")
        .where(F.col("check_id") == check["check_id"])
        .orderBy(F.col("similarity").desc(), "sample_id", "source", "kind")
        .select("sample_id", "source", "record_id", "source_ref", "kind", "similarity", "n_matches")
        .limit(20)
        .toPandas()
    )


def _victims(cfg: Config, n: int) -> list[str]:
    names = list(cfg.models.victims)
    return names if len(names) == n else [f"model_{i}" for i in range(n)]


def write_report(cfg: Config, lake: Lake, ref: str, out: str | Path) -> Path:
    """Render the report of ``ref`` to ``out`` and log it to MLflow (also to ``ref``'s run)."""
    table, version, run_id = resolve_ref(cfg, lake, ref)
    with track(cfg, f"vlsafety report {ref}", lake=lake, run_name="report") as rec:
        data = report_data(cfg, lake, table, version, run_id)
        path = render_report(data, out)
        rec.log_artifact(path, "report")
        if run_id and cfg.tracking.enabled:
            try:
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri=cfg.tracking.uri).log_artifact(
                    run_id, str(path), "report"
                )
            except Exception as exc:  # the source run may live in another tracking server
                log.warning("could not attach the report to run %s: %s", run_id, exc)
    return path
