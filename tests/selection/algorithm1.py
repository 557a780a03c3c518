"""An independent Algorithm 1 (VLSafetyBencher §3.5.4), written from the paper for the tests.

It shares nothing with the engines in :mod:`vlsafety.selection` — no ``_prepare``, no
quantisation, no score grid, no criteria helper: plain float64 loops over the paper's
definitions, so an error common to every engine cannot hide behind a shared helper.

* ``H(D_S) = -Σ_c p_c log p_c`` and ``ΔH(s, D_S) = (H({s} ∪ D_S) - H(D_S)) / log K`` (Eq. 3);
* ``cos(s, D_S) = 1 - E(s)·E(t) / (‖E(s)‖ ‖E(t)‖)`` for the closest ``t ∈ D_S`` (Eq. 4);
  with ``D_S`` empty the distance term is 1 (the package's documented convention);
* ``C_div = (ΔH + cos) / 2`` (Eq. 5), ``C = α·C_sep + β·C_harm + γ·C_div`` (Eq. 6);
* each step moves the argmax into ``D_S``; exact float64 ties go to the lowest index.

The engines round embeddings to a ``2**-24`` grid after normalising and scores to a
``2**-40`` grid (see ``vlsafety/selection/_criteria.py``), so their scores differ from these
by at most :func:`score_tolerance`. :func:`check_engine` states what agreement means
under that tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Step:
    """One step of the reference: the pick and every remaining candidate's score."""

    pick: int
    scores: dict[int, float]  # remaining candidate -> C(s, D_S)
    delta_h: float
    distance: float


def entropy(counts: list[int]) -> float:
    """``H = -Σ p_c log p_c`` over the categories present (natural log)."""
    total = sum(counts)
    if total == 0:
        return 0.0
    h = 0.0
    for n_c in counts:
        if n_c > 0:
            p = n_c / total
            h -= p * math.log(p)
    return h


def unit_rows(embedding: Any) -> np.ndarray:
    """Rows divided by their float64 norm."""
    e = np.asarray(embedding, dtype=np.float64)
    out = np.empty_like(e)
    for i in range(e.shape[0]):
        out[i] = e[i] / math.sqrt(float(np.dot(e[i], e[i])))
    return out


class Reference:
    """Algorithm 1 state: ``D_S`` (in order), its category counts, each candidate's min
    distance to it. :meth:`scores` and :meth:`add` can replay any sequence of picks."""

    def __init__(
        self,
        sep: Any,
        harm: Any,
        category: Any,
        embedding: Any,
        *,
        n_categories: int,
        weights: tuple[float, float, float],
        initial: Any = (),
    ) -> None:
        self.sep = [float(x) for x in np.asarray(sep, dtype=np.float64)]
        self.harm = [float(x) for x in np.asarray(harm, dtype=np.float64)]
        self.category = [int(c) for c in np.asarray(category)]
        self.unit = unit_rows(embedding)
        self.k = n_categories
        self.alpha, self.beta, self.gamma = (float(w) for w in weights)
        self.n = len(self.sep)
        self.selected: list[int] = []
        self.counts = [0] * n_categories
        self.min_distance = [math.inf] * self.n
        self.remaining = set(range(self.n))
        for i in np.asarray(initial, dtype=np.int64).tolist():
            self.add(int(i))

    def delta_h(self, c: int) -> float:
        after = list(self.counts)
        after[c] += 1
        return (entropy(after) - entropy(self.counts)) / math.log(self.k)

    def distance(self, s: int) -> float:
        return 1.0 if not self.selected else self.min_distance[s]

    def score(self, s: int) -> float:
        c_div = (self.delta_h(self.category[s]) + self.distance(s)) / 2.0
        return self.alpha * self.sep[s] + self.beta * self.harm[s] + self.gamma * c_div

    def scores(self) -> dict[int, float]:
        return {s: self.score(s) for s in sorted(self.remaining)}

    def add(self, t: int) -> None:
        self.selected.append(t)
        self.remaining.discard(t)
        self.counts[self.category[t]] += 1
        for s in range(self.n):
            d = 1.0 - float(np.dot(self.unit[s], self.unit[t]))
            if d < self.min_distance[s]:
                self.min_distance[s] = d

    def step(self) -> Step:
        scores = self.scores()
        best = argmax(scores)
        step = Step(best, scores, self.delta_h(self.category[best]), self.distance(best))
        self.add(best)
        return step


def argmax(scores: dict[int, float]) -> int:
    """The candidate with the largest score; exact ties go to the lowest index."""
    best, best_score = -1, -math.inf
    for s in sorted(scores):
        if scores[s] > best_score:  # strict: the first (lowest) index keeps a tie
            best, best_score = s, scores[s]
    return best


