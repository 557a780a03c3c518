"""The build job: raw sources → a new version of the ``benchmark`` table.

``ingest → preprocess → generate → augment → embed → respond → judge → score → select``;
each stage is a nested MLflow run (counts in / out / rejected, duration, Delta versions
read and written) under one parent run that also records the config and the
benchmark's quality metrics. Every stage computes only what is missing (content-hash
keys, merged into Delta), so a killed build resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vlsafety.config import Config
from vlsafety.judges import DEFAULT_MIN_TOKEN_MASS
from vlsafety.lake import Lake
from vlsafety.pipeline._runner import StageResult, run_stage
from vlsafety.tracking import RunRecorder, track

__all__ = ["BUILD_STAGES", "BuildResult", "Models", "build", "load_models", "score_current"]

log = logging.getLogger("vlsafety")

BUILD_STAGES = (
    "ingest",
    "preprocess",
    "generate",
    "augment",
    "embed",
    "respond",
    "judge",
    "score",
    "select",
)


@dataclass
class Models:
    """The model specs a job uses, by role (from ``models.file`` and the ``models`` ids)."""

    specs: dict[str, Any]
    embedder: Any = None
    generator: Any = None
    verifier: Any = None
    victims: list[Any] = field(default_factory=list)
    judges: list[Any] = field(default_factory=list)
    evaluator: Any = None


def load_models(cfg: Config) -> Models:
    from pathlib import Path

    from vlsafety.models import load_model_specs, resolve_panel

    path = Path(cfg.models.file)
    if not path.is_file():
        raise FileNotFoundError(f"models.file: {path} not found")
    specs = load_model_specs(path, root=cfg.models.root)

    def one(key: str, mid: str | None) -> Any:
        if mid is None:
            return None
        if mid not in specs:
            raise ValueError(
                f"models.{key}: unknown model id {mid!r} (declared: {', '.join(sorted(specs))})"
            )
        return specs[mid]

    return Models(
        specs=specs,
        embedder=one("embedder", cfg.models.embedder),
        generator=one("generator", cfg.models.generator),
        verifier=one("verifier", cfg.models.verifier),
        victims=resolve_panel(specs, cfg.models.victims),
        judges=resolve_panel(specs, cfg.models.judges),
        evaluator=one("evaluator", cfg.models.evaluator),
    )


@dataclass
class BuildResult:
    run_id: str | None
    benchmark_version: int | None
    stages: list[StageResult]
    summary: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "benchmark_version": self.benchmark_version,
            "stages": [s.as_dict() for s in self.stages],
            "summary": self.summary,
        }


def _balanced(raw: Mapping[str, Any], rows_in: str, rows_out: str, rejected: str) -> dict[str, Any]:
    out = {k: v for k, v in raw.items() if isinstance(v, int | float | bool | str)}
    out["rows_in"] = int(raw.get(rows_in, 0))
    out["rows_out"] = int(raw.get(rows_out, 0))
    out["rejected"] = int(raw.get(rejected, 0))
    return out


def _write_rejects(lake: Lake, rejects: Any) -> int:
    """Append stage rejects (stage, reason, detail, sample_id) to the shared ``rejects`` table."""
    from pyspark.sql import functions as F

    from vlsafety.ingest import REJECT_COLUMNS

    cols = {c: F.lit(None).cast("string") for c in REJECT_COLUMNS}
    for c in rejects.columns:
        cols[c] = F.col(c).cast("string")
    if "reject_id" not in rejects.columns:
        cols["reject_id"] = F.sha2(
            F.to_json(
                F.array(
                    *[
                        F.coalesce(cols[c], F.lit(""))
                        for c in ("stage", "reason", "source", "source_ref", "sample_id")
                    ]
                )
            ),
            256,
        )
    frame = rejects.select(*[cols[c].alias(c) for c in REJECT_COLUMNS])
    return lake.write(frame, "rejects", "merge", keys=["reject_id"])


def write_reject_rows(lake: Lake, stage: str, rejects: list[dict[str, Any]]) -> int:
    """Merge ``{sample_id, reason, detail}`` records of ``stage`` into ``rejects``."""
    from vlsafety.ingest import Reject, rejects_to_arrow

    rows = [
        Reject(
            stage=stage,
            reason=str(r.get("reason")),
            detail=str(r.get("detail") or ""),
            sample_id=str(r.get("sample_id")),
        )
        for r in rejects
    ]
    return lake.write(rejects_to_arrow(rows), "rejects", "merge", keys=["reject_id"])


def with_benchmark_source(table: pa.Table, pool: pa.Table) -> pa.Table:
    """``table`` (scored candidates) with a ``source`` column for the ELITE source
    balancing: the pool source (benchmark) of each candidate's parent sample, and
    ``generated`` for generated pairs, which ELITE counts as one more source ("New" in its
    Table 1). A parent missing from the pool gives a null source (rejected there)."""
    import pyarrow.compute as pc

    ids = pool.column("sample_id").combine_chunks()
    at = pc.index_in(table.column("parent_sample_id"), value_set=ids)
    source = pc.take(pool.column("source").combine_chunks(), at)
    generated = pc.equal(table.column("origin"), "generate")
    source = pc.if_else(pc.fill_null(generated, False), pa.scalar("generated"), source)
    return table.append_column("source", source)


@contextmanager
def score_current(
    lake: Lake,
    candidates: Any,
    embeddings: Any,
    models: Models,
    *,
    harmful_threshold: float,
    missing: str,
    min_token_mass: float = DEFAULT_MIN_TOKEN_MASS,
) -> Iterator[tuple[Any, Any]]:
    """The score stage on the lake's current rows: the victims' current responses and the
    panel's judgments of them (and the evaluator's scores) through
    :func:`vlsafety.pipeline._score.score_frames`. Yields (scored, rejects); the current
    responses stay persisted inside the block (the judgments and the missing-response
    check both read them), so write both outputs there."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from vlsafety.pipeline._model_stages import current_judgments, current_responses
    from vlsafety.pipeline._score import score_frames

    resp = current_responses(lake.read("responses"), candidates, models.victims)
    resp = resp.select("request_key", "candidate_id", "model_id", "text").persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        judg = current_judgments(lake.read("judgments"), candidates, resp, models.judges)
        elite = None
        if models.evaluator is not None and lake.exists("elite_judgments"):
            elite = current_judgments(
                lake.read("elite_judgments"),
                candidates,
                resp,
                [models.evaluator],
                task="elite_judge",
                min_token_mass=min_token_mass,
            ).select("candidate_id", "model_id", F.col("score").cast("double"))
        yield score_frames(
            candidates,
            resp,
            judg,
            embeddings,
            victims=[s.id for s in models.victims],
            judges=[s.id for s in models.judges],
            harmful_threshold=harmful_threshold,
            missing=missing,
            elite=elite,
        )
    finally:
        resp.unpersist()


