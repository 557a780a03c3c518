"""ELITE filter mode (ELITE §3.4): panel votes, the single-model exception, balancing."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlsafety.cli import main
from vlsafety.selection import (
    BELOW_THRESHOLD,
    CATEGORY_CAP,
    SOURCE_SHARE,
    elite_filter,
    select_table,
    votes_needed,
)

SCORES = np.array(
    [
        [12.0, 10.0, 0.0],  # 0: two votes (10 counts: >= threshold)
        [25.0, 3.0, 2.0],  # 1: one vote, but very harmful
        [9.9, 9.9, 9.9],  # 2: no votes
        [15.0, 15.0, 15.0],  # 3: three votes
        [11.0, 11.0, 0.0],  # 4: two votes
        [20.0, 20.0, 5.0],  # 5: two votes
    ]
)
CATS = np.array(["S1", "S1", "S1", "S2", "S2", "S2"])


def test_two_of_three_votes() -> None:
    r = elite_filter(SCORES, CATS)
    assert r.kept.tolist() == [0, 3, 4, 5]
    assert r.dropped.tolist() == [1, 2]
    assert r.reasons == [BELOW_THRESHOLD, BELOW_THRESHOLD]
    assert "1 of 3 panel scores >= 10 (need 2)" in r.details[0]
    assert r.votes.tolist() == [2, 1, 0, 3, 2, 2]
    np.testing.assert_allclose(r.combined, SCORES.sum(axis=1))


def test_single_model_exception_and_min_votes() -> None:
    assert elite_filter(SCORES, CATS, single_model_exception=20.0).kept.tolist() == [0, 1, 3, 4, 5]
    assert elite_filter(SCORES, CATS, min_votes=3).kept.tolist() == [3]
    assert elite_filter(SCORES, CATS, min_votes=1).kept.tolist() == [0, 1, 3, 4, 5]
    assert elite_filter(SCORES, CATS, threshold=9.9).kept.tolist() == [0, 2, 3, 4, 5]


def test_balancing_drops_the_lowest_combined_scores() -> None:
    r = elite_filter(SCORES, CATS, per_category_cap=2)
    # S2 holds 3, 4, 5 with combined 45, 22, 45: 4 goes. S1 keeps 0 (only one passes).
    assert r.kept.tolist() == [0, 3, 5]
    dropped = dict(zip(r.dropped.tolist(), r.reasons, strict=True))
    assert dropped == {1: BELOW_THRESHOLD, 2: BELOW_THRESHOLD, 4: CATEGORY_CAP}
    assert r.reason_counts() == {BELOW_THRESHOLD: 2, CATEGORY_CAP: 1}
    assert "cap 2" in r.details[r.dropped.tolist().index(4)]


def test_balancing_ties_keep_the_lower_index() -> None:
    r = elite_filter(SCORES, CATS, per_category_cap=1)
    assert r.kept.tolist() == [0, 3]  # 3 and 5 tie on 45: 3 stays


def test_every_row_is_kept_or_dropped_with_a_reason() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 25, size=(500, 3))
    cats = rng.integers(0, 11, size=500)
    r = elite_filter(scores, cats, per_category_cap=10)
    assert sorted(r.kept.tolist() + r.dropped.tolist()) == list(range(500))
    assert len(r.reasons) == len(r.details) == r.dropped.size
    assert max(np.bincount(cats[r.kept], minlength=11)) <= 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": np.full((2, 3), 26.0)}, r"\[0, 25\]"),
        ({"scores": np.array([[1.0, np.nan, 2.0]] * 2)}, "NaN"),
        ({"scores": np.zeros(3)}, "shape"),
        ({"category": np.array(["a"])}, "category"),
        ({"min_votes": 4}, "min_votes"),
        ({"min_votes": 0}, "min_votes"),
        ({"per_category_cap": 0}, "per_category_cap"),
        ({"single_model_exception": 5.0}, "single_model_exception"),
        ({"min_votes": 1.5}, "min_votes: a share"),
        ({"min_votes": 0.0}, "min_votes: a share"),
        ({"min_votes": True}, "min_votes"),
        ({"max_source_share": 0.5}, "needs the pairs' source"),
        ({"max_source_share": 0.0, "source": np.array(["a", "b"])}, "max_source_share"),
        ({"max_source_share": 0.5, "source": np.array(["a"])}, "source: expected shape"),
    ],
)
def test_bad_inputs(kwargs: dict, match: str) -> None:
    args = {"scores": np.zeros((2, 3)), "category": np.array(["a", "b"])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        elite_filter(args.pop("scores"), args.pop("category"), **args)


# ------------------------------------------------------------------ min_votes
@pytest.mark.parametrize(
    ("min_votes", "n_panel", "need"),
    [
        (2, 3, 2),
        (3, 3, 3),
        (0.5, 3, 2),  # at least half of 3
        (2 / 3, 3, 2),  # 2 of 3 as a share (rounding forgiven)
        (0.34, 3, 2),
        (1 / 3, 3, 1),
        (1.0, 3, 3),  # the whole panel
        (0.01, 3, 1),
        (0.5, 4, 2),
        (0.75, 4, 3),
    ],
)
def test_votes_needed_from_a_count_or_a_share(min_votes: float, n_panel: int, need: int) -> None:
    assert votes_needed(min_votes, n_panel) == need


def test_min_votes_as_a_share_keeps_what_the_count_keeps() -> None:
    assert elite_filter(SCORES, CATS, min_votes=0.5).kept.tolist() == [0, 3, 4, 5]
    assert elite_filter(SCORES, CATS, min_votes=2 / 3).kept.tolist() == [0, 3, 4, 5]
    assert elite_filter(SCORES, CATS, min_votes=1.0).kept.tolist() == [3]
    assert elite_filter(SCORES, CATS, min_votes=0.3).kept.tolist() == [0, 1, 3, 4, 5]
    r = elite_filter(SCORES, CATS, min_votes=1.0)
    assert r.votes_needed == 3 and "(need 3)" in r.details[0]


# ------------------------------------------------------ single-model exception
def test_single_model_exception_keeps_one_vote_pairs_at_its_score() -> None:
    scores = np.array(
        [
            [21.0, 0.0, 0.0],  # one vote, 21 >= 20: kept by the exception
            [19.0, 0.0, 0.0],  # one vote, below 20: dropped
            [20.0, 3.0, 1.0],  # one vote, exactly 20: kept
            [9.0, 9.0, 9.0],  # no vote
            [12.0, 11.0, 0.0],  # two votes: kept by the rule itself
        ]
    )
    cats = np.array(["S1"] * 5)
    r = elite_filter(scores, cats, single_model_exception=20.0)
    assert r.kept.tolist() == [0, 2, 4]
    assert r.by_exception.tolist() == [True, False, True, False, False]
    off = elite_filter(scores, cats)
    assert off.kept.tolist() == [4] and not off.by_exception.any()
    # at the threshold itself the exception is "one vote is enough"
    same = elite_filter(scores, cats, single_model_exception=10.0)
    assert same.kept.tolist() == elite_filter(scores, cats, min_votes=1).kept.tolist()


# -------------------------------------------------------------- source share
#: Category S1: source A (combined 40, 30, 24, 22), B (35, 20), C (50); category S2: one
#: source D only (4 pairs). Every pair has two votes. Rows are (score, score, 0) so the
#: combined score is 2 * score.
_SRC_ROWS = [
    ("S1", "A", 20.0),
    ("S1", "A", 15.0),
    ("S1", "A", 12.0),
    ("S1", "A", 11.0),
    ("S1", "B", 17.5),
    ("S1", "B", 10.0),
    ("S1", "C", 25.0),
    ("S2", "D", 20.0),
    ("S2", "D", 15.0),
    ("S2", "D", 12.0),
    ("S2", "D", 11.0),
]


def _source_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.array([[x, x, 0.0] for _, _, x in _SRC_ROWS])
    cats = np.array([c for c, _, _ in _SRC_ROWS])
    srcs = np.array([s for _, s, _ in _SRC_ROWS])
    return scores, cats, srcs


@pytest.mark.parametrize(
    ("share", "dropped"),
    [
        # 7 pairs in S1: A holds 4 > 3.5, drop A's 22; then A 3 of 6 is fine.
        (0.5, [3]),
        # A 4 > 2.8: drop A22; A 3 > 2.4: drop A24; then A 2 of 5 and B 2 of 5 are fine.
        (0.4, [2, 3]),
        # A22 goes; then A (3) and B (2) are both over 1.8: the lower of A24 and B20 goes
        # (B20); A 3 > 1.5: A24; A 2 > 1.2: A30; A keeps its last pair.
        (0.3, [1, 2, 3, 5]),
        (1.0, []),
    ],
)
def test_source_share_drops_the_lowest_combined_of_the_dominant_sources(
    share: float, dropped: list[int]
) -> None:
    scores, cats, srcs = _source_table()
    r = elite_filter(scores, cats, source=srcs, max_source_share=share)
    assert r.dropped.tolist() == dropped
    assert r.reasons == [SOURCE_SHARE] * len(dropped)
    assert set(range(7, 11)) <= set(r.kept.tolist())  # S2 has one source: left alone
    if dropped:
        assert "max share" in r.details[0] and "'S1'" in r.details[0]


def test_category_cap_then_source_share() -> None:
    scores, cats, srcs = _source_table()
    # cap 5 in S1 drops the two lowest combined (A22, B20); S2 keeps 4.
    r = elite_filter(scores, cats, per_category_cap=5, source=srcs, max_source_share=0.5)
    reasons = dict(zip(r.dropped.tolist(), r.reasons, strict=True))
    # after the cap, S1 holds A (40, 30, 24), B (35), C (50): A 3 > 2.5 -> drop A24.
    assert reasons == {3: CATEGORY_CAP, 5: CATEGORY_CAP, 2: SOURCE_SHARE}
    assert r.kept.tolist() == [0, 1, 4, 6, 7, 8, 9, 10]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 60),
    st.floats(0.2, 1.0),
    st.one_of(st.none(), st.integers(1, 12)),
)
def test_balancing_invariants(seed: int, n: int, share: float, cap: int | None) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(0, 25, size=(n, 3)), 0)  # ties are common
    cats = rng.choice(["S1", "S2", "S3"], n)
    srcs = rng.choice(["A", "B", "C"], n, p=[0.6, 0.3, 0.1])
    r = elite_filter(
        scores, cats, per_category_cap=cap, source=srcs, max_source_share=share, min_votes=1
    )
    assert sorted(r.kept.tolist() + r.dropped.tolist()) == list(range(n))
    passed = set(np.flatnonzero((scores >= 10).sum(axis=1) >= 1).tolist())
    assert set(r.kept.tolist()) <= passed
    kept = r.kept
    for c in ("S1", "S2", "S3"):
        members = kept[cats[kept] == c]
        if cap is not None:
            assert members.size <= cap
        counts = {s: int((srcs[members] == s).sum()) for s in ("A", "B", "C")}
        passing = [i for i in passed if cats[i] == c]
        before = {str(srcs[i]) for i in passing}
        # no source ever loses its last pair in a category
        assert {s for s, k in counts.items() if k} == before or cap is not None
        if len([k for k in counts.values() if k]) < 2:
            continue  # one source: nothing to balance against
        for s, k in counts.items():
            # a source over the share only when it is down to its last pair
            assert k <= share * members.size + 1e-9 or k == 1, (c, s, counts)
    # every source-share drop is a pair no kept pair of its source beats from below
    for i, reason in zip(r.dropped.tolist(), r.reasons, strict=True):
        if reason == SOURCE_SHARE:
            same = kept[(cats[kept] == cats[i]) & (srcs[kept] == srcs[i])]
            assert same.size >= 1
            assert all((r.combined[j], -j) >= (r.combined[i], -i) for j in same.tolist())


# ---------------------------------------------------- select_table / N_max
def _elite_table() -> pa.Table:
    scores, cats, srcs = _source_table()
    return pa.table(
        {
            "sample_id": [f"p{i}" for i in range(len(cats))],
            "category": cats.tolist(),
            "source": srcs.tolist(),
            "elite_scores": scores.tolist(),
        }
    )


def test_elite_mode_keeps_what_the_filter_keeps_unless_n_max_is_asked() -> None:
    table = _elite_table()
    selected, summary = select_table(table, n_max=None, mode="elite-filter")
    assert selected.num_rows == table.num_rows == summary["n_selected"]
    assert summary["elite"]["n_max"] is None and "n_max" not in summary["reject_counts"]
    cut, summary = select_table(table, n_max=3, mode="elite-filter")
    assert cut.column("sample_id").to_pylist() == ["p6", "p0", "p7"]  # 50, 40, 40 (tie: index)
    assert summary["reject_counts"] == {"n_max": 8}
    with pytest.raises(ValueError, match="greedy mode needs a benchmark size"):
        select_table(table, n_max=None)


def test_elite_knobs_reach_the_filter_through_select_table() -> None:
    table = _elite_table()
    selected, summary = select_table(
        table,
        n_max=None,
        mode="elite-filter",
        min_votes=1.0,  # the whole panel: the third score is 0 everywhere
        category_names=["S1", "S2"],
    )
    assert selected.num_rows == 0 and summary["reject_counts"] == {"below_threshold": 11}
    selected, summary = select_table(
        table,
        n_max=None,
        mode="elite-filter",
        min_votes=3,
        single_model_exception=24.0,
    )
    assert selected.column("sample_id").to_pylist() == ["p6"]  # 25 reaches the exception
    assert summary["elite"]["n_single_model_exception"] == 1
    assert summary["elite"]["votes_needed"] == 3
    selected, summary = select_table(
        table, n_max=None, mode="elite-filter", per_category_cap=2, max_source_share=0.5
    )
    # S1 cap 2: C (50) and A (40); A 1 of 2 is fine. S2 cap 2: D 40, 30 (one source).
    assert selected.column("sample_id").to_pylist() == ["p6", "p0", "p7", "p8"]
    assert summary["reject_counts"] == {"category_cap": 7}
    with pytest.raises(ValueError, match="missing column.*source"):
        select_table(
            table.drop_columns(["source"]), n_max=None, mode="elite-filter", max_source_share=0.5
        )
    nulls = table.set_column(2, "source", pa.array([None] + ["A"] * 10, type=pa.string()))
    _, summary = select_table(nulls, n_max=None, mode="elite-filter", max_source_share=0.5)
    assert summary["reject_counts"]["missing_source"] == 1


# ------------------------------------------------------------------ config + CLI
def _cli(tmp_path: Path, *args: str, flags: tuple[str, ...] = ()) -> tuple[int, dict]:
    """``vlsafety [args] select --input scored.parquet --mode elite-filter [flags] --json``."""
    path = tmp_path / "scored.parquet"
    pq.write_table(_elite_table(), path)
    base = ["--set", f"lake.root={tmp_path / 'lake'}", "--set", "tracking.enabled=false"]
    cmd = ["select", "--input", str(path), "--mode", "elite-filter", *flags, "--json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([*base, *args, *cmd])
    return rc, (json.loads(buf.getvalue()) if rc == 0 else {})


def test_cli_sets_every_elite_knob(tmp_path: Path) -> None:
    rc, summary = _cli(tmp_path)
    # defaults: 2 votes, no exception, no balancing, no N_max: all 11 pairs kept
    assert rc == 0 and summary["n_selected"] == 11
    assert summary["elite"] | {"filter_reasons": None} == {
        "threshold": 10.0,
        "min_votes": 2,
        "votes_needed": 2,
        "single_model_exception": None,
        "per_category_cap": None,
        "max_source_share": None,
        "n_max": None,
        "n_kept_by_filter": 11,
        "n_single_model_exception": 0,
        "filter_reasons": None,
    }
    rc, summary = _cli(
        tmp_path,
        "--set",
        "select.elite.min_votes=1.0",
        "--set",
        "select.elite.single_model_exception=24",
    )
    assert rc == 0 and summary["n_selected"] == 1 and summary["elite"]["votes_needed"] == 3
    rc, summary = _cli(
        tmp_path,
        "--set",
        "select.elite.balance.per_category_cap=2",
        "--set",
        "select.elite.balance.max_source_share=0.5",
        "--set",
        "select.elite.n_max=3",
    )
    assert rc == 0 and summary["n_selected"] == 3
    assert summary["reject_counts"] == {"category_cap": 7, "n_max": 1}
    rc, summary = _cli(tmp_path, "--set", "select.n_max=1")  # greedy's N_max: not used
    assert rc == 0 and summary["n_selected"] == 11


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("select.elite.min_votes=0", "select.elite.min_votes: a count must be >= 1"),
        ("select.elite.min_votes=1.5", "select.elite.min_votes: a share must be in (0, 1]"),
        ("select.elite.min_votes=many", "select.elite.min_votes: expected"),
        (
            "select.elite.single_model_exception=5",
            "select.elite.single_model_exception: must lie in [select.threshold (10), 25]",
        ),
        ("select.elite.balance.per_category_cap=0", "per_category_cap: must be >= 1"),
        ("select.elite.balance.max_source_share=2", "max_source_share: must be in (0, 1]"),
        ("select.elite.n_max=0", "select.elite.n_max: must be positive"),
        ("select.elite.balance.nope=1", "select.elite.balance.nope: unknown key"),
    ],
)
def test_cli_bad_elite_values_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, fragment: str
) -> None:
    rc, _ = _cli(tmp_path, "--set", override)
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and err.count("\n") == 1


def test_cli_min_votes_above_the_panel_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = _cli(tmp_path, "--set", "select.elite.min_votes=4")
    err = capsys.readouterr().err
    assert rc == 1 and "min_votes: a count must lie in [1, 3]" in err and err.count("\n") == 1


def test_cli_n_max_flag_cuts_elite_mode(tmp_path: Path) -> None:
    rc, summary = _cli(tmp_path, flags=("--n-max", "2"))
    assert rc == 0 and summary["n_selected"] == 2 and summary["elite"]["n_max"] == 2


def test_build_source_is_the_parent_benchmark_or_generated() -> None:
    from vlsafety.pipeline._build import with_benchmark_source

    pool = pa.table({"sample_id": ["a", "b"], "source": ["figstep", "vlguard"]})
    scored = pa.table(
        {
            "candidate_id": ["c1", "c2", "c3", "c4"],
            "parent_sample_id": ["b", "a", "a", "zz"],
            "origin": ["original", "generate", "augment", "original"],
        }
    )
    got = with_benchmark_source(scored, pool).column("source").to_pylist()
    # ELITE counts its own generated pairs as a source ("New" in its Table 1)
    assert got == ["vlguard", "generated", "figstep", None]
