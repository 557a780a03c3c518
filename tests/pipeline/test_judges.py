"""The judge agreement job's figures: from decision patterns with counts (what Spark
aggregates to) and from labelled items; the labels side table's format."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlsafety.metrics import (
    auc_roc,
    cohen_kappa,
    fleiss_kappa,
    majority_vote,
    pairwise_cohen_kappa,
    split_share,
)
from vlsafety.pipeline._judges import (
    agreement_rows,
    format_agreement,
    label_rows,
    read_labels,
)

JUDGES = ["guard", "clf", "refusal"]


def _items(seed: int, n: int = 300, missing: float = 0.1) -> pd.DataFrame:
    """Per-item decisions: d0..d2 (NaN: no judgment), ELITE decision e, category."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    d = np.column_stack([truth, truth ^ (rng.random(n) < 0.2), rng.integers(0, 2, n)]).astype(float)
    d[rng.random((n, 3)) < missing] = np.nan
    e = np.where(rng.random(n) < 0.2, np.nan, truth ^ (rng.random(n) < 0.3)).astype(float)
    cats = rng.choice(["privacy", "bias", "toxicity"], n)
    return pd.DataFrame({"category": cats, "d0": d[:, 0], "d1": d[:, 1], "d2": d[:, 2], "e": e})


def _patterns(items: pd.DataFrame) -> pd.DataFrame:
    """What the Spark groupBy(category, d*, e).count() returns."""
    cols = ["category", "d0", "d1", "d2", "e"]
    return items.groupby(cols, dropna=False).size().reset_index(name="n")


def _get(
    rows: list[tuple[str, str, str, float]], group: str, metric: str, rater: str = ""
) -> float:
    got = [v for g, m, r, v in rows if (g, m, r) == (group, metric, rater)]
    assert len(got) == 1, (group, metric, rater)
    return got[0]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_pattern_counts_give_the_figures_of_the_items(seed: int) -> None:
    items = _items(seed)
    rows = agreement_rows(_patterns(items), JUDGES)
    for group, g in [("overall", items), *items.groupby("category")]:
        complete = g[["d0", "d1", "d2"]].notna().all(axis=1)
        d = g.loc[complete, ["d0", "d1", "d2"]].to_numpy()
        assert _get(rows, group, "n_items") == len(g)
        assert _get(rows, group, "n_complete") == len(d)
        assert _get(rows, group, "fleiss_kappa") == pytest.approx(fleiss_kappa(d), nan_ok=True)
        assert _get(rows, group, "split_share") == pytest.approx(split_share(d))
        k = pairwise_cohen_kappa(d)
        assert _get(rows, group, "cohen_kappa", "guard|refusal") == pytest.approx(
            k[0, 2], nan_ok=True
        )
        for j, name in enumerate(JUDGES):
            assert _get(rows, group, "harmful_share", name) == pytest.approx(d[:, j].mean())
        e = g.loc[complete, "e"].to_numpy()
        has = ~np.isnan(e)
        assert _get(rows, group, "n_elite", "elite") == has.sum()
        maj = majority_vote(d[has])
        assert _get(rows, group, "elite_agreement", "elite") == pytest.approx(
            np.mean(maj == e[has])
        )
        assert _get(rows, group, "elite_kappa", "elite") == pytest.approx(
            cohen_kappa(maj, e[has]), nan_ok=True
        )


def test_known_agreement_through_the_job_figures() -> None:
    """Two identical judges and one inverted one: κ(a, b) = 1, κ(a, inverted) = -1."""
    rng = np.random.default_rng(3)
    truth = rng.permutation(np.repeat([0.0, 1.0], 200))  # balanced: an inverted κ is -1
    items = pd.DataFrame(
        {"category": "bias", "d0": truth, "d1": truth, "d2": 1 - truth, "e": truth}
    )
    rows = agreement_rows(_patterns(items), JUDGES)
    assert _get(rows, "overall", "cohen_kappa", "guard|clf") == pytest.approx(1.0)
    assert _get(rows, "overall", "cohen_kappa", "guard|refusal") == pytest.approx(-1.0)
    assert _get(rows, "overall", "split_share") == 1.0  # the inverted judge splits every item
    assert _get(rows, "overall", "elite_kappa", "elite") == pytest.approx(1.0)  # majority = truth
    assert _get(rows, "overall", "fleiss_kappa") < 0


def test_no_complete_item_gives_counts_only() -> None:
    items = pd.DataFrame({"category": "bias", "d0": [1.0], "d1": [np.nan], "d2": [0.0], "e": 1.0})
    rows = agreement_rows(_patterns(items), JUDGES)
    assert {(m, v) for _, m, _, v in rows} == {("n_items", 1.0), ("n_complete", 0.0)}


