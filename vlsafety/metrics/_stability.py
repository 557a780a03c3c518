"""Stability of a benchmark's verdicts against its size (VLSafetyBencher §6.3, Fig. 7).

For each candidate size N the benchmark is resampled ``n_boot`` times (N samples drawn
with replacement — a bootstrap of "a benchmark of size N from this population") and for
each resample every model's ASR and the Kendall τ-b between the resampled and full-set
model rankings are computed. The per-model ASR spread and the τ distribution show where
the verdicts stop moving, which is the evidence for choosing ``N_max``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vlsafety.metrics._alignment import kendall_tau_rows
from vlsafety.metrics._validate import as_binary

__all__ = ["StabilityResult", "stability"]

_GATHER_BUDGET = 4_000_000  # elements gathered per bootstrap chunk (bounds memory)


@dataclass(frozen=True)
class StabilityResult:
    """Per size: each model's bootstrap ASR (mean and CI) and the ranking agreement τ.

    Arrays are indexed ``[size]`` or ``[size, model]``. ``tau_undefined[s]`` counts the
    resamples whose model ASRs were all tied (τ-b undefined; left out of the τ figures).
    """

    sizes: NDArray[np.int64]
    model_ids: list[Any]
    asr_full: NDArray[np.float64]
    asr_mean: NDArray[np.float64]
    asr_ci_low: NDArray[np.float64]
    asr_ci_high: NDArray[np.float64]
    tau_mean: NDArray[np.float64]
    tau_ci_low: NDArray[np.float64]
    tau_ci_high: NDArray[np.float64]
    tau_undefined: NDArray[np.int64]
    n_boot: int
    ci: float
    seed: int | None

    def to_records(self) -> list[dict[str, Any]]:
        """One row per (size, model), JSON-friendly, for tables and MLflow artifacts."""
        rows = []
        for s, size in enumerate(self.sizes.tolist()):
            for m, model in enumerate(self.model_ids):
                rows.append(
                    {
                        "size": size,
                        "model": model,
                        "asr_full": float(self.asr_full[m]),
                        "asr_mean": float(self.asr_mean[s, m]),
                        "asr_ci_low": float(self.asr_ci_low[s, m]),
                        "asr_ci_high": float(self.asr_ci_high[s, m]),
                        "tau_mean": float(self.tau_mean[s]),
                        "tau_ci_low": float(self.tau_ci_low[s]),
                        "tau_ci_high": float(self.tau_ci_high[s]),
                    }
                )
        return rows


def stability(
    harmful: ArrayLike,
    sizes: Sequence[int],
    *,
    n_boot: int = 200,
    seed: int | None = None,
    ci: float = 0.95,
    model_ids: Sequence[Any] | None = None,
) -> StabilityResult:
    """Bootstrap per-model ASR and ranking stability for each benchmark size.

    Args:
        harmful: ``(n_samples, n_models)`` 0/1 flags: model ``m``'s response to sample
            ``s`` was judged harmful.
        sizes: benchmark sizes N to test (each >= 1; may exceed n_samples).
        n_boot: resamples per size.
        seed: seed of the resampling RNG (``numpy.random.default_rng``).
        ci: confidence level of the percentile intervals, in (0, 1).
        model_ids: names for the models (default ``0..n_models-1``).

    Raises:
        ValueError: bad shapes or values, fewer than 2 models, no sizes, or full-set ASRs
            that are all tied (the reference ranking would be undefined).
    """
    flags = as_binary("harmful", harmful, ndim=2)
    n, m = flags.shape
    if n == 0:
        raise ValueError("harmful: no samples")
    if m < 2:
        raise ValueError(f"harmful: need at least 2 models to rank, got {m}")
    size_arr = np.asarray(list(sizes))
    if size_arr.ndim != 1 or size_arr.size == 0 or not np.issubdtype(size_arr.dtype, np.integer):
        raise ValueError(f"sizes: expected a non-empty list of ints, got {list(sizes)!r}")
    if size_arr.min() < 1:
        raise ValueError(f"sizes: each must be >= 1, got {size_arr.tolist()}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ValueError(f"n_boot: expected an int >= 2, got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci: must lie in (0, 1), got {ci!r}")
    ids = list(range(m)) if model_ids is None else list(model_ids)
    if len(ids) != m:
        raise ValueError(f"model_ids: {len(ids)} names for {m} models")
    full = flags.mean(axis=0)
    if np.all(full == full[0]):
        raise ValueError("harmful: all models have the same full-set ASR; no ranking to compare")

    rng = np.random.default_rng(seed)
    flags32 = flags.astype(np.float32)  # exact for 0/1; sums below 2**24 stay exact
    lo_q, hi_q = 100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0
    s_count = size_arr.size
    asr_mean = np.empty((s_count, m))
    asr_lo = np.empty((s_count, m))
    asr_hi = np.empty((s_count, m))
    tau_mean = np.full(s_count, np.nan)
    tau_lo = np.full(s_count, np.nan)
    tau_hi = np.full(s_count, np.nan)
    undefined = np.zeros(s_count, dtype=np.int64)
    for s, size in enumerate(size_arr.tolist()):
        boot = np.empty((n_boot, m))
        chunk = max(1, _GATHER_BUDGET // (size * m))
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            idx = rng.integers(0, n, size=(stop - start, size))
            boot[start:stop] = flags32[idx].sum(axis=1, dtype=np.float64) / size
        asr_mean[s] = boot.mean(axis=0)
        asr_lo[s], asr_hi[s] = np.percentile(boot, [lo_q, hi_q], axis=0)
        tau = kendall_tau_rows(boot, full)
        ok = ~np.isnan(tau)
        undefined[s] = int((~ok).sum())
        if ok.any():
            tau_mean[s] = float(tau[ok].mean())
            tau_lo[s], tau_hi[s] = np.percentile(tau[ok], [lo_q, hi_q])
    return StabilityResult(
        sizes=size_arr.astype(np.int64),
        model_ids=ids,
        asr_full=full,
        asr_mean=asr_mean,
        asr_ci_low=asr_lo,
        asr_ci_high=asr_hi,
        tau_mean=tau_mean,
        tau_ci_low=tau_lo,
        tau_ci_high=tau_hi,
        tau_undefined=undefined,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
