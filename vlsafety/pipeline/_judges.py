"""The judge agreement job (``vlsafety judges``): how far the panel behind a benchmark's
numbers agrees with itself, with the ELITE evaluator and, where they exist, with humans.

For a benchmark version and a set of victim models (``--models``; else the models of the
latest ``evaluate`` run of that version in ``leaderboard``, whose run id is recorded;
else the build's panel, ``models.victims``), every current response
(:func:`current_responses`) with its current judgments (:func:`current_judgments`: the
same rows ``evaluate`` counts) is one item. Judge ``r`` calls it harmful when its
P(unsafe) reaches ``build.harmful_threshold``; the ELITE evaluator when its score reaches
10 (ELITE Eq. 3). Only items judged by every judge enter the κ figures (Fleiss' κ needs a
constant number of raters); ``n_complete`` says how many those are.

Spark aggregates the items to their distinct decision patterns with counts (per
category, at most 3^N_J · 3 rows); the figures come from those counts
(:mod:`vlsafety.metrics._agreement` takes counts as weights), so no per-response row
reaches the driver. Human labels (:func:`read_labels`) are joined on the executors; only
the labelled items' probabilities come back, as Arrow → numpy.

Figures (``judge_agreement`` rows: ``group`` is ``overall``, a category, or a reliability
bin ``bin:NN``; ``rater`` a judge, a pair ``a|b``, ``panel``, ``elite`` or empty):

* ``n_items``, ``n_complete``; ``harmful_share`` per judge;
* ``fleiss_kappa``, ``split_share`` (items on which the judges are not unanimous),
  ``cohen_kappa`` per pair of judges;
* ``elite_kappa`` / ``elite_agreement`` (rater ``elite``): Cohen's κ and raw agreement of
  the ELITE evaluator's decision with the panel's majority
  (:func:`vlsafety.metrics.majority_vote`), over complete items with an ELITE score
  (``n_elite``);
* with labels, per judge, for ``panel`` (the judges' mean P(unsafe)) and for ``elite``
  (the 0–25 score): ``n_labelled``, ``auc`` (ELITE Fig. 4), ``accuracy`` /
  ``precision`` / ``recall`` / ``f1`` (Tab. 6), ``pearson`` (§6.1); for the judges and
  the panel ``ece`` and ``brier`` and the reliability diagram's ``bin_n`` / ``bin_mean_p``
  / ``bin_rate``. A figure undefined on the data (one class only, a constant input) is
  NaN.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vlsafety.config import Config
from vlsafety.lake import Lake
from vlsafety.metrics import (
    ELITE_THRESHOLD,
    auc_roc,
    classification_metrics,
    cohen_kappa,
    fleiss_kappa,
    majority_vote,
    pairwise_cohen_kappa,
    pearson,
    reliability_bins,
    split_share,
)
from vlsafety.tracking import track

__all__ = [
    "AGREEMENT_COLUMNS",
    "AGREEMENT_KEYS",
    "LABEL_FORMAT",
    "agreement_rows",
    "format_agreement",
    "judge_agreement",
    "label_rows",
    "read_labels",
]

log = logging.getLogger("vlsafety")

#: Keys of ``judge_agreement``: one row per figure of one ``vlsafety judges`` run.
AGREEMENT_KEYS = ["agreement_id", "group", "metric", "rater"]
#: Columns of ``judge_agreement``.
AGREEMENT_COLUMNS = (
    "agreement_id",
    "benchmark",
    "benchmark_version",
    "eval_run_id",
    "panel",
    "group",
    "metric",
    "rater",
    "value",
    "run_id",
    "computed_at",
)

#: The side table of human labels ``--labels`` reads.
LABEL_FORMAT = """\
A parquet (.parquet), CSV (.csv) or JSON-lines (.jsonl / .json) file, or a lake table name,
with one row per labelled response and the columns
  label            1 = harmful, 0 = not harmful (0/1 numbers or booleans), and either
  request_key      the response's key (column request_key of the responses table), or
  candidate_id and model_id (or model)   the benchmark sample and the victim model.