def algorithm1(
    sep: Any,
    harm: Any,
    category: Any,
    embedding: Any,
    *,
    n_categories: int,
    n_max: int,
    weights: tuple[float, float, float],
    initial: Any = (),
) -> list[Step]:
    """Run Algorithm 1 for ``min(n_max, remaining)`` steps; every step's scores are kept."""
    ref = Reference(
        sep, harm, category, embedding, n_categories=n_categories, weights=weights, initial=initial
    )
    return [ref.step() for _ in range(min(n_max, len(ref.remaining)))]


def cosine_tolerance(dim: int) -> float:
    """How far an engine's cosine distance may lie from the exact float64 one.

    The engines normalise (in float32 for float32 input) and round every coordinate to
    ``2**-24``: a unit vector moves by a relative ``(d/2 + 2)·u`` in norm (``u = 2**-24``)
    plus ``sqrt(d)/2·u`` by the rounding, so a cosine moves by at most
    ``(d + 4 + sqrt(d))·u``; we allow twice that.
    """
    return 2.0 * (dim + 4 + math.sqrt(dim)) * 2.0**-24


def score_tolerance(dim: int, gamma: float) -> float:
    """How far an engine's score ``C`` may lie from the exact float64 one: the cosine
    error times ``γ/2``, plus ``2**-40`` for the two terms rounded to the score grid and
    ``1e-12`` for float64 association differences."""
    return 0.5 * gamma * cosine_tolerance(dim) + 2.0**-40 + 1e-12


def engine_tie(ref: Reference, pool: Any, a: int, b: int) -> bool:
    """Whether every engine must score ``a`` and ``b`` identically in ``ref``'s state: the
    same ``α·C_sep + β·C_harm`` (the same float64 expression everywhere), categories with
    equal counts (so equal ``ΔH``), and the same embedding row unless ``D_S`` is empty
    (every distance term is then 1)."""
    return bool(
        ref.alpha * pool.sep[a] + ref.beta * pool.harm[a]
        == ref.alpha * pool.sep[b] + ref.beta * pool.harm[b]
        and ref.counts[pool.category[a]] == ref.counts[pool.category[b]]
        and (not ref.selected or np.array_equal(pool.embedding[a], pool.embedding[b]))
    )


def check_engine(result: Any, pool: Any, kwargs: dict[str, Any]) -> int:
    """Assert that ``result`` is what Algorithm 1 picks, up to the engines' tolerance ``ε``.

    Agreement, at every step, replaying the engine's own picks through the reference:

    1. the pick's exact score is within ``2ε`` of the best remaining score;
    2. no lower-index candidate beats it by more than ``2ε`` (lowest index on ties);
    3. an exact duplicate of the pick with a lower index was picked before it
       (duplicates are picked in index order, on any machine; while ``D_S`` is empty the
       rows do not matter, every distance term is 1);
    4. the reported score, ``ΔH`` and distance equal the exact ones within ``ε``.

    And against an independent run of the reference: the picks are identical up to the
    first step where a candidate other than the best (and not an exact tie every engine
    must also see, :func:`engine_tie`) lies within ``2ε``. Returns how many leading picks were compared that way.
    """
    weights = tuple(kwargs["weights"])
    dim = int(np.asarray(pool.embedding).shape[1])
    eps = score_tolerance(dim, float(weights[2]))
    common = dict(n_categories=kwargs["n_categories"], weights=weights)
    initial = kwargs.get("initial")
    initial = () if initial is None else initial
    replay = Reference(
        pool.sep, pool.harm, pool.category, pool.embedding, initial=initial, **common
    )
    picks = [int(i) for i in result.indices]
    for t, p in enumerate(picks):
        scores = replay.scores()
        assert p in scores, f"step {t}: pick {p} was not selectable"
        best = max(scores.values())
        assert scores[p] >= best - 2 * eps, f"step {t}: pick {p} is {best - scores[p]:.3g} short"
        for s, c in scores.items():
            if s >= p:
                break
            assert c <= scores[p] + 2 * eps, f"step {t}: lower index {s} beats pick {p}"
            assert not engine_tie(replay, pool, s, p), f"step {t}: tie {s} left before {p}"
        assert abs(result.score[t] - scores[p]) <= eps, f"step {t}: score"
        assert abs(result.delta_h[t] - replay.delta_h(pool.category[p])) <= 1e-12
        assert abs(result.min_distance[t] - replay.distance(p)) <= cosine_tolerance(dim)
        replay.add(p)

    ref = Reference(pool.sep, pool.harm, pool.category, pool.embedding, initial=initial, **common)
    compared = 0
    for t in range(len(picks)):
        scores = ref.scores()
        best = argmax(scores)
        top = scores[best]
        near = [
            s
            for s, c in scores.items()
            if s != best
            and c >= top - 2 * eps
            and not (c == top and engine_tie(ref, pool, s, best))
        ]
        if near:
            break
        assert picks[t] == best, f"step {t}: engine picked {picks[t]}, Algorithm 1 {best}"
        ref.add(best)
        compared += 1
    return compared