class _Build:
    def __init__(self, cfg: Config, lake: Lake, models: Models) -> None:
        self.cfg = cfg
        self.lake = lake
        if lake.spark is None:
            raise ValueError("the build needs a Lake with a Spark session")
        self.spark = lake.spark
        self.models = models

    # -- stages --------------------------------------------------------------
    def ingest(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.ingest import run_ingest

        if not self.cfg.build.sources:
            n = self.lake.read("raw_pool").count() if self.lake.exists("raw_pool") else 0
            return {"rows_in": n, "rows_out": n, "rejected": 0, "skipped": 1}
        raw = run_ingest(self.spark, self.lake, list(self.cfg.build.sources), self.cfg.ingest)
        return _balanced(raw, "listed", "samples", "rejected")

    def preprocess(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.preprocess import run_preprocess

        raw = run_preprocess(
            self.spark,
            self.lake,
            self.cfg.preprocess,
            embedder=self.models.embedder,
            verifier=self.models.verifier,
        )
        return _balanced(raw, "pending", "kept", "rejected")

    def generate(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.generate import run_generate

        raw = run_generate(self.spark, self.lake, self.cfg.generate, self.models.generator)
        return _balanced(raw, "rows_in", "rows_out", "rejected")

    def augment(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.augment import run_augment

        raw = run_augment(self.spark, self.lake, self.cfg.augment, self.models.generator)
        return _balanced(raw, "rows_in", "rows_out", "rejected")

    def _candidates(self) -> Any:
        return self.lake.read("candidates")

    def embed(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.pipeline._model_stages import embed_candidates

        if self.models.embedder is None:
            raise ValueError("models.embedder: selection's diversity term needs an embedder")
        n = self._candidates().count()
        got = embed_candidates(self.lake, self._candidates(), self.models.embedder)
        return {"rows_in": n, "rows_out": n - got["failed"], "rejected": got["failed"], **got}

    def respond(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.pipeline._model_stages import respond

        if not self.models.victims:
            raise ValueError("models.victims: the build needs a victim panel")
        n = self._candidates().count() * len(self.models.victims)
        got = respond(self.lake, self._candidates(), self.models.victims)
        return {"rows_in": n, "rows_out": n - got["failed"], "rejected": got["failed"], **got}

    def judge(self, rec: RunRecorder) -> dict[str, Any]:
        from vlsafety.pipeline._model_stages import current_responses, judge_responses

        if len(self.models.judges) < 3:
            raise ValueError(f"models.judges: need N_J >= 3 judges, got {len(self.models.judges)}")
        n_resp = current_responses(
            self.lake.read("responses"), self._candidates(), self.models.victims
        ).count()
        n = n_resp * (len(self.models.judges) + (1 if self.models.evaluator else 0))
        got = judge_responses(
            self.lake,
            self._candidates(),
            self.models.victims,
            self.models.judges,
            self.models.evaluator,
            min_token_mass=self.cfg.judges.elite.min_token_mass,
        )
        return {"rows_in": n, "rows_out": n - got["failed"], "rejected": got["failed"], **got}

    def score(self, rec: RunRecorder) -> dict[str, Any]:
        from pyspark.sql import functions as F

        cands = self._candidates()
        embedder = self.models.embedder
        emb = self.lake.read("candidate_embeddings").where(F.col("model_id") == embedder.id)
        emb = emb.dropDuplicates(["candidate_id"])
        with score_current(
            self.lake,
            cands,
            emb,
            self.models,
            harmful_threshold=self.cfg.build.harmful_threshold,
            missing=self.cfg.score.missing,
            min_token_mass=self.cfg.judges.elite.min_token_mass,
        ) as (scored, rejects):
            panel = json.dumps(
                {
                    "victims": [s.id for s in self.models.victims],
                    "judges": [s.id for s in self.models.judges],
                }
            )
            scored = scored.withColumn("panel", F.lit(panel))
            self.lake.write(scored, "scored", "overwrite", keys=["candidate_id"])
            n_bad = rejects.count()
            if n_bad:
                _write_rejects(self.lake, rejects)
        written = self.lake.read("scored")
        n_out = written.count()
        missing_cells = written.agg(F.sum("n_missing")).collect()[0][0] or 0
        return {
            "rows_in": cands.count(),
            "rows_out": n_out,
            "rejected": n_bad,
            "missing_cells": int(missing_cells),
            "missing_policy": self.cfg.score.missing,
        }

    def select(self, rec: RunRecorder) -> dict[str, Any]:

        from vlsafety.selection import select_table
        from vlsafety.taxonomy import load_taxonomy

        scored, embeddings = read_for_selection(self.lake, "scored")
        table = scored.rename_columns(
            [
                "sample_id" if c == "candidate_id" else "elite_scores" if c == "elite" else c
                for c in scored.column_names
            ]
        )
        taxonomy = load_taxonomy(self.cfg.select.taxonomy)
        sel = self.cfg.select
        elite = sel.elite
        n_in = table.num_rows
        contaminated: dict[str, Any] = {"contaminated": 0}
        if sel.exclude_contaminated:
            table, contaminated, kept = self._exclude_contaminated(table)
            if embeddings is not None and kept is not None:
                from vlsafety.selection import RowSubset

                embeddings = RowSubset(embeddings, kept)
        if (
            sel.mode == "elite-filter"
            and elite.balance.max_source_share is not None
            and "source" not in table.column_names
        ):
            table = with_benchmark_source(
                table, self.lake.read_arrow("pool", columns=["sample_id", "source"])
            )
        selected, summary = select_table(
            table,
            # elite-filter keeps what the filter keeps unless select.elite.n_max is set
            n_max=sel.n_max if sel.mode == "greedy" else elite.n_max,
            weights=sel.weights,
            mode=sel.mode,
            category_names=taxonomy.names,
            threshold=sel.threshold,
            min_votes=elite.min_votes,
            single_model_exception=elite.single_model_exception,
            per_category_cap=elite.balance.per_category_cap,
            max_source_share=elite.balance.max_source_share,
            device=sel.engine,
            embeddings=embeddings,
        )
        if "source" in selected.column_names and "source" not in scored.column_names:
            selected = selected.drop_columns(["source"])
        selected = selected.rename_columns(
            [
                "candidate_id" if c == "sample_id" else "elite" if c == "elite_scores" else c
                for c in selected.column_names
            ]
        )
        selected = in_table_order(selected, self.lake.schema("scored").names)
        version = self.lake.write(
            selected,
            self.cfg.build.benchmark_table,
            "overwrite",
            keys=["candidate_id"],
            metadata={
                "n_max": summary["n_max"],
                "weights": self.cfg.select.weights,
                "mode": self.cfg.select.mode,
            },
        )
        rejects = summary.pop("rejects", [])
        if rejects:
            write_reject_rows(self.lake, "select", rejects)
        metrics = summary.get("metrics", {})
        rec.log_metrics(
            {f"quality.{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
        )
        rec.log_dict(summary, "selection_summary.json")
        return {
            "rows_in": n_in,
            "rows_out": selected.num_rows,
            "rejected": int(summary["n_rejected"]),
            "filtered": int(summary["n_not_selected"]) + int(contaminated["contaminated"]),
            **contaminated,
            "benchmark_version": version,
            **{f"quality.{k}": v for k, v in metrics.items() if isinstance(v, int | float)},
        }

    def _exclude_contaminated(self, table: pa.Table) -> tuple[pa.Table, dict[str, Any], Any]:
        """``select.exclude_contaminated``: the scored samples that match an ingested public
        benchmark leave the selection, each with a ``contaminated:<source>`` reject.
        Returns the kept rows, the counts and the kept rows' positions (None: all kept)."""
        import pyarrow.compute as pc

        from vlsafety.contamination import (
            REASON,
            ContaminationOptions,
            NoSourcesError,
            contaminated_samples,
            run_contamination,
            summary_metrics,
        )

        opts = ContaminationOptions.from_preprocess(self.cfg.preprocess)
        try:
            check = run_contamination(self.spark, self.lake, "scored", None, options=opts)
        except NoSourcesError as exc:
            log.warning("select.exclude_contaminated: %s; nothing excluded", exc)
            return table, {"contaminated": 0}, None
        worst = contaminated_samples(self.lake, check["check_id"])
        keep = pc.invert(pc.is_in(table.column("sample_id"), value_set=worst.column("sample_id")))
        kept = table.filter(keep)
        rejects = [
            {
                "sample_id": r["sample_id"],
                "reason": f"{REASON}:{r['source']}",
                "detail": f"{r['kind']} match with {r['source']} record {r['record_id']} "
                f"(similarity {r['similarity']:.3f})",
            }
            for r in worst.to_pylist()
        ]
        if rejects:
            write_reject_rows(self.lake, "select", rejects)
        counts: dict[str, Any] = {"contaminated": table.num_rows - kept.num_rows}
        for r in rejects:
            key = f"contaminated.{r['reason'].partition(':')[2]}"
            counts[key] = counts.get(key, 0) + 1
        counts.update(summary_metrics(check))
        positions = np.flatnonzero(pc.fill_null(keep, False).to_numpy(zero_copy_only=False))
        return kept, counts, positions


def build(
    cfg: Config,
    lake: Lake,
    *,
    stages: tuple[str, ...] = BUILD_STAGES,
    command: str = "vlsafety build",
) -> BuildResult:
    """Run the build job (see the module docstring). Returns the stage results."""
    unknown = [s for s in stages if s not in BUILD_STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(BUILD_STAGES)}")
    models = load_models(cfg)
    job = _Build(cfg, lake, models)
    results: list[StageResult] = []
    started = time.perf_counter()
    with track(cfg, command, lake=lake, run_name="build") as rec:
        for name in BUILD_STAGES:
            if name not in stages:
                continue
            fn: Callable[[RunRecorder], Mapping[str, Any]] = getattr(job, name)
            results.append(run_stage(name, fn, cfg=cfg, lake=lake, parent=rec))
        summary = {"duration_s": time.perf_counter() - started}
        version = None
        for r in results:
            if r.name == "select":
                version = int(r.extra["benchmark_version"])
                summary.update({k: v for k, v in r.extra.items() if k.startswith("quality.")})
        rec.log_dict([r.as_dict() for r in results], "stages.json")
        rec.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        run_id = rec.run_id
    return BuildResult(run_id, version, results, summary)


def read_for_selection(lake: Lake, table: str, version: int | None = None) -> tuple[pa.Table, Any]:
    """One version of a scored table for :func:`vlsafety.selection.select_table`: every
    column but ``embedding`` as an Arrow table, and the embedding column as a source the
    selector streams into its matrix (only the selected rows are read back), so the driver
    never holds the pool's embeddings twice. Without a pyarrow dataset (the native engine)
    the embeddings come inside the table and the source is None."""
    from vlsafety.selection import DatasetColumn

    version = lake.version(table) if version is None else version
    names = lake.schema(table, version).names
    dataset = lake.arrow_dataset(table, version) if "embedding" in names else None
    if dataset is None:
        return lake.read_arrow(table, version=version), None
    rest = [c for c in names if c != "embedding"]
    return lake.read_arrow(table, version=version, columns=rest), DatasetColumn(
        dataset, "embedding"
    )


def in_table_order(selected: pa.Table, names: list[str]) -> pa.Table:
    """``selected``'s columns in the order of ``names`` (the scored table's), the others
    (the selector's outputs) after them: the streamed embedding column goes back to its
    place."""
    first = [c for c in names if c in selected.column_names]
    return selected.select(first + [c for c in selected.column_names if c not in first])