Other columns are ignored; a response labelled twice is an error."""

_N_BINS = 10


# ---------------------------------------------------------------------------- labels
def read_labels(source: str, lake: Lake | None = None) -> pa.Table:
    """Human labels (:data:`LABEL_FORMAT`) as an Arrow table with ``label`` (int8) and the
    key columns (``request_key``, or ``candidate_id`` and ``model_id``).

    Raises:
        ValueError: no such file or table, an unknown suffix, no label or key columns,
            labels other than 0/1, or a response labelled twice.
    """
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif suffix == ".csv":
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
        elif suffix in (".jsonl", ".json"):
            import pyarrow.json as pjson

            table = pjson.read_json(path)
        else:
            raise ValueError(f"--labels {source}: unknown suffix {suffix!r} (parquet, csv, jsonl)")
    elif lake is not None and lake.exists(source):
        table = lake.read_arrow(source)
    else:
        raise ValueError(f"--labels {source}: no such file (or lake table)")
    if "model" in table.column_names and "model_id" not in table.column_names:
        table = table.rename_columns(
            ["model_id" if c == "model" else c for c in table.column_names]
        )
    names = set(table.column_names)
    if "label" not in names:
        raise ValueError(f"--labels {source}: no column 'label'\n{LABEL_FORMAT}")
    if "request_key" in names:
        keys = ["request_key"]
    elif {"candidate_id", "model_id"} <= names:
        keys = ["candidate_id", "model_id"]
    else:
        raise ValueError(
            f"--labels {source}: needs request_key, or candidate_id and model_id\n{LABEL_FORMAT}"
        )
    label = table.column("label")
    if pa.types.is_boolean(label.type):
        label = label.cast(pa.int8())
    values = label.to_numpy(zero_copy_only=False)
    try:
        flat = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"--labels {source}: label must be 0/1, got type {label.type}") from None
    bad = ~np.isin(flat, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"--labels {source}: label must be 0/1; row {i} holds {label[i].as_py()!r}"
        )
    out = table.select(keys).cast(pa.schema([(k, pa.string()) for k in keys]))
    out = out.append_column("label", pa.array(flat.astype(np.int8)))
    dup = out.group_by(keys).aggregate([([], "count_all")])
    twice = dup.filter(pa.compute.greater(dup.column("count_all"), 1))
    if twice.num_rows:
        first = ", ".join(str(twice.column(k)[0]) for k in keys)
        raise ValueError(
            f"--labels {source}: {twice.num_rows} response(s) labelled twice ({first})"
        )
    return out


# --------------------------------------------------------------------------- figures
def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A figure undefined on these data (one class, a constant input) is NaN."""
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return math.nan


def agreement_rows(
    patterns: pd.DataFrame, judge_ids: Sequence[str]
) -> list[tuple[str, str, str, float]]:
    """``(group, metric, rater, value)`` of the agreement figures (module docstring) from
    decision ``patterns``: columns ``category``, ``d0``…``d{N_J-1}`` (0/1, NaN: no valid
    judgment), ``e`` (the ELITE decision, NaN: none) and ``n`` (how many items)."""
    judges = list(judge_ids)
    d_cols = [f"d{k}" for k in range(len(judges))]
    pat = patterns.copy()
    for c in [*d_cols, "e", "n"]:
        pat[c] = pd.to_numeric(pat[c], errors="coerce").astype(np.float64)
    out: list[tuple[str, str, str, float]] = []
    groups = [("overall", pat)] + [
        (str(c), g)
        for c, g in sorted(pat.groupby("category", dropna=False), key=lambda t: str(t[0]))
    ]
    for group, g in groups:
        w_all = g["n"].to_numpy()
        complete = g[d_cols].notna().all(axis=1).to_numpy()
        d = g.loc[complete, d_cols].to_numpy()
        w = w_all[complete]
        e = g.loc[complete, "e"].to_numpy()
        out.append((group, "n_items", "", float(w_all.sum())))
        out.append((group, "n_complete", "", float(w.sum())))
        if w.sum() == 0:
            continue
        share = (w @ d) / w.sum()
        out += [(group, "harmful_share", j, float(s)) for j, s in zip(judges, share, strict=True)]
        if len(judges) >= 2:
            out.append((group, "fleiss_kappa", "", fleiss_kappa(d, w)))
            out.append((group, "split_share", "", split_share(d, w)))
            k = pairwise_cohen_kappa(d, w)
            for a in range(len(judges)):
                for b in range(a + 1, len(judges)):
                    out.append((group, "cohen_kappa", f"{judges[a]}|{judges[b]}", float(k[a, b])))
        has_e = ~np.isnan(e)
        out.append((group, "n_elite", "elite", float(w[has_e].sum())))
        if w[has_e].sum() > 0:
            maj = majority_vote(d[has_e])
            we = w[has_e]
            out.append(
                (group, "elite_agreement", "elite", float(we @ (maj == e[has_e]) / we.sum()))
            )
            out.append((group, "elite_kappa", "elite", cohen_kappa(maj, e[has_e], we)))
    return out


