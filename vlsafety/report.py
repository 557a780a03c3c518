"""One self-contained HTML report of a benchmark version (``vlsafety report``).

Sections: leaderboard, quality metrics (MAD / MEAN / GAP / DIV), contamination by the
public benchmarks (share of samples with an exact / near / semantic match), category
distribution of the benchmark vs. the pool, a public benchmark's own (source) categories
against our taxonomy, an update's before → after figures (VLSafetyBencher Table 2),
criteria histograms, a 2-D projection of the benchmark's embeddings colored by
separability and harmfulness (VLSafetyBencher Fig. 5), ASR stability vs. benchmark size
(Fig. 7), the weight sweep (Fig. 6) and the judge report (agreement of the judge panel,
``vlsafety judges``). Plots are matplotlib PNGs embedded as base64, so the page has no
external references.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SECTIONS", "ReportData", "project_2d", "reliability_figure", "render_report"]

#: Section ids, in page order; every report has each of them (with a note when empty).
SECTIONS = (
    "leaderboard",
    "quality",
    "contamination",
    "categories",
    "sources",
    "update",
    "criteria",
    "projection",
    "stability",
    "sweep",
    "judges",
)


@dataclass
class ReportData:
    """Plain inputs of a report; any part may be missing (the section then says why)."""

    title: str
    subtitle: str = ""
    # model, category, n (evaluated), n_refused, n_unjudged, asr, sr, n_elite, e_asr, elite_mean
    leaderboard: pd.DataFrame | None = None
    quality: dict[str, float] = field(default_factory=dict)  # mad, mean, gap, div, ...
    # the latest contamination check's summary (vlsafety.contamination), and its strongest
    # matches: sample_id, source, record_id, source_ref, kind, similarity, n_matches
    contamination: dict[str, Any] | None = None
    contamination_matches: pd.DataFrame | None = None
    category_counts: pd.DataFrame | None = None  # category, benchmark, pool
    # a public benchmark: source, source_category, category (ours), n
    source_counts: pd.DataFrame | None = None
    # an update's version: metric, before, after (Table 2), and what it replaced
    update: pd.DataFrame | None = None
    update_note: str = ""
    criteria: pd.DataFrame | None = None  # c_sep, c_harm, c_div per benchmark sample
    embedding: np.ndarray | None = None  # (n, d) benchmark embeddings
    separability: np.ndarray | None = None  # (n,)
    harmfulness: np.ndarray | None = None  # (n,)
    stability: pd.DataFrame | None = None  # size, model, asr, lo, hi
    sweep: pd.DataFrame | None = None  # weight, value, mad, mean, gap, div
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is empty
    # judge_agreement rows of one `vlsafety judges` run: group, metric, rater, value
    judges: pd.DataFrame | None = None
    judges_caption: str = ""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"/>'


def project_2d(embedding: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D projection for Fig. 5: t-SNE (PCA-initialized) when there are enough points,
    else the first two principal components."""
    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    if n < 3:
        return np.zeros((n, 2))
    x = x - x.mean(axis=0)
    if n >= 30:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(5.0, (n - 1) / 3)))
        return np.asarray(
            TSNE(
                n_components=2, init="pca", perplexity=perplexity, random_state=seed
            ).fit_transform(x)
        )
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :2] * s[:2]
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _leaderboard(data: ReportData) -> str:
    lb = data.leaderboard
    if lb is None or lb.empty:
        return ""
    overall = lb[lb["category"] == "overall"].sort_values("asr")
    wanted = (
        "model",
        "n",
        "n_refused",
        "n_unjudged",
        "asr",
        "sr",
        "n_elite",
        "e_asr",
        "elite_mean",
    )
    cols = [c for c in wanted if c in overall.columns]
    table = overall[cols].to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="tbl")
    from vlsafety.pipeline._evaluate import SOURCE_PREFIX

    own = lb["category"].astype(str).str.startswith(SOURCE_PREFIX)
    parts = [f"<h3>Overall (micro-average)</h3>{table}"]
    for title, rows in (
        ("ASR by category", lb[(lb["category"] != "overall") & ~own]),
        ("ASR by source category", lb[own]),
    ):
        pivot = rows.pivot_table(index="model", columns="category", values="asr")
        if not pivot.empty:
            pivot.columns = [str(c).removeprefix(SOURCE_PREFIX) for c in pivot.columns]
            html_table = pivot.to_html(float_format=lambda v: f"{v:.3f}", classes="tbl")
            parts.append(f"<h3>{title}</h3>{html_table}")
    return "".join(parts)


def _quality(data: ReportData) -> str:
    if not data.quality:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in data.quality.items()
    )
    return f'<table class="tbl"><tr><th>metric</th><th>value</th></tr>{rows}</table>'


