"""Contamination check: how much of a benchmark copies the public benchmarks.

A new benchmark is worth little if its samples are near-copies of public benchmarks that
models were trained or tuned on. :func:`run_contamination` compares every sample of a
benchmark version with every record of the ingested public benchmarks — exact image
hash, perceptual-hash distance, text MinHash Jaccard and joint-embedding cosine, on
executors with preprocess's dedup machinery (band-key joins, k-means blocking; no
all-pairs pass) — and writes the best match per sample, source and kind to the
``contamination`` table. ``select.exclude_contaminated`` leaves such samples out of a build.
"""

from vlsafety.contamination._match import KINDS, LEVELS, ContaminationOptions
from vlsafety.contamination._stage import (
    CONTAMINATION_SCHEMA,
    REASON,
    NoSourcesError,
    check_contamination,
    contaminated_samples,
    format_summary,
    ingested_sources,
    latest_check,
    resolve_against,
    run_contamination,
    summary_metrics,
)

__all__ = [
    "CONTAMINATION_SCHEMA",
    "KINDS",
    "LEVELS",
    "REASON",
    "ContaminationOptions",
    "NoSourcesError",
    "check_contamination",
    "contaminated_samples",
    "format_summary",
    "ingested_sources",
    "latest_check",
    "resolve_against",
    "run_contamination",
    "summary_metrics",
]
