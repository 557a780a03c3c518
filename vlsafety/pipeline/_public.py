"""Public benchmarks as benchmark tables (``vlsafety ingest --as-benchmark``), and the panel
scoring that ``select --mode elite-filter`` and ``update`` run on any benchmark.

An ingested public benchmark (MM-SafetyBench, FigStep, MLLMGuard, ...) goes through the
validity half of preprocessing (:func:`vlsafety.preprocess.validate_samples`: image
checks, prompt filters, categorization) but not through dedup: a published benchmark is
kept as published. Each valid sample becomes one row in the schema of the build's
candidates (:data:`vlsafety.generate.CANDIDATE_COLUMNS`: ``candidate_id`` = the sample's
content-hash id, ``strategy``/``origin`` ``original``), with its lineage
(:data:`PUBLIC_COLUMNS`): the source kind, path and release fingerprint, the source's own
labels and category, the ELITE hazard code, the intent, and whether the item is a
multiple-choice question. Each ingest overwrites the table: the next version.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlsafety.config import Config
from vlsafety.lake import Lake
from vlsafety.pipeline._runner import run_stage
from vlsafety.tracking import RunRecorder, track

if TYPE_CHECKING:
    from vlsafety.pipeline._build import Models

__all__ = [
    "MULTIPLE_CHOICE_LABELS",
    "PUBLIC_COLUMNS",
    "STAGE",
    "ingest_benchmark",
    "is_multiple_choice",
    "panel_score",
]

#: The stage name of the validity checks' rows in ``rejects``.
STAGE = "benchmark"

#: Lineage columns of an ingested public benchmark (after the candidate columns).
PUBLIC_COLUMNS = (
    "source",
    "source_ref",
    "source_path",
    "source_release",
    "labels",
    "source_category",
    "elite_category",
    "intent",
    "multiple_choice",
    "taxonomy",
)

#: Labels that mark an item as a multiple-choice question (normalized label names): the
#: options or the answer key of the item (MLLMGuard's ``Options`` in hallucination,
#: ``Answer`` in noise-injection) or a position-swapped pair (``position``, answered "A or
#: B"). VLSafetyBencher §5.2 leaves these out of the update experiment.
MULTIPLE_CHOICE_LABELS = ("options", "choices", "answer", "position")


def is_multiple_choice(labels: Mapping[str, str | None] | None) -> bool:
    """Whether a sample with these source labels is a multiple-choice question
    (:data:`MULTIPLE_CHOICE_LABELS`)."""
    from vlsafety.taxonomy import normalize_label

    return any(
        normalize_label(k) in MULTIPLE_CHOICE_LABELS and v not in (None, "")
        for k, v in (labels or {}).items()
    )


_LINEAGE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source_category", pa.string()),
        ("elite_category", pa.string()),
        ("multiple_choice", pa.bool_()),
    ]
)


def _lineage_batches(batches: Any) -> Any:
    """Per row: the source's own category, the ELITE code and the multiple-choice flag."""
    from vlsafety.preprocess._stage import _labels_dict
    from vlsafety.taxonomy import elite_code, source_category

    for b in batches:
        t = pa.Table.from_batches([b])
        labels = [_labels_dict(v) for v in t.column("labels").to_pylist()]
        sources = t.column("source").to_pylist()
        texts = t.column("text").to_pylist()
        own = [source_category(s, lb) for s, lb in zip(sources, labels, strict=True)]
        # the source's own category names the hazard more plainly than a fixed prompt
        # (FigStep's text is the same for every item)
        probes = [" ".join(x for x in (c, text) if x) for c, text in zip(own, texts, strict=True)]
        yield pa.RecordBatch.from_arrays(
            [
                t.column("sample_id").combine_chunks(),
                pa.array(own, pa.string()),
                pa.array(
                    [elite_code(lb, x) for lb, x in zip(labels, probes, strict=True)], pa.string()
                ),
                pa.array([is_multiple_choice(lb) for lb in labels], pa.bool_()),
            ],
            schema=_LINEAGE_SCHEMA,
        )


def _release_fingerprints(rows: Any) -> dict[str, str]:
    """source kind → a fingerprint of the release as read: the count and the sum of the
    64-bit hashes of its sample ids (order-independent, computed on executors). A sample
    id hashes the image bytes, the text and the source reference, so any changed row
    changes it."""
    from pyspark.sql import functions as F

    agg = (
        rows.groupBy("source")
        .agg(
            F.count("*").alias("n"),
            F.sum(F.xxhash64("sample_id").cast("decimal(38,0)")).alias("h"),
        )
        .collect()
    )
    return {
        r["source"]: hashlib.sha256(f"{r['source']}|{r['n']}|{r['h']}".encode()).hexdigest()[:16]
        for r in agg
    }


def benchmark_frame(valid: Any, paths: Mapping[str, str], releases: Mapping[str, str]) -> Any:
    """The benchmark rows of validated samples (``pool`` columns): the candidate
    columns, then :data:`PUBLIC_COLUMNS`."""
    from pyspark.sql import functions as F

    from vlsafety.generate import CANDIDATE_SCHEMA

    def lookup(mapping: Mapping[str, str]) -> Any:
        if not mapping:
            return F.lit(None).cast("string")
        pairs = [F.lit(x) for kv in sorted(mapping.items()) for x in kv]
        return F.create_map(*pairs)[F.col("source")]

    lineage = valid.select("sample_id", "source", "labels", "text").mapInArrow(
        _lineage_batches,
        "sample_id string, source_category string, elite_category string, multiple_choice boolean",
    )
    rows = valid.join(lineage, "sample_id")
    method = F.to_json(F.struct(F.lit("original").alias("name"), F.col("source").alias("source")))
    own = {
        "candidate_id": F.col("sample_id"),
        "parent_sample_id": F.col("sample_id"),
        "strategy": F.lit("original"),
        "method": method,
        "generator": F.lit("public"),
        "origin": F.lit("original"),
    }
    cols = []
    for f in CANDIDATE_SCHEMA:
        if f.name in own:
            expr = own[f.name]
        elif f.name in ("image_id", "text", "category", "subcategory"):
            expr = F.col(f.name)
        else:
            expr = F.lit(None)
        cols.append(expr.cast("bigint" if pa.types.is_integer(f.type) else "string").alias(f.name))
    extra = {"source_path": lookup(paths), "source_release": lookup(releases)}
    cols += [extra[c].alias(c) if c in extra else F.col(c) for c in PUBLIC_COLUMNS]
    return rows.select(*cols)