def _contamination(data: ReportData) -> str:
    summary = data.contamination
    if not summary:
        return ""
    from vlsafety.contamination import KINDS

    rows = []
    for name, s in [*summary["sources"].items(), ("any source", summary["any"])]:
        row = {"source": name, "records": s["records"], "contaminated": s["contaminated"]}
        row["share"] = f"{s['share']:.1%}"
        row.update({k: f"{s['kinds'][k]['share']:.1%}" for k in KINDS})
        rows.append(row)
    head = (
        f"<p>{summary['samples']} samples compared with {html.escape(', '.join(summary['against']))}"
        f" (check {html.escape(str(summary.get('check_id', '-')))}). Share: of the benchmark's "
        "samples with a match of that source (and kind).</p>"
    )
    table = pd.DataFrame(rows).to_html(index=False, classes="tbl")
    notes = "".join(f"<p><em>note: {html.escape(n)}</em></p>" for n in summary.get("notes", []))
    matches = data.contamination_matches
    examples = ""
    if matches is not None and not matches.empty:
        examples = "<h3>Strongest matches</h3>" + matches.to_html(
            index=False, float_format=lambda v: f"{v:.3f}", classes="tbl"
        )
    return head + table + notes + examples


def _categories(data: ReportData) -> str:
    cc = data.category_counts
    if cc is None or cc.empty:
        return ""
    import matplotlib.pyplot as plt

    share = cc.set_index("category")[["benchmark", "pool"]].astype(float)
    share = share / share.sum(axis=0).replace(0, 1)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    share.plot.bar(ax=ax)
    ax.set_ylabel("share of samples")
    ax.set_title("Category distribution: benchmark vs. pool")
    return _img(_png(fig), "category distribution") + cc.to_html(index=False, classes="tbl")


def _sources(data: ReportData) -> str:
    sc = data.source_counts
    if sc is None or sc.empty:
        return ""
    import matplotlib.pyplot as plt

    per = sc.groupby(["source", "source_category"], dropna=False)["n"].sum().reset_index()
    labels = [f"{s}: {c}" for s, c in zip(per["source"], per["source_category"], strict=True)]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(per) + 1.2))
    ax.barh(labels, per["n"], color="#4472c4")
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    ax.set_title("Source-category distribution")
    cross = sc.pivot_table(
        index=["source", "source_category"], columns="category", values="n", fill_value=0
    )
    return (
        _img(_png(fig), "source-category distribution")
        + "<h3>Source category × our taxonomy</h3>"
        + cross.to_html(classes="tbl")
    )


def _update(data: ReportData) -> str:
    up = data.update
    if up is None or up.empty:
        return ""
    note = f"<p>{html.escape(data.update_note)}</p>" if data.update_note else ""
    return note + up.to_html(index=False, float_format=lambda v: f"{v:.4f}", classes="tbl")


def _criteria(data: ReportData) -> str:
    cr = data.criteria
    if cr is None or cr.empty:
        return ""
    import matplotlib.pyplot as plt

    cols = [c for c in ("c_sep", "c_harm", "c_div") if c in cr.columns]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.3 * len(cols), 2.8))
    for ax, col in zip(np.atleast_1d(axes), cols, strict=True):
        ax.hist(cr[col].dropna(), bins=20, range=(0, 1), color="#4472c4")
        ax.set_title(col)
    return _img(_png(fig), "criteria histograms")


def _projection(data: ReportData) -> str:
    if data.embedding is None or len(data.embedding) == 0:
        return ""
    import matplotlib.pyplot as plt

    xy = project_2d(data.embedding)
    panels = [("separability", data.separability), ("harmfulness", data.harmfulness)]
    panels = [(name, v) for name, v in panels if v is not None]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4))
    for ax, (name, values) in zip(np.atleast_1d(axes), panels or [("samples", None)], strict=True):
        sc = ax.scatter(
            xy[:, 0], xy[:, 1], c=values, cmap="viridis", s=12, vmin=0, vmax=1, edgecolors="none"
        )
        ax.set_title(f"2-D projection colored by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        if values is not None:
            fig.colorbar(sc, ax=ax)
    return _img(_png(fig), "embedding projection")


def _stability(data: ReportData) -> str:
    st = data.stability
    if st is None or st.empty:
        return ""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for model, g in st.groupby("model"):
        g = g.sort_values("size")
        ax.plot(g["size"], g["asr"], marker="o", label=str(model))
        if {"lo", "hi"} <= set(g.columns):
            ax.fill_between(g["size"], g["lo"], g["hi"], alpha=0.2)
    ax.set_xlabel("benchmark size")
    ax.set_ylabel("ASR")
    ax.set_title("ASR stability vs. benchmark size (bootstrap CI)")
    ax.legend(fontsize=7)
    extra = ""
    if "kendall_tau" in st.columns:
        tau = st.groupby("size")["kendall_tau"].first().reset_index()
        extra = "<h3>Ranking stability (Kendall τ vs. full set)</h3>" + tau.to_html(
            index=False, float_format=lambda v: f"{v:.3f}", classes="tbl"
        )
    return _img(_png(fig), "stability") + extra


def _sweep(data: ReportData) -> str:
    sw = data.sweep
    if sw is None or sw.empty:
        return ""
    import matplotlib.pyplot as plt

    metrics = [m for m in ("mad", "mean", "gap", "div") if m in sw.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3))
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        for weight, g in sw.groupby("weight"):
            g = g.sort_values("value")
            ax.plot(g["value"], g[metric], marker="o", label=str(weight))
        ax.set_title(metric.upper())
        ax.set_xlabel("weight value")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return _img(_png(fig), "weight sweep") + sw.to_html(
        index=False, float_format=lambda v: f"{v:.3f}", classes="tbl"
    )


