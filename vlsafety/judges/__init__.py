"""Judges: the ELITE and StrongREJECT rubric evaluators, and the N_J-guard ensemble.

Guards themselves (Llama-Guard-style, classifier, GuardReasoner-style, refusal phrases)
are a model role and live in :mod:`vlsafety.models`.
"""

from vlsafety.judges._ensemble import EnsembleResult, GuardEnsemble, harm_probability_tensor
from vlsafety.judges._judge import (
    DEFAULT_MIN_TOKEN_MASS,
    FALLBACK_MODE,
    JudgeMode,
    RubricJudge,
    RubricJudgment,
    expected_answer,
    expected_rubric_score,
    resolve_judge_mode,
    rubric_score,
    token_mass,
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
    "DEFAULT_MIN_TOKEN_MASS",
    "ELITE_RUBRIC",
    "FALLBACK_MODE",
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
    "expected_rubric_score",
    "harm_probability_tensor",
    "parse_rubric",
    "resolve_judge_mode",
    "rubric_schema",
    "rubric_score",
    "token_mass",
]
