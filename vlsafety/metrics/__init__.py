"""Benchmark metrics: per-response scores (ELITE, StrongREJECT), attack success rates,
benchmark quality (MAD/MEAN/GAP/DIV), per-category rates, agreement with human labels,
and stability against benchmark size. Pure numpy."""

from vlsafety.metrics._alignment import auc_roc, classification_metrics, kendall_tau, pearson
from vlsafety.metrics._quality import (
    CategoryRates,
    benchmark_quality,
    diversity,
    rates_by_category,
)
from vlsafety.metrics._scores import ELITE_THRESHOLD, asr, e_asr, elite_score, strongreject_score
from vlsafety.metrics._stability import StabilityResult, stability

__all__ = [
    "ELITE_THRESHOLD",
    "CategoryRates",
    "StabilityResult",
    "asr",
    "auc_roc",
    "benchmark_quality",
    "classification_metrics",
    "diversity",
    "e_asr",
    "elite_score",
    "kendall_tau",
    "pearson",
    "rates_by_category",
    "stability",
    "strongreject_score",
]