# ------------------------------------------------------------------ judge report
def reliability_figure(figures: pd.DataFrame) -> Any:
    """The reliability diagram (P(unsafe) binned vs. the human harmful rate) of each
    judge and of the panel, from ``judge_agreement`` rows (``bin:NN`` groups). The
    caller saves and closes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = figures[figures["group"].astype(str).str.startswith("bin:")]
    wide = bins.pivot_table(
        index=["rater", "group"], columns="metric", values="value", aggfunc="first"
    )
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="calibrated")
    for rater, g in wide.groupby(level="rater", sort=True):
        g = g[(g["bin_n"] > 0)]
        ax.plot(g["bin_mean_p"], g["bin_rate"], marker="o", label=str(rater))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("judge P(unsafe) (bin mean)")
    ax.set_ylabel("human harmful rate")
    ax.set_title("Reliability diagram")
    ax.legend(fontsize=7)
    return fig


def _judges(data: ReportData) -> str:
    fig = data.judges
    if fig is None or fig.empty:
        return ""

    def table(df: pd.DataFrame) -> str:
        return df.to_html(float_format=lambda v: f"{v:.3f}", classes="tbl", na_rep="-")

    groups = fig[~fig["group"].astype(str).str.startswith("bin:")]
    summary = (
        "n_items",
        "n_complete",
        "fleiss_kappa",
        "split_share",
        "n_elite",
        "elite_kappa",
        "elite_agreement",
    )
    wide = groups[groups["metric"].isin(summary)].pivot_table(
        index="group", columns="metric", values="value", aggfunc="first", dropna=False
    )
    order = ["overall", *sorted(g for g in wide.index if g != "overall")]
    wide = wide.reindex(index=[g for g in order if g in wide.index])
    wide = wide.reindex(columns=[c for c in summary if c in wide.columns])
    parts = [f"<p>{html.escape(data.judges_caption)}</p>", table(wide)]
    pairs = groups[groups["metric"] == "cohen_kappa"].pivot_table(
        index="rater", columns="group", values="value", aggfunc="first"
    )
    if not pairs.empty:
        cols = ["overall", *sorted(c for c in pairs.columns if c != "overall")]
        parts += ["<h3>Pairwise Cohen's κ</h3>", table(pairs.reindex(columns=cols))]
    labelled = (
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
    lab = groups[(groups["group"] == "overall") & groups["metric"].isin(labelled)]
    if not lab.empty:
        wide_lab = lab.pivot_table(index="rater", columns="metric", values="value", aggfunc="first")
        wide_lab = wide_lab.reindex(columns=[c for c in labelled if c in wide_lab.columns])
        parts += ["<h3>Alignment with human labels (ELITE §5)</h3>", table(wide_lab)]
        if (fig["metric"] == "bin_rate").any():
            parts.append(_img(_png(reliability_figure(fig)), "reliability diagram"))
    return "".join(parts)


_TITLES = {
    "leaderboard": "Leaderboard",
    "quality": "Benchmark quality",
    "contamination": "Contamination (public benchmarks)",
    "categories": "Category distribution",
    "sources": "Source categories (public benchmark)",
    "update": "Update: before → after (Table 2)",
    "criteria": "Selection criteria",
    "projection": "Embedding projection (Fig. 5)",
    "stability": "Stability vs. benchmark size (Fig. 7)",
    "sweep": "Weight sweep (Fig. 6)",
    "judges": "Judge report (panel agreement and calibration)",
}
_BUILDERS = {
    "leaderboard": _leaderboard,
    "quality": _quality,
    "contamination": _contamination,
    "categories": _categories,
    "sources": _sources,
    "update": _update,
    "criteria": _criteria,
    "projection": _projection,
    "stability": _stability,
    "sweep": _sweep,
    "judges": _judges,
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
section{margin:2em 0;border-top:1px solid #ddd}img{max-width:100%}
.tbl{border-collapse:collapse;font-size:13px}.tbl td,.tbl th{border:1px solid #ccc;padding:3px 8px}
.empty{color:#999;font-style:italic}
"""


def render_report(data: ReportData, out: str | Path) -> Path:
    """Write the report to ``out`` and return its path. Every section is present."""
    import matplotlib

    matplotlib.use("Agg")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(data.title)}</h1><p class='sub'>{html.escape(data.subtitle)}</p>",
    ]
    for sid in SECTIONS:
        body = _BUILDERS[sid](data)
        if not body:
            why = data.notes.get(sid, "no data for this section")
            body = f"<p class='empty'>{html.escape(why)}</p>"
        parts.append(f'<section id="{sid}"><h2>{_TITLES[sid]}</h2>{body}</section>')
    parts.append("</body></html>")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path
