"""The judge ensemble of VLSafetyBencher §3.5.2: N_J >= 3 guards, p[sample, judge, model]."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlsafety.models import Guard, GuardInput, GuardJudgment

__all__ = ["EnsembleResult", "GuardEnsemble", "harm_probability_tensor"]

#: VLSafetyBencher: "we employ N_J (N_J >= 3) judges".
MIN_JUDGES = 3


@dataclass(frozen=True)
class EnsembleResult:
    """``p[s, i, j]`` = P(response of model j to sample s is harmful) by judge i (the
    paper's p_{i,j} per sample), NaN where that judgment failed; ``judgments`` holds every
    record in the same layout, ``failures`` the (sample, judge, model, reason) of each NaN."""

    p: np.ndarray
    judge_ids: tuple[str, ...]
    judgments: tuple[tuple[tuple[GuardJudgment, ...], ...], ...]
    failures: tuple[tuple[int, int, int, str], ...]


class GuardEnsemble:
    """N_J guards judging the responses of N_M models to N samples."""

    def __init__(self, guards: Sequence[Guard], *, min_judges: int = MIN_JUDGES) -> None:
        if len(guards) < min_judges:
            raise ValueError(
                f"the judge ensemble needs at least {min_judges} guards (N_J >= {min_judges}), "
                f"got {len(guards)}"
            )
        ids = [g.spec.id for g in guards]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate judge ids in the ensemble: {ids}")
        self.guards = tuple(guards)
        self.judge_ids = tuple(ids)

    def probabilities(self, responses: Sequence[Sequence[GuardInput]]) -> EnsembleResult:
        """Judge ``responses[s][j]`` (sample s, model j) with every guard."""
        n_models = {len(row) for row in responses}
        if len(n_models) > 1:
            raise ValueError(f"every sample needs one response per model; got sizes {n_models}")
        n_s, n_m, n_j = len(responses), (n_models.pop() if n_models else 0), len(self.guards)
        flat = [item for row in responses for item in row]
        p = np.full((n_s, n_j, n_m), np.nan, dtype=np.float64)
        layout: list[list[list[GuardJudgment]]] = [[[] for _ in range(n_j)] for _ in range(n_s)]
        failures: list[tuple[int, int, int, str]] = []
        for i, guard in enumerate(self.guards):
            results = guard.judge(flat) if flat else []
            if len(results) != len(flat):
                raise RuntimeError(
                    f"guard {self.judge_ids[i]} returned {len(results)} judgments for {len(flat)}"
                )
            for k, res in enumerate(results):
                s, j = divmod(k, n_m)
                layout[s][i].append(res)
                if res.p_unsafe is None:
                    failures.append((s, i, j, res.parse_error or res.error or "no probability"))
                else:
                    p[s, i, j] = res.p_unsafe
        return EnsembleResult(
            p=p,
            judge_ids=self.judge_ids,
            judgments=tuple(tuple(tuple(col) for col in row) for row in layout),
            failures=tuple(failures),
        )


def harm_probability_tensor(
    records: Iterable[Mapping[str, Any]] | Any,
    sample_ids: Sequence[str],
    judge_ids: Sequence[str],
    model_ids: Sequence[str],
    *,
    sample_col: str = "sample_id",
    judge_col: str = "judge_id",
    model_col: str = "model_id",
    p_col: str = "p_unsafe",
    allow_missing: bool = False,
) -> np.ndarray:
    """Pivot long judgment records into p shaped (n_samples, n_judges, n_models).

    ``records`` is a pandas DataFrame or an iterable of mappings. A duplicate
    (sample, judge, model) is a ``ValueError``; so is a missing or null one unless
    ``allow_missing`` (then it is NaN, for the caller to handle explicitly).
    """
    if hasattr(records, "to_dict"):
        rows: Iterable[Mapping[str, Any]] = records.to_dict("records")
    else:
        rows = records
    s_index = {s: i for i, s in enumerate(sample_ids)}
    j_index = {j: i for i, j in enumerate(judge_ids)}
    m_index = {m: i for i, m in enumerate(model_ids)}
    for name, ids, index in (
        ("sample", sample_ids, s_index),
        ("judge", judge_ids, j_index),
        ("model", model_ids, m_index),
    ):
        if len(index) != len(ids):
            raise ValueError(f"duplicate {name} ids")
    p = np.full((len(sample_ids), len(judge_ids), len(model_ids)), np.nan, dtype=np.float64)
    seen = np.zeros(p.shape, dtype=bool)
    for row in rows:
        s, j, m = row[sample_col], row[judge_col], row[model_col]
        if s not in s_index or j not in j_index or m not in m_index:
            continue  # records for other samples/judges/models are simply not asked for
        key = (s_index[s], j_index[j], m_index[m])
        if seen[key]:
            raise ValueError(f"duplicate judgment for (sample={s!r}, judge={j!r}, model={m!r})")
        seen[key] = True
        value = row[p_col]
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            fv = float(value)
            if not 0.0 <= fv <= 1.0:
                raise ValueError(f"{p_col}={fv} outside [0, 1] for ({s!r}, {j!r}, {m!r})")
            p[key] = fv
    if not allow_missing:
        holes = np.argwhere(np.isnan(p))
        if len(holes):
            shown = ", ".join(
                f"({sample_ids[a]!r}, {judge_ids[b]!r}, {model_ids[c]!r})" for a, b, c in holes[:5]
            )
            raise ValueError(
                f"{len(holes)} (sample, judge, model) probabilities missing or null, e.g. {shown}"
            )
    return p
