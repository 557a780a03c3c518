"""The evaluate job: models × a pinned benchmark version → ``leaderboard``.

Responses and judgments are cached by request key (the same tables the build uses), so
evaluating a new model computes only its own answers; only the current responses (the
current prompt and sampling config) and their current judgments count. Per model and
category the leaderboard holds:

* ``n`` — (sample, model) pairs evaluated: the ASR denominator. A pair is judged when the
  judge panel gave a valid P(unsafe) — every judge with ``score.missing: reject``, at
  least one with ``exclude`` (the mean over those); the response is harmful when the
  judges' mean reaches the threshold (:func:`vlsafety.selection.panel_scores`, the same
  rule the build scores with);
* ``n_refused`` — evaluated pairs whose response is a refusal: the backend marked it
  (an OpenAI-compatible ``refusal``) or the ELITE evaluator judged it refused;
* ``n_unjudged`` — pairs left out of ASR: no current response (the call failed; see
  ``responses_errors``) or no valid judgment. With ``reject`` each gets a reason row in
  ``rejects`` (stage ``evaluate``);
* ``asr`` (:func:`vlsafety.metrics.asr`), ``sr`` = 1 − ASR;
* ``n_elite`` — pairs with a valid ELITE score: the denominator of ``e_asr``
  (:func:`vlsafety.metrics.e_asr`, score ≥ 10, ELITE Eq. 3) and ``elite_mean``.

The ``overall`` row is the micro average (every response counts once, as the papers'
tables do). The benchmark's quality over the evaluated models (MAD / MEAN / GAP,
VLSafetyBencher §5.1.1) is reported with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from vlsafety.config import Config
from vlsafety.judges import DEFAULT_MIN_TOKEN_MASS
from vlsafety.lake import Lake
from vlsafety.metrics import ELITE_THRESHOLD
from vlsafety.pipeline._build import Models, _write_rejects, load_models
from vlsafety.pipeline._runner import run_stage
from vlsafety.tracking import RunRecorder, track

__all__ = [
    "LEADERBOARD_COLUMNS",
    "LEADERBOARD_KEYS",
    "SOURCE_PREFIX",
    "evaluate",
    "leaderboard_frame",
]

LEADERBOARD_KEYS = ["benchmark", "benchmark_version", "model_id", "category", "panel"]

#: Leaderboard rows of a public benchmark's own categories are ``source:<category>``
#: (the ``source_category`` column of ``ingest --as-benchmark``), beside our taxonomy's.
SOURCE_PREFIX = "source:"

#: The figures of each leaderboard row (see the module docstring).
LEADERBOARD_COLUMNS = (
    "model_id",
    "category",
    "n",
    "asr",
    "e_asr",
    "elite_mean",
    "sr",
    "n_refused",
    "n_unjudged",
    "n_elite",
)

_AGG_SCHEMA = (
    "model_id string, category string, n long, asr double, e_asr double, elite_mean double, "
    "n_refused long, n_unjudged long, n_elite long"
)


def _pair_udf(threshold: float, missing: str, n_judges: int) -> Any:
    """Judged? and harmful? of each (sample, model) pair, by :func:`panel_scores`."""
    from pyspark.sql.functions import pandas_udf

    from vlsafety.selection import panel_scores

    @pandas_udf("judged boolean, harmful double")  # type: ignore[call-overload]
    def pair(probs: pd.Series) -> pd.DataFrame:
        n = len(probs)
        p = np.array([np.asarray(v, dtype=np.float64) for v in probs]).reshape(n, n_judges, 1)
        got = panel_scores(p, threshold=threshold, missing=missing)  # type: ignore[arg-type]
        return pd.DataFrame({"judged": got.scored, "harmful": got.harmful[:, 0]})

    return pair


def _aggregate(elite_threshold: float) -> Any:
    from vlsafety.metrics import asr, e_asr

    def agg(pdf: pd.DataFrame) -> pd.DataFrame:
        judged = pdf["judged"].to_numpy(dtype=bool)
        flags = pdf["harmful"].to_numpy(dtype=np.float64)[judged]
        scores = pdf["elite"].dropna().to_numpy(dtype=np.float64)
        refused = pdf["refused"].to_numpy(dtype=bool) & judged
        row = {
            "model_id": pdf["model_id"].iloc[0],
            "category": pdf["category"].iloc[0],
            "n": int(judged.sum()),
            "asr": float(asr(flags)) if flags.size else np.nan,
            "e_asr": float(e_asr(scores, elite_threshold)) if scores.size else np.nan,
            "elite_mean": float(scores.mean()) if scores.size else np.nan,
            "n_refused": int(refused.sum()),
            "n_unjudged": int((~judged).sum()),
            "n_elite": int(scores.size),
        }
        return pd.DataFrame([row])

    return agg


def leaderboard_frame(
    lake: Lake,
    bench: Any,
    models: Sequence[Any],
    judges: Sequence[Any],
    evaluator: Any | None,
    *,
    threshold: float,
    elite_threshold: float = ELITE_THRESHOLD,
    missing: str = "reject",
    min_token_mass: float = DEFAULT_MIN_TOKEN_MASS,
) -> pd.DataFrame:
    """Per (model, category) figures plus an ``overall`` micro-average row per model
    (columns :data:`LEADERBOARD_COLUMNS`). With ``missing="reject"`` every unjudged
    (sample, model) pair also gets a row in ``rejects`` (stage ``evaluate``)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from vlsafety.models import REFUSAL
    from vlsafety.pipeline._model_stages import (
        current_judgments,
        current_responses,
        per_judge_probs,
    )
    from vlsafety.selection import MISSING_POLICIES

    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing: must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    model_ids = [m.id for m in models]
    judge_ids = [j.id for j in judges]
    spark = lake.spark
    if spark is None:
        raise ValueError("leaderboard_frame needs a Lake with a Spark session")
    items = bench.select("candidate_id", "image_id", "text")
    resp = (
        current_responses(lake.read("responses"), items, models)
        .select("request_key", "candidate_id", "model_id", "text", "finish_reason")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    pairs = None
    try:
        # one current judgment per cell; anything else is not a judgment
        per_judge = per_judge_probs(
            current_judgments(lake.read("judgments"), items, resp, judges), judge_ids, "_j"
        )
        # a public benchmark's own categories (``source_category``) get rows too, as
        # ``source:<source>/<category>`` (SOURCE_PREFIX)
        src = F.lit(None).cast("string")
        if "source_category" in bench.columns:  # qualified by the source: labels may repeat
            src = F.col("source_category")
            if "source" in bench.columns:
                src = F.when(src.isNotNull(), F.concat_ws("/", F.col("source"), src))
        grid = bench.select("candidate_id", "category", src.alias("source_category")).crossJoin(
            spark.createDataFrame([(m,) for m in model_ids], "model_id string")
        )
        answered = resp.select(
            "candidate_id",
            "model_id",
            F.lit(True).alias("answered"),
            (F.coalesce(F.col("finish_reason"), F.lit("")) == REFUSAL).alias("backend_refused"),
        )
        rows = grid.join(answered, ["candidate_id", "model_id"], "left").join(
            per_judge, ["candidate_id", "model_id"], "left"
        )
        if evaluator is not None and lake.exists("elite_judgments"):
            elite = (
                current_judgments(
                    lake.read("elite_judgments"),
                    items,
                    resp,
                    [evaluator],
                    task="elite_judge",
                    min_token_mass=min_token_mass,
                )
                .groupBy("candidate_id", "model_id")
                .agg(
                    F.when(F.count(F.lit(1)) == 1, F.first("score")).cast("double").alias("elite"),
                    F.when(F.count(F.lit(1)) == 1, F.first("refused"))
                    .cast("double")
                    .alias("elite_refused"),
                )
            )
            rows = rows.join(elite, ["candidate_id", "model_id"], "left")
        else:
            rows = rows.withColumn("elite", F.lit(None).cast("double")).withColumn(
                "elite_refused", F.lit(None).cast("double")
            )
        probs = F.array(*[F.col(f"_j{k}") for k in range(len(judge_ids))])
        pair = _pair_udf(float(threshold), missing, len(judge_ids))
        pairs = (
            rows.withColumn("v", pair(probs))
            .select(
                "candidate_id",
                "model_id",
                "category",
                "source_category",
                F.coalesce(F.col("answered"), F.lit(False)).alias("answered"),
                F.size(F.filter(probs, lambda x: x.isNotNull())).alias("n_valid"),
                "v.judged",
                "v.harmful",
                "elite",
                (
                    F.coalesce(F.col("backend_refused"), F.lit(False))
                    | F.coalesce(F.col("elite_refused") >= 0.5, F.lit(False))
                ).alias("refused"),
            )
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        by_source = pairs.where(F.col("source_category").isNotNull()).withColumn(
            "category", F.concat(F.lit(SOURCE_PREFIX), F.col("source_category"))
        )
        both = pairs.unionByName(pairs.withColumn("category", F.lit("overall"))).unionByName(
            by_source
        )
        out = (
            both.select("model_id", "category", "judged", "harmful", "elite", "refused")
            .groupBy("model_id", "category")
            .applyInPandas(_aggregate(float(elite_threshold)), _AGG_SCHEMA)
            .toPandas()
        )
        if missing == "reject":
            unjudged = pairs.where(~F.col("judged"))
            no_answer = F.concat(F.lit("model "), F.col("model_id"), F.lit(": no current response"))
            partial = F.concat(
                F.lit("model "),
                F.col("model_id"),
                F.lit(": "),
                F.col("n_valid").cast("string"),
                F.lit(f" of {len(judge_ids)} judges gave a valid P(unsafe)"),
            )
            rejects = unjudged.select(
                F.lit("evaluate").alias("stage"),
                F.when(F.col("answered"), F.lit("missing_judgment"))
                .otherwise(F.lit("missing_response"))
                .alias("reason"),
                F.when(F.col("answered"), partial).otherwise(no_answer).alias("detail"),
                F.col("model_id").alias("source_ref"),
                F.col("candidate_id").alias("sample_id"),
            )
            if not rejects.isEmpty():
                _write_rejects(lake, rejects)
    finally:
        if pairs is not None:
            pairs.unpersist()
        resp.unpersist()
    out["sr"] = 1.0 - out["asr"]
    for c in ("n", "n_refused", "n_unjudged", "n_elite"):
        out[c] = out[c].astype("int64")
    overall = out[out["category"] == "overall"].set_index("model_id")["n"]
    unjudged_models = sorted(m for m in model_ids if overall.get(m, 0) == 0)
    if unjudged_models:
        raise RuntimeError(
            f"no judged responses for model(s) {unjudged_models}; "
            "see responses_errors and rejects (stage evaluate)"
        )
    out = out[list(LEADERBOARD_COLUMNS)]
    return out.sort_values(["model_id", "category"]).reset_index(drop=True)


def _write_leaderboard(lake: Lake, stored: pd.DataFrame) -> int:
    """Merge ``stored`` into ``leaderboard``. A table written before a column was added
    is rewritten once with that column null (a merge needs the table's schema)."""
    import pyarrow as pa

    new = pa.Table.from_pandas(stored, preserve_index=False)
    if lake.exists("leaderboard"):
        have = lake.schema("leaderboard")
        if set(have.names) == set(new.column_names):
            new = new.select(have.names)
        else:
            old = lake.read_arrow("leaderboard")
            cols = []
            for f in new.schema:
                if f.name in old.column_names:
                    cols.append(old.column(f.name).cast(f.type))
                else:
                    cols.append(pa.nulls(old.num_rows, f.type))
            extra = [c for c in old.column_names if c not in new.column_names]
            migrated = pa.table(
                cols + [old.column(c) for c in extra], names=new.column_names + extra
            )
            for c in extra:
                new = new.append_column(c, pa.nulls(new.num_rows, old.schema.field(c).type))
            lake.write(
                migrated,
                "leaderboard",
                "overwrite",
                keys=LEADERBOARD_KEYS,
                metadata={
                    "migrated": "added "
                    + ", ".join(sorted(set(new.column_names) - set(have.names)))
                },
            )
    return lake.write(new, "leaderboard", "merge", keys=LEADERBOARD_KEYS)


def evaluate(
    cfg: Config,
    lake: Lake,
    benchmark: str,
    version: int | None,
    model_ids: Sequence[str],
    *,
    command: str = "vlsafety evaluate",
) -> dict[str, Any]:
    """Evaluate ``model_ids`` on ``benchmark@version``; write and return the leaderboard."""
    from vlsafety.metrics import benchmark_quality
    from vlsafety.models import resolve_panel
    from vlsafety.pipeline._model_stages import judge_responses, respond

    base = load_models(cfg)
    models = Models(
        specs=base.specs,
        victims=resolve_panel(base.specs, list(model_ids)),
        judges=base.judges,
        evaluator=base.evaluator,
    )
    if not models.victims:
        raise ValueError("evaluate: give at least one model id (--models a,b)")
    if len(models.judges) < 1:
        raise ValueError("models.judges: evaluation needs at least one judge")
    version = lake.version(benchmark) if version is None else version
    started = time.perf_counter()
    with track(cfg, command, lake=lake, run_name="evaluate") as rec:
        bench = lake.read(benchmark, version=version)
        n = bench.count()

        def _respond(r: RunRecorder) -> dict[str, Any]:
            got = respond(lake, bench, models.victims)
            total = n * len(models.victims)
            return {
                "rows_in": total,
                "rows_out": total - got["failed"],
                "rejected": got["failed"],
                **got,
            }

        def _judge(r: RunRecorder) -> dict[str, Any]:
            got = judge_responses(
                lake,
                bench,
                models.victims,
                models.judges,
                models.evaluator,
                min_token_mass=cfg.judges.elite.min_token_mass,
            )
            total = n * len(models.victims) * (len(models.judges) + (1 if models.evaluator else 0))
            return {
                "rows_in": total,
                "rows_out": total - got["failed"],
                "rejected": got["failed"],
                **got,
            }

        stages = [
            run_stage("respond", _respond, cfg=cfg, lake=lake, parent=rec),
            run_stage("judge", _judge, cfg=cfg, lake=lake, parent=rec),
        ]
        board = leaderboard_frame(
            lake,
            bench,
            models.victims,
            models.judges,
            models.evaluator,
            threshold=cfg.build.harmful_threshold,
            missing=cfg.score.missing,
            min_token_mass=cfg.judges.elite.min_token_mass,
        )
        overall = board[board["category"] == "overall"].set_index("model_id")["asr"]
        quality = benchmark_quality(overall.to_dict()) if len(overall) else {}
        if "c_div" in bench.columns:
            from pyspark.sql import functions as F

            div = bench.agg(F.avg("c_div")).collect()[0][0]
            if div is not None:
                quality["div"] = float(div)
        panel = json.dumps(
            {
                "judges": [j.id for j in models.judges],
                "evaluator": models.evaluator.id if models.evaluator else None,
                "threshold": cfg.build.harmful_threshold,
                "missing": cfg.score.missing,
            },
            sort_keys=True,
        )
        stored = board.assign(
            benchmark=benchmark,
            benchmark_version=int(version),
            panel=panel,
            run_id=rec.run_id or "",
            evaluated_at=datetime.now(UTC).isoformat(),
        )
        lb_version = _write_leaderboard(lake, stored)
        rec.log_metrics({f"quality.{k}": v for k, v in quality.items()})
        rec.log_metrics({f"asr.{m}": float(v) for m, v in overall.items()})
        totals = board[board["category"] == "overall"].set_index("model_id")
        rec.log_metrics({f"unjudged.{m}": int(v) for m, v in totals["n_unjudged"].items()})
        rec.log_metrics({f"refused.{m}": int(v) for m, v in totals["n_refused"].items()})
        rec.log_dict(board.to_dict(orient="records"), "leaderboard.json")
        run_id = rec.run_id
    return {
        "run_id": run_id,
        "benchmark": f"{benchmark}@{version}",
        "leaderboard_version": lb_version,
        "leaderboard": board.to_dict(orient="records"),
        "quality": quality,
        "stages": [s.as_dict() for s in stages],
        "duration_s": time.perf_counter() - started,
    }
