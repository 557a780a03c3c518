"""Benchmark metrics: per-response scores (ELITE, StrongREJECT), attack success rates,
benchmark quality (MAD/MEAN/GAP/DIV), per-category rates, agreement with human labels,
judge agreement (Fleiss' / Cohen's κ) and calibration, and stability against benchmark
size. Pure numpy."""

from vlsafety.metrics._agreement import (
    cohen_kappa,
    fleiss_kappa,
    majority_vote,
    pairwise_cohen_kappa,
    reliability_bins,
    split_share,
)
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
    "cohen_kappa",
    "diversity",
    "e_asr",
    "elite_score",
    "fleiss_kappa",
    "kendall_tau",
    "majority_vote",
    "pairwise_cohen_kappa",
    "pearson",
    "rates_by_category",
    "reliability_bins",
    "split_share",
    "stability",
    "strongreject_score",
]
