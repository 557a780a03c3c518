"""The jobs a safety team runs: build, update, evaluate, judges, export, report."""

from vlsafety.pipeline._build import BUILD_STAGES, BuildResult, Models, build, load_models
from vlsafety.pipeline._evaluate import (
    LEADERBOARD_KEYS,
    SOURCE_PREFIX,
    evaluate,
    leaderboard_frame,
)
from vlsafety.pipeline._export import export_benchmark
from vlsafety.pipeline._judges import judge_agreement, read_labels
from vlsafety.pipeline._public import PUBLIC_COLUMNS, ingest_benchmark, is_multiple_choice
from vlsafety.pipeline._report import report_data, resolve_ref, write_report
from vlsafety.pipeline._runner import CountsMismatchError, StageResult, run_stage
from vlsafety.pipeline._update import BENCHMARK_COLUMNS, update

__all__ = [
    "BENCHMARK_COLUMNS",
    "BUILD_STAGES",
    "PUBLIC_COLUMNS",
    "SOURCE_PREFIX",
    "LEADERBOARD_KEYS",
    "BuildResult",
    "CountsMismatchError",
    "Models",
    "StageResult",
    "build",
    "evaluate",
    "export_benchmark",
    "judge_agreement",
    "ingest_benchmark",
    "is_multiple_choice",
    "leaderboard_frame",
    "load_models",
    "read_labels",
    "report_data",
    "resolve_ref",
    "run_stage",
    "update",
    "write_report",
]
