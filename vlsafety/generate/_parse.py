"""Robust parsing of the generator model's JSON answers.

Models wrap JSON in code fences, add a sentence before or after it, or emit several
objects; we try each JSON value found in the text (fenced blocks, the whole text, then
every decodable value starting at ``{`` or ``[``) and keep the first that validates.
Nothing that fails validation is repaired or defaulted: the parser raises ``ValueError``
and the caller asks again, then rejects the attempt with the raw text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from vlsafety.generate._schema import STRATEGY_PATTERNS

__all__ = [
    "DESCRIBE_SCHEMA",
    "Description",
    "GeneratedQuestion",
    "json_values",
    "parse_description",
    "parse_paraphrase",
    "parse_questions",
    "questions_schema",
]

T = TypeVar("T")

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)

#: JSON schema sent with describe requests (backends with structured output use it).
DESCRIBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "harm_explanation": {"type": "string"},
    },
    "required": ["description", "harm_explanation"],
}


def questions_schema(strategy: str) -> dict[str, Any]:
    """JSON schema for a question answer under ``strategy``."""
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": {"type": "string"},
                        "harm_pattern": {
                            "type": "string",
                            "enum": list(STRATEGY_PATTERNS[strategy]),
                        },
                        "interaction": {"type": "string"},
                    },
                    "required": ["question", "harm_pattern", "interaction"],
                },
            }
        },
        "required": ["questions"],
    }


@dataclass(frozen=True, slots=True)
class Description:
    """The generator's image description and its explanation of the harm (§3.3)."""

    description: str
    harm_explanation: str


@dataclass(frozen=True, slots=True)
class GeneratedQuestion:
    """One question written by the generator, with its labels."""

    question: str
    harm_pattern: str
    interaction: str


def json_values(text: str) -> list[Any]:
    """Every JSON value found in ``text``, most likely first."""
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    out: list[Any] = []
    for src in sources:
        src = src.strip()
        try:
            out.append(json.loads(src))
            continue
        except ValueError:
            pass
        for start, ch in enumerate(src):
            if ch not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(src, start)
            except ValueError:
                continue
            out.append(value)
    return out


def _first_valid(text: str, check: Callable[[Any], T], what: str) -> T:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty answer (expected {what})")
    values = json_values(text)
    if not values:
        raise ValueError(f"no JSON found (expected {what})")
    errors: list[str] = []
    for value in values:
        try:
            return check(value)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(f"no valid {what}: {errors[0]}")


def _string(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string")
    return " ".join(value.split())


def _lower_keys(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return {str(k).strip().lower(): v for k, v in value.items()}


def parse_description(text: str) -> Description:
    """``{"description": ..., "harm_explanation": ...}`` → :class:`Description`."""

    def check(value: Any) -> Description:
        obj = _lower_keys(value, "the answer")
        return Description(_string(obj, "description"), _string(obj, "harm_explanation"))

    return _first_valid(text, check, "description object")


def parse_questions(text: str, strategy: str, n: int) -> list[GeneratedQuestion]:
    """``{"questions": [{"question", "harm_pattern", "interaction"}, ...]}`` (or the bare
    list) → at most ``n`` questions. Every item must be complete and carry a harm pattern
    that ``strategy`` allows; one bad item fails the whole answer (it is asked again)."""
    if strategy not in STRATEGY_PATTERNS:
        raise ValueError(f"unknown strategy {strategy!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    allowed = STRATEGY_PATTERNS[strategy]

    def check(value: Any) -> list[GeneratedQuestion]:
        items = (
            value if isinstance(value, list) else _lower_keys(value, "the answer").get("questions")
        )
        if not isinstance(items, list) or not items:
            raise ValueError("'questions' must be a non-empty list")
        out: list[GeneratedQuestion] = []
        for i, item in enumerate(items):
            obj = _lower_keys(item, f"questions[{i}]")
            pattern = _string(obj, "harm_pattern").upper()
            if pattern not in allowed:
                raise ValueError(
                    f"questions[{i}].harm_pattern {pattern!r} is not allowed for {strategy} "
                    f"(allowed: {', '.join(allowed)})"
                )
            out.append(
                GeneratedQuestion(_string(obj, "question"), pattern, _string(obj, "interaction"))
            )
        return out[:n]

    return _first_valid(text, check, f"{strategy} question list")


def parse_paraphrase(text: str) -> str:
    """``{"paraphrase": ...}`` → the rewritten question."""

    def check(value: Any) -> str:
        return _string(_lower_keys(value, "the answer"), "paraphrase")

    return _first_valid(text, check, "paraphrase object")
