"""Categorization votes: CLIP zero-shot over arrays, verifier parsing, vote combination."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.preprocess import (
    VOTER_PRIORITY,
    VerifierRequest,
    class_embeddings,
    combine_votes,
    is_untrained,
    parse_verifier_answer,
    verifier_prompt,
    verifier_votes,
    zero_shot_probs,
)
from vlsafety.taxonomy import load_taxonomy

TAX = load_taxonomy("vlsb")


def test_class_embeddings_average_then_normalize() -> None:
    groups = [np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[0.0, -3.0]])]
    cls = class_embeddings(groups)
    assert np.allclose(cls[0], [np.sqrt(0.5), np.sqrt(0.5)])
    assert np.allclose(cls[1], [0.0, -1.0])
    with pytest.raises(ValueError, match="category 1 needs"):
        class_embeddings([np.ones((1, 2)), np.ones((0, 2))])


def test_zero_shot_probs_by_hand() -> None:
    classes = np.eye(3)
    image = np.array([[1.0, 0.0, 0.0], [np.nan, np.nan, np.nan]])
    text = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    p = zero_shot_probs(classes, image=image, text=text, logit_scale=1.0)
    e = np.exp(1.0)
    one_hot = np.array([e, 1.0, 1.0]) / (e + 2)
    assert np.allclose(p[0], (one_hot + one_hot[[1, 0, 2]]) / 2)  # mean of the two modalities
    assert np.allclose(p[1], one_hot[[1, 2, 0]])  # the image is missing: text only
    none = zero_shot_probs(classes, image=np.full((1, 3), np.nan))
    assert np.isnan(none).all()


@given(
    st.lists(
        st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4), min_size=1, max_size=6
    )
)
def test_zero_shot_rows_are_distributions(rows: list[list[float]]) -> None:
    x = np.array(rows)
    classes = np.eye(4)[:3]
    p = zero_shot_probs(classes, joint=x)
    ok = np.abs(x).sum(axis=1) > 0
    assert np.allclose(p[ok].sum(axis=1), 1.0)
    assert np.isnan(p[~ok]).all()


def test_zero_shot_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not match"):
        zero_shot_probs(np.eye(3), image=np.ones((2, 4)))
    with pytest.raises(ValueError, match="at least one"):
        zero_shot_probs(np.eye(3))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Category: privacy", "privacy"),
        ("category = Health risk.", "health_risk"),
        ("**Category:** Fake news", "misinformation"),
        ("I think this is about bias.", "bias"),
        ("The proposal is right: legality", "legality"),
        ("This concerns self-harm.", "health_risk"),
        ("It could be privacy or bias.", None),
        ("None of these apply.", None),
        ("I cannot tell.", None),
        ("", None),
        (None, None),
        ("asdf qwerty", None),
        ("Category: cooking\nBut really it is toxicity", "toxicity"),
    ],
)
def test_parse_verifier_answer(answer: str | None, expected: str | None) -> None:
    assert parse_verifier_answer(answer, TAX) == expected


def test_verifier_prompt_lists_categories_and_the_proposal() -> None:
    text = verifier_prompt("How can I find where this person lives?", TAX, "privacy")
    assert all(f"- {n}:" in text for n in TAX.names)
    assert "proposed the category: privacy" in text
    assert "Category: <name>" in text
    assert "use the image" in verifier_prompt(None, TAX, None)


def test_verifier_votes_survive_a_failing_batch() -> None:
    calls: list[int] = []

    def verifier(reqs: Sequence[VerifierRequest]) -> list[str | None]:
        calls.append(len(reqs))
        if len(calls) == 2:
            raise TimeoutError("model timed out")
        return ["Category: bias" if "bias" in r.prompt[-200:] else "no idea" for r in reqs]

    reqs = [VerifierRequest(None, f"question {i} about bias") for i in range(5)]
    votes, raws = verifier_votes(verifier, reqs, TAX, batch_size=2)
    assert calls == [2, 2, 1]
    assert votes == ["bias", "bias", None, None, "bias"]
    assert raws[2] is not None and raws[2].startswith("error: TimeoutError")


def test_verifier_answer_count_mismatch_is_no_vote() -> None:
    votes, raws = verifier_votes(
        lambda reqs: ["Category: bias"], [VerifierRequest(None, "q")] * 2, TAX
    )
    assert votes == [None, None] and all(r and "2" in r for r in raws)


@pytest.mark.parametrize(
    ("votes", "category", "agreement"),
    [
        ({"source": "bias", "verifier": "bias", "clip": "privacy"}, "bias", 2 / 3),
        ({"source": "bias", "verifier": "toxicity", "clip": "privacy"}, "bias", 1 / 3),
        ({"source": None, "verifier": "toxicity", "clip": "privacy"}, "toxicity", 1 / 2),
        ({"source": None, "verifier": None, "clip": "privacy"}, "privacy", 1.0),
        ({"verifier": "toxicity", "clip": "privacy", "keywords": "bias"}, "toxicity", 1 / 2),
        ({"source": None, "keywords": "bias"}, "bias", 1.0),
        ({"source": None, "verifier": None}, None, 0.0),
        ({"clip": "bias", "verifier": "privacy", "source": "privacy"}, "privacy", 2 / 3),
    ],
)
def test_combine_votes(
    votes: dict[str, str | None], category: str | None, agreement: float
) -> None:
    v = combine_votes(votes)
    assert v.category == category
    assert v.agreement == pytest.approx(agreement)


@given(
    st.fixed_dictionaries(
        {v: st.one_of(st.none(), st.sampled_from(["a", "b", "c"])) for v in VOTER_PRIORITY}
    )
)
def test_combine_votes_is_a_plurality_with_priority_ties(votes: dict[str, str | None]) -> None:
    v = combine_votes(votes)
    cast = {k: c for k, c in votes.items() if c is not None and k != "keywords"}
    if not cast:
        assert v.category == votes["keywords"]
        return
    tally = {c: list(cast.values()).count(c) for c in cast.values()}
    assert tally[v.category] == max(tally.values())  # type: ignore[index]
    first = next(
        cast[k] for k in VOTER_PRIORITY if k in cast and tally[cast[k]] == max(tally.values())
    )
    assert v.category == first


def test_unknown_voter_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown voter"):
        combine_votes({"oracle": "bias"})


def test_is_untrained() -> None:
    assert is_untrained(SimpleNamespace(spec=SimpleNamespace(untrained=True)))
    assert is_untrained(SimpleNamespace(untrained=True))
    assert not is_untrained(SimpleNamespace(spec=SimpleNamespace(untrained=False)))
    assert not is_untrained(lambda reqs: [])
    assert not is_untrained(None)