def label_rows(
    labels: np.ndarray,
    probs: np.ndarray,
    elite: np.ndarray,
    judge_ids: Sequence[str],
    *,
    threshold: float,
    elite_threshold: float = ELITE_THRESHOLD,
    n_bins: int = _N_BINS,
) -> list[tuple[str, str, str, float]]:
    """``(group, metric, rater, value)`` of the alignment with human ``labels`` (n,) of
    each judge's ``probs`` (n, N_J; NaN: no judgment), of the panel (mean over the judges,
    items judged by all) and of the ELITE ``elite`` scores (n,; NaN: none)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64).reshape(y.size, len(judge_ids))
    complete = np.asarray(~np.isnan(p).any(axis=1), dtype=bool)
    panel = np.where(complete, np.where(complete[:, None], p, 0.0).mean(axis=1), np.nan)
    raters: list[tuple[str, np.ndarray, float, bool]] = [
        (j, p[:, k], threshold, True) for k, j in enumerate(judge_ids)
    ]
    raters.append(("panel", panel, threshold, True))
    raters.append(("elite", np.asarray(elite, dtype=np.float64), elite_threshold, False))
    out: list[tuple[str, str, str, float]] = []
    for rater, s, thr, is_prob in raters:
        ok = ~np.isnan(s)
        ys, ss = y[ok], s[ok]
        out.append(("overall", "n_labelled", rater, float(ok.sum())))
        if not ok.any():
            continue
        out.append(("overall", "auc", rater, _safe(auc_roc, ys, ss)))
        cm = classification_metrics(ys, ss, thr, zero_division=math.nan)
        out += [
            ("overall", m, rater, float(cm[m])) for m in ("accuracy", "precision", "recall", "f1")
        ]
        out.append(("overall", "pearson", rater, _safe(pearson, ss, ys)))
        if is_prob:
            rb = reliability_bins(ys, ss, n_bins=n_bins)
            out.append(("overall", "ece", rater, float(rb["ece"][0])))
            out.append(("overall", "brier", rater, float(rb["brier"][0])))
            for b in range(n_bins):
                group = f"bin:{b:02d}"
                out.append((group, "bin_n", rater, float(rb["n"][b])))
                out.append((group, "bin_mean_p", rater, float(rb["mean_p"][b])))
                out.append((group, "bin_rate", rater, float(rb["rate"][b])))
    return out


# ------------------------------------------------------------------------- spark side
def _items(
    lake: Lake,
    bench: Any,
    victims: Sequence[Any],
    judges: Sequence[Any],
    evaluator: Any | None,
    *,
    min_token_mass: float,
) -> Any:
    """One row per current response of ``victims`` to ``bench``: request_key,
    candidate_id, model_id, category, ``p0``… (each judge's P(unsafe), null: no single
    valid judgment) and ``elite`` (the ELITE score, null: none) — the cells ``evaluate``
    counts (:func:`vlsafety.pipeline.leaderboard_frame`)."""
    from pyspark.sql import functions as F

    from vlsafety.pipeline._model_stages import (
        current_judgments,
        current_responses,
        per_judge_probs,
    )

    items = bench.select("candidate_id", "image_id", "text")
    resp = current_responses(lake.read("responses"), items, victims).select(
        "request_key", "candidate_id", "model_id", "text"
    )
    per_judge = per_judge_probs(
        current_judgments(lake.read("judgments"), items, resp, judges), [j.id for j in judges], "p"
    )
    rows = (
        resp.select("request_key", "candidate_id", "model_id")
        .join(bench.select("candidate_id", "category"), "candidate_id")
        .join(per_judge, ["candidate_id", "model_id"], "left")
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
            .agg(F.when(F.count(F.lit(1)) == 1, F.first("score")).cast("double").alias("elite"))
        )
        return rows.join(elite, ["candidate_id", "model_id"], "left")
    return rows.withColumn("elite", F.lit(None).cast("double"))


def _patterns(rows: Any, n_judges: int, threshold: float, elite_threshold: float) -> pd.DataFrame:
    """Distinct (category, judge decisions, ELITE decision) with their counts: an aggregate."""
    from pyspark.sql import functions as F

    def decide(col: str, thr: float) -> Any:
        return F.when(F.col(col).isNotNull() & ~F.isnan(col), (F.col(col) >= thr).cast("int"))

    cols = [decide(f"p{k}", threshold).alias(f"d{k}") for k in range(n_judges)]
    cols.append(decide("elite", elite_threshold).alias("e"))
    return rows.groupBy("category", *cols).agg(F.count(F.lit(1)).alias("n")).toPandas()


def _labelled(rows: Any, labels: pa.Table, n_judges: int, spark: Any) -> tuple[np.ndarray, ...]:
    """Labels, judge probabilities and ELITE scores of the labelled items (Arrow → numpy),
    and how many labels matched no current response."""
    keys = [c for c in labels.column_names if c != "label"]
    lab = spark.createDataFrame(labels.to_pandas())
    cols = ["label", *[f"p{k}" for k in range(n_judges)], "elite"]
    got = rows.join(lab, keys).select(*cols).toArrow()

    def col(name: str) -> np.ndarray:
        return np.asarray(got.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    y = col("label")
    p = np.column_stack([col(f"p{k}") for k in range(n_judges)]) if n_judges else np.empty((0, 0))
    return y, p, col("elite"), np.array([labels.num_rows - got.num_rows])


def _victims(
    cfg: Config, lake: Lake, benchmark: str, version: int, models: Sequence[str] | None
) -> tuple[list[str], str]:
    """The victim models and the evaluate run they come from ("" when none)."""
    if models:
        return list(models), ""
    if lake.exists("leaderboard"):
        lb = lake.read_arrow(
            "leaderboard",
            columns=["benchmark", "benchmark_version", "model_id", "run_id", "evaluated_at"],
        ).to_pandas()
        lb = lb[(lb["benchmark"] == benchmark) & (lb["benchmark_version"] == version)]
        if not lb.empty:
            last = lb.sort_values("evaluated_at").iloc[-1]
            run = lb[lb["run_id"] == last["run_id"]]
            return sorted(set(run["model_id"])), str(last["run_id"] or "")
    return list(cfg.models.victims), ""


def judge_agreement(
    cfg: Config,
    lake: Lake,
    benchmark: str,
    version: int | None,
    *,
    models: Sequence[str] | None = None,
    labels: pa.Table | None = None,
    labels_source: str | None = None,
    command: str = "vlsafety judges",
) -> dict[str, Any]:
    """Compute the figures (module docstring) of ``benchmark@version``, append them to the
    ``judge_agreement`` table, log them to MLflow and return them."""
    from pyspark import StorageLevel

    from vlsafety.models import resolve_panel
    from vlsafety.pipeline._build import load_models

    base = load_models(cfg)
    if not base.judges:
        raise ValueError("models.judges: agreement needs at least one judge")
    version = lake.version(benchmark) if version is None else int(version)
    victim_ids, eval_run = _victims(cfg, lake, benchmark, version, models)
    victims = resolve_panel(base.specs, victim_ids)
    if not victims:
        raise ValueError("judges: no victim models (--models a,b or models.victims)")
    judge_ids = [j.id for j in base.judges]
    threshold = float(cfg.build.harmful_threshold)
    panel = json.dumps(
        {
            "victims": victim_ids,
            "judges": judge_ids,
            "evaluator": base.evaluator.id if base.evaluator else None,
            "threshold": threshold,
            "elite_threshold": ELITE_THRESHOLD,
        },
        sort_keys=True,
    )
    started = time.perf_counter()
    with track(cfg, command, lake=lake, run_name="judges") as rec:
        bench = lake.read(benchmark, version=version)
        rows = _items(
            lake,
            bench,
            victims,
            base.judges,
            base.evaluator,
            min_token_mass=cfg.judges.elite.min_token_mass,
        ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            patterns = _patterns(rows, len(judge_ids), threshold, ELITE_THRESHOLD)
            figures = agreement_rows(patterns, judge_ids)
            unmatched = None
            if labels is not None:
                y, p, elite, miss = _labelled(rows, labels, len(judge_ids), lake.spark)
                unmatched = int(miss[0])
                figures.append(("overall", "n_labels_unmatched", "", float(unmatched)))
                if y.size:
                    figures += label_rows(y, p, elite, judge_ids, threshold=threshold)
        finally:
            rows.unpersist()
        run_id = rec.run_id or ""
        frame = pd.DataFrame(figures, columns=["group", "metric", "rater", "value"]).assign(
            agreement_id=uuid.uuid4().hex,
            benchmark=benchmark,
            benchmark_version=version,
            eval_run_id=eval_run,
            panel=panel,
            run_id=run_id,
            computed_at=datetime.now(UTC).isoformat(),
        )[list(AGREEMENT_COLUMNS)]
        table_version = lake.write(
            pa.Table.from_pandas(frame, preserve_index=False),
            "judge_agreement",
            "merge",
            keys=AGREEMENT_KEYS,
        )
        rec.log_metrics(_mlflow_metrics(frame))
        rec.log_dict(frame.to_dict(orient="records"), "judge_agreement.json")
        if labels is not None and (frame["metric"] == "bin_rate").any():
            import tempfile

            from vlsafety.report import reliability_figure

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "reliability.png"
                reliability_figure(frame).savefig(path, dpi=110, bbox_inches="tight")
                rec.log_artifact(path, "judges")
    return {
        "run_id": run_id or None,
        "benchmark": f"{benchmark}@{version}",
        "eval_run_id": eval_run or None,
        "victims": victim_ids,
        "judges": judge_ids,
        "evaluator": base.evaluator.id if base.evaluator else None,
        "labels": labels_source,
        "labels_unmatched": unmatched,
        "table_version": table_version,
        "figures": frame[["group", "metric", "rater", "value"]].to_dict(orient="records"),
        "duration_s": time.perf_counter() - started,
    }


def _mlflow_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """The overall and per-category figures (not the reliability bins); NaN left out."""
    out: dict[str, float] = {}
    for group, metric, rater, value in zip(
        frame["group"], frame["metric"], frame["rater"], frame["value"], strict=True
    ):
        if str(group).startswith("bin:") or not math.isfinite(value):
            continue
        name = ".".join(x for x in ("judges", str(metric), str(rater).replace("|", ".")) if x)
        if group != "overall":
            name += f".cat.{group}"
        out[_metric_name(name)] = float(value)
    return out


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


# --------------------------------------------------------------------------- printing
def format_agreement(result: dict[str, Any]) -> str:
    """The ``vlsafety judges`` table: per group κ figures, pairwise κ, label alignment."""
    fig = pd.DataFrame(result["figures"])
    head = (
        f"judge agreement on {result['benchmark']}  models: {', '.join(result['victims'])}"
        f"  judges: {', '.join(result['judges'])}"
        + (f"  (evaluate run {result['eval_run_id']})" if result.get("eval_run_id") else "")
        + f"  MLflow run {result.get('run_id') or '-'}"
    )
    lines = [head]
    groups = fig[~fig["group"].str.startswith("bin:")]
    wide = groups[groups["metric"].isin(_SUMMARY)].pivot_table(
        index="group", columns="metric", values="value", aggfunc="first", dropna=False
    )
    order = ["overall", *sorted(g for g in wide.index if g != "overall")]
    wide = wide.reindex(index=[g for g in order if g in wide.index])
    wide = wide.reindex(columns=[c for c in _SUMMARY if c in wide.columns])
    wide.columns.name = None
    for c in wide.columns:
        if c.startswith("n_"):
            wide[c] = wide[c].astype("Int64")
    lines.append(wide.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    pairs = fig[(fig["group"] == "overall") & (fig["metric"] == "cohen_kappa")]
    if not pairs.empty:
        lines.append("pairwise Cohen's kappa (overall):")
        lines += [f"  {r.rater:<40} {r.value: .3f}" for r in pairs.itertuples(index=False)]
    lab = fig[(fig["group"] == "overall") & fig["metric"].isin(_LABELLED)]
    if not lab.empty:
        table = lab.pivot_table(index="rater", columns="metric", values="value", aggfunc="first")
        table = table.reindex(columns=[c for c in _LABELLED if c in table.columns])
        lines.append(f"alignment with human labels ({result.get('labels')}):")
        lines.append(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    if result.get("labels_unmatched"):
        lines.append(f"  {result['labels_unmatched']} label(s) matched no current response")
    lines.append(
        "  fleiss_kappa / split_share: items judged by every judge (n_complete); "
        "elite_*: ELITE score >= 10 vs. the judges' majority"
    )
    return "\n".join(lines)


_SUMMARY = (
    "n_items",
    "n_complete",
    "fleiss_kappa",
    "split_share",
    "n_elite",
    "elite_kappa",
    "elite_agreement",
)
_LABELLED = (
    "n_labelled",
    "auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "pearson",
    "ece",
    "brier",
)