def ingest_benchmark(
    cfg: Config,
    lake: Lake,
    sources: Sequence[str],
    name: str,
    *,
    command: str = "vlsafety ingest --as-benchmark",
) -> dict[str, Any]:
    """Ingest ``sources`` (``KIND:PATH``) as the next version of benchmark table ``name``
    (see the module docstring). ``images`` gets the images, ``rejects`` every record
    that is not a valid sample (stage ``ingest``, or ``benchmark`` for the validity
    checks); ``raw_pool`` and ``pool`` are left alone. Counts balance: ``listed`` =
    ``rows`` + ingest rejects + validity rejects (checked)."""
    from vlsafety.ingest import parse_source, run_ingest
    from vlsafety.pipeline._build import load_models
    from vlsafety.preprocess import validate_samples

    kinds: dict[str, str] = {}
    for spec in sources:
        kind, path = parse_source(spec)
        if kind in kinds:
            raise ValueError(
                f"--as-benchmark: source kind {kind!r} is given twice ({kinds[kind]!r}, {spec!r}); "
                "ingest one release per kind"
            )
        kinds[kind] = str(path.resolve())
    if lake.spark is None:
        raise ValueError("ingest --as-benchmark needs a Lake with a Spark session")
    spark = lake.spark
    models = load_models(cfg)
    started = time.perf_counter()
    with track(cfg, command, lake=lake, run_name="ingest-benchmark") as rec:

        def into(rows: Any) -> dict[str, Any]:
            releases = _release_fingerprints(rows)
            with validate_samples(
                spark,
                lake,
                rows,
                cfg.preprocess,
                embedder=models.embedder,
                verifier=models.verifier,
                stage=STAGE,
            ) as (valid, rejects, counts):
                bench = benchmark_frame(valid, kinds, releases)
                out: dict[str, Any] = {
                    f"valid.{k}": v for k, v in counts.items() if isinstance(v, int)
                }
                out["rows"] = counts["kept"]
                if counts["kept"]:
                    out["benchmark_version"] = lake.write(
                        bench,
                        name,
                        "overwrite",
                        keys=["candidate_id"],
                        metadata={
                            "public_sources": json.dumps(sorted(sources)),
                            "releases": json.dumps(releases, sort_keys=True),
                        },
                    )
                if counts["rejected"]:
                    lake.write(rejects, "rejects", "merge", keys=["reject_id"])
            return out

        def stage(r: RunRecorder) -> dict[str, Any]:
            got = run_ingest(spark, lake, list(sources), cfg.ingest, into=into)
            invalid = int(got.get("valid.rejected", 0))
            rows = int(got.get("rows", 0))
            if not rows:
                raise ValueError(
                    f"--as-benchmark {name}: no valid sample in {', '.join(sources)} "
                    f"({got['rejected']} ingest and {invalid} validity rejects; see rejects)"
                )
            flat = {k: v for k, v in got.items() if isinstance(v, int | float | str)}
            return {
                **flat,
                "rejected_at_ingest": int(got["rejected"]),
                "rows_in": int(got["listed"]),
                "rows_out": rows,
                "rejected": int(got["rejected"]) + invalid,
            }

        result = run_stage("ingest", stage, cfg=cfg, lake=lake, parent=rec)
        run_id = rec.run_id
    extra = result.extra
    return {
        "run_id": run_id,
        "benchmark": f"{name}@{extra['benchmark_version']}",
        "listed": result.rows_in,
        "rows": result.rows_out,
        "rejected": result.rejected,
        "counts": dict(extra),
        "duration_s": time.perf_counter() - started,
    }


def panel_score(
    cfg: Config,
    lake: Lake,
    bench: Any,
    models: Models,
    parent: RunRecorder,
) -> tuple[pa.Table, dict[str, Any]]:
    """Score benchmark rows with the panel as the build scores candidates: embeddings,
    the victims' responses, the judges' and the ELITE evaluator's judgments (all cached
    by request key), then :func:`vlsafety.pipeline._build.score_current`. A row the
    panel cannot score goes to ``rejects`` (stage ``score``). Returns the scored rows
    (the rows' own columns plus :data:`vlsafety.pipeline._score.SCORED_COLUMNS`) and the
    stage's counts."""
    from pyspark.sql import functions as F

    from vlsafety.pipeline._build import _write_rejects, score_current
    from vlsafety.pipeline._model_stages import embed_candidates, judge_responses, respond

    if models.embedder is None or not models.victims or not models.judges:
        raise ValueError("scoring a benchmark needs models.embedder, models.victims and judges")
    n_bench = bench.count()
    out: list[pa.Table] = []

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
            out.append(scored.toArrow())
            n_bad = rejects.count()
            if n_bad:
                _write_rejects(lake, rejects)
        return {"rows_in": n_bench, "rows_out": n_bench - n_bad, "rejected": n_bad}

    stage = run_stage("score", _score, cfg=cfg, lake=lake, parent=parent)
    return out[0], stage.as_dict()