def test_labels_with_a_known_auc_reproduce_it() -> None:
    rng = np.random.default_rng(5)
    n = 400
    y = (rng.random(n) < 0.4).astype(float)
    # judge 0: negatives at 0.3; the first 3/4 of the positives at 0.9 (above every
    # negative), the rest at 0.05 (below): AUC = the share at 0.9
    p0 = np.full(n, 0.3)
    pos = np.flatnonzero(y == 1)
    p0[pos] = np.where(np.arange(pos.size) < 0.75 * pos.size, 0.9, 0.05)
    p1 = rng.random(n)
    p2 = np.where(rng.random(n) < 0.1, np.nan, y)
    elite = y * 20 + rng.random(n)
    rows = label_rows(y, np.column_stack([p0, p1, p2]), elite, JUDGES, threshold=0.5)
    want = float(np.mean(p0[pos] == 0.9))
    assert _get(rows, "overall", "auc", "guard") == pytest.approx(auc_roc(y, p0))
    assert _get(rows, "overall", "auc", "guard") == pytest.approx(want)
    assert abs(_get(rows, "overall", "auc", "clf") - 0.5) < 0.1  # random scores
    assert _get(rows, "overall", "auc", "refusal") == 1.0 and _get(
        rows, "overall", "f1", "refusal"
    ) == pytest.approx(1.0)
    assert _get(rows, "overall", "n_labelled", "refusal") == (~np.isnan(p2)).sum()
    assert _get(rows, "overall", "n_labelled", "panel") == (~np.isnan(p2)).sum()
    assert _get(rows, "overall", "auc", "elite") == 1.0
    assert _get(rows, "overall", "pearson", "elite") > 0.9
    # the reliability bins of each probability rater add up to its labelled items
    for rater in ("guard", "panel"):
        total = sum(v for g, m, r, v in rows if m == "bin_n" and r == rater)
        assert total == _get(rows, "overall", "n_labelled", rater)
    assert not any(m == "bin_n" and r == "elite" for _, m, r, _ in rows)  # not a probability


def test_one_class_of_labels_leaves_auc_undefined() -> None:
    y = np.ones(5)
    rows = label_rows(y, np.full((5, 3), 0.7), np.full(5, 12.0), JUDGES, threshold=0.5)
    assert math.isnan(_get(rows, "overall", "auc", "guard"))
    assert _get(rows, "overall", "recall", "guard") == 1.0


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_label_files(tmp_path: Path, suffix: str) -> None:
    df = pd.DataFrame({"candidate_id": ["a", "b"], "model": ["m", "m"], "label": [1, 0]})
    path = tmp_path / f"labels{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(df), path)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    got = read_labels(str(path))
    assert got.column_names == ["candidate_id", "model_id", "label"]
    assert got.column("label").to_pylist() == [1, 0]


def test_label_file_errors(tmp_path: Path) -> None:
    def write(rows: list[dict[str, Any]]) -> str:
        path = tmp_path / "l.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows))
        return str(path)

    good = read_labels(
        write([{"request_key": "k1", "label": True}, {"request_key": "k2", "label": False}])
    )
    assert good.column("label").to_pylist() == [1, 0]
    with pytest.raises(ValueError, match="no column 'label'"):
        read_labels(write([{"request_key": "k", "harmful": 1}]))
    with pytest.raises(ValueError, match="needs request_key, or candidate_id and model_id"):
        read_labels(write([{"candidate_id": "a", "label": 1}]))
    with pytest.raises(ValueError, match="0/1; row 1 holds 2"):
        read_labels(write([{"request_key": "a", "label": 1}, {"request_key": "b", "label": 2}]))
    with pytest.raises(ValueError, match="labelled twice"):
        read_labels(write([{"request_key": "a", "label": 1}, {"request_key": "a", "label": 0}]))
    with pytest.raises(ValueError, match="no such file"):
        read_labels(str(tmp_path / "absent.csv"))
    (tmp_path / "l.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown suffix"):
        read_labels(str(tmp_path / "l.txt"))


def test_format_agreement_prints_the_table() -> None:
    rows = agreement_rows(_patterns(_items(1)), JUDGES)
    text = format_agreement(
        {
            "benchmark": "benchmark@0",
            "victims": ["m1"],
            "judges": JUDGES,
            "run_id": "r1",
            "figures": [{"group": g, "metric": m, "rater": r, "value": v} for g, m, r, v in rows],
        }
    )
    lines = text.splitlines()
    assert lines[0].startswith("judge agreement on benchmark@0")
    assert "fleiss_kappa" in lines[1] and any(line.startswith("overall") for line in lines)
    assert "guard|refusal" in text
