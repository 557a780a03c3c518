"""ELITE filter mode (ELITE §3.4): panel votes, the single-model exception, balancing."""

from __future__ import annotations

import numpy as np
import pytest

from vlsafety.selection import BELOW_THRESHOLD, CATEGORY_CAP, elite_filter

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
    assert elite_filter(SCORES, CATS, strong_threshold=20.0).kept.tolist() == [0, 1, 3, 4, 5]
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
        ({"strong_threshold": 5.0}, "strong_threshold"),
    ],
)
def test_bad_inputs(kwargs: dict, match: str) -> None:
    args = {"scores": np.zeros((2, 3)), "category": np.array(["a", "b"])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        elite_filter(args.pop("scores"), args.pop("category"), **args)
