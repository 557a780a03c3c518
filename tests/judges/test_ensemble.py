"""The N_J >= 3 guard ensemble and the (sample, judge, model) probability tensor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from vlsafety.judges import GuardEnsemble, harm_probability_tensor
from vlsafety.models import GuardInput, GuardJudgment, ModelSpec, RefusalGuard, load_guard


class LengthGuard:
    """P(unsafe) from response length; fails on responses containing 'fail'."""

    prompt_version = "len@1"

    def __init__(self, name: str, scale: float) -> None:
        self.spec = ModelSpec(id=name, role="guard", backend="refusal")
        self.scale = scale

    def judge(self, items: Sequence[GuardInput]) -> list[GuardJudgment]:
        return [
            GuardJudgment(None, raw=it.response, parse_error="unparsable")
            if "fail" in it.response
            else GuardJudgment(min(1.0, len(it.response) / self.scale))
            for it in items
        ]


def responses(n_samples: int, n_models: int) -> list[list[GuardInput]]:
    return [
        [GuardInput(f"prompt {s}", "x" * (s + 2 * m + 1)) for m in range(n_models)]
        for s in range(n_samples)
    ]


def test_needs_three_distinct_judges() -> None:
    with pytest.raises(ValueError, match=r"at least 3 guards \(N_J >= 3\), got 2"):
        GuardEnsemble([LengthGuard("a", 10), LengthGuard("b", 10)])
    with pytest.raises(ValueError, match="duplicate judge ids"):
        GuardEnsemble([LengthGuard("a", 10), LengthGuard("a", 10), LengthGuard("c", 10)])


def test_probability_layout_matches_a_loop() -> None:
    guards = [LengthGuard("a", 10), LengthGuard("b", 20), LengthGuard("c", 40)]
    data = responses(4, 3)
    data[2][1] = GuardInput("p", "please fail")
    result = GuardEnsemble(guards).probabilities(data)
    assert result.p.shape == (4, 3, 3) and result.judge_ids == ("a", "b", "c")
    for s in range(4):
        for i, g in enumerate(guards):
            for m in range(3):
                expected = g.judge([data[s][m]])[0].p_unsafe
                got = result.p[s, i, m]
                assert (np.isnan(got) and expected is None) or got == expected
    assert {(s, m) for s, _, m, _ in result.failures} == {(2, 1)}
    assert len(result.failures) == 3 and result.failures[0][3] == "unparsable"
    assert result.judgments[2][0][1].raw == "please fail"


def test_uneven_rows_are_rejected() -> None:
    ens = GuardEnsemble([LengthGuard(n, 10) for n in "abc"])
    with pytest.raises(ValueError, match="one response per model"):
        ens.probabilities([[GuardInput("p", "r")], [GuardInput("p", "r"), GuardInput("p", "r")]])
    assert ens.probabilities([]).p.shape == (0, 3, 0)


def test_real_guards_in_an_ensemble(tiny_specs: dict[str, ModelSpec]) -> None:
    guards = [
        load_guard(tiny_specs[g]) for g in ("tiny-llama-guard", "tiny-classifier", "tiny-refusal")
    ]
    result = GuardEnsemble(guards).probabilities(responses(2, 2))
    assert result.p.shape == (2, 3, 2) and not result.failures
    assert np.all((result.p >= 0) & (result.p <= 1))
    assert isinstance(guards[2], RefusalGuard) and np.all(result.p[:, 2, :] == 1.0)


def test_harm_probability_tensor_pivots_long_records() -> None:
    rows = [
        {"sample_id": s, "judge_id": j, "model_id": m, "p_unsafe": (i + 1) / 100}
        for i, (s, j, m) in enumerate(
            (s, j, m) for s in ("s1", "s2") for j in ("a", "b", "c") for m in ("m1", "m2")
        )
    ]
    rows.append({"sample_id": "other", "judge_id": "a", "model_id": "m1", "p_unsafe": 0.5})
    p = harm_probability_tensor(pd.DataFrame(rows), ["s2", "s1"], ["a", "b", "c"], ["m1", "m2"])
    assert p.shape == (2, 3, 2)
    assert p[1, 0, 0] == 0.01 and p[0, 2, 1] == 0.12
    with pytest.raises(ValueError, match=r"1 \(sample, judge, model\) probabilities missing"):
        harm_probability_tensor(rows[1:], ["s1", "s2"], ["a", "b", "c"], ["m1", "m2"])
    holes = harm_probability_tensor(
        rows[1:], ["s1"], ["a", "b", "c"], ["m1", "m2"], allow_missing=True
    )
    assert np.isnan(holes[0, 0, 0]) and np.isnan(holes).sum() == 1
    with pytest.raises(ValueError, match="duplicate judgment"):
        harm_probability_tensor(rows + rows[:1], ["s1"], ["a"], ["m1"])
    nulls = [dict(rows[0], p_unsafe=None)]
    with pytest.raises(ValueError, match="missing or null"):
        harm_probability_tensor(nulls, ["s1"], ["a"], ["m1"])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        harm_probability_tensor([dict(rows[0], p_unsafe=1.2)], ["s1"], ["a"], ["m1"])
    with pytest.raises(ValueError, match="duplicate sample ids"):
        harm_probability_tensor(rows, ["s1", "s1"], ["a"], ["m1"])
