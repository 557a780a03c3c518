"""Selection agent (VLSafetyBencher §3.5) and the ELITE filter (ELITE §3.4).

* criteria: :func:`separability` (Eq. 1), :func:`harmfulness` (Eq. 2), the diversity
  parts :func:`delta_entropy` (Eq. 3) and :func:`cosine_distance` (Eq. 4);
* Algorithm 1: :func:`greedy_select` (exact and fast; numpy or torch/CUDA, the engine for
  ``device="auto"`` from :func:`auto_device`) and :func:`reference_greedy_select` (the
  straightforward loop it is tested against);
* panel figures (p_h, C_harm, harmful flags) from judge probabilities with an explicit
  missing-cell policy: :func:`panel_scores`;
* update mode: :func:`update_benchmark`; ELITE mode: :func:`elite_filter`;
* analyses: :func:`weight_sweep`, :func:`split_panel`, :func:`holdout_quality`;
* the CLI adapter :func:`select_table`.
"""

from vlsafety.selection._criteria import (
    c_div_in_order,
    category_entropy,
    cosine_distance,
    delta_entropy,
    harmfulness,
    quantize_embeddings,
    separability,
)
from vlsafety.selection._elite import (
    BELOW_THRESHOLD,
    CATEGORY_CAP,
    SOURCE_SHARE,
    FilterResult,
    elite_filter,
    votes_needed,
)
from vlsafety.selection._greedy import (
    DEFAULT_WEIGHTS,
    SelectionResult,
    auto_device,
    greedy_select,
    reference_greedy_select,
)
from vlsafety.selection._panel import MISSING_POLICIES, MissingPolicy, PanelScores, panel_scores
from vlsafety.selection._sweep import holdout_quality, split_panel, weight_sweep
from vlsafety.selection._table import OUTPUT_COLUMNS, DatasetColumn, RowSubset, select_table
from vlsafety.selection._update import UpdateResult, benchmark_scores, update_benchmark

__all__ = [
    "BELOW_THRESHOLD",
    "CATEGORY_CAP",
    "DEFAULT_WEIGHTS",
    "MISSING_POLICIES",
    "OUTPUT_COLUMNS",
    "SOURCE_SHARE",
    "FilterResult",
    "MissingPolicy",
    "PanelScores",
    "SelectionResult",
    "UpdateResult",
    "auto_device",
    "benchmark_scores",
    "c_div_in_order",
    "category_entropy",
    "DatasetColumn",
    "RowSubset",
    "cosine_distance",
    "delta_entropy",
    "elite_filter",
    "greedy_select",
    "harmfulness",
    "holdout_quality",
    "panel_scores",
    "quantize_embeddings",
    "reference_greedy_select",
    "select_table",
    "separability",
    "split_panel",
    "update_benchmark",
    "votes_needed",
    "weight_sweep",
]
