"""Judges: the ELITE and StrongREJECT rubric evaluators, and the N_J-guard ensemble.

Guards themselves (Llama-Guard-style, classifier, GuardReasoner-style, refusal phrases)
are a model role and live in :mod:`vlsafety.models`.
"""

from vlsafety.judges._ensemble import EnsembleResult, GuardEnsemble, harm_probability_tensor
from vlsafety.judges._judge import (
    JudgeMode,
    RubricJudge,
    RubricJudgment,
    expected_answer,
    rubric_score,
)
from vlsafety.judges._rubric import (
    ELITE_RUBRIC,
    STRONGREJECT_RUBRIC,
    Criterion,
    Rubric,
    RubricParseError,
    parse_rubric,
    rubric_schema,
)

__all__ = [
    "ELITE_RUBRIC",
    "STRONGREJECT_RUBRIC",
    "Criterion",
    "EnsembleResult",
    "GuardEnsemble",
    "JudgeMode",
    "Rubric",
    "RubricJudge",
    "RubricJudgment",
    "RubricParseError",
    "expected_answer",
    "harm_probability_tensor",
    "parse_rubric",
    "rubric_schema",
    "rubric_score",
]
