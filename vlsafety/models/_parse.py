"""Ask, parse, ask again: the retry loop every text-answer judge shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from vlsafety.models._types import ChatModel, ChatRequest, SamplingParams

__all__ = ["ParsedAnswer", "generate_parsed"]

T = TypeVar("T")

#: A retry at temperature 0 would repeat the same unparsable answer; retries sample.
RETRY_TEMPERATURE = 0.7


@dataclass(frozen=True)
class ParsedAnswer(Generic[T]):
    """The parsed value, or why there is none. ``raw`` is the last answer text."""

    value: T | None
    raw: str | None
    parse_error: str | None = None
    error: str | None = None
    attempts: int = 1


def generate_parsed(
    chat: ChatModel,
    requests: Sequence[ChatRequest],
    parse: Callable[[str], T],
    *,
    retries: int,
    retry_temperature: float = RETRY_TEMPERATURE,
) -> list[ParsedAnswer[T]]:
    """Generate, then ``parse`` each answer (``parse`` raises ``ValueError`` when it cannot).

    Unparsable answers are asked again up to ``retries`` times, each retry with a new seed
    and at least ``retry_temperature``. What still fails is returned with ``parse_error``
    and the raw text: never an exception, never a default value. A model-call error
    (timeout, HTTP failure) is returned as ``error`` and not retried here (the backend
    already retried transient failures).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out: list[ParsedAnswer[T] | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    current = list(requests)
    for attempt in range(1, retries + 2):
        if not pending:
            break
        results = chat.generate([current[i] for i in pending])
        still: list[int] = []
        for i, res in zip(pending, results, strict=True):
            if res.error is not None or res.text is None or res.refused:
                # A refusal has no content to parse: a failure here, not retried.
                error = res.error or ("the model refused" if res.refused else "no text")
                out[i] = ParsedAnswer(None, res.text, error=error, attempts=attempt)
                continue
            try:
                value = parse(res.text)
            except ValueError as exc:
                out[i] = ParsedAnswer(None, res.text, parse_error=str(exc), attempts=attempt)
                still.append(i)
                continue
            out[i] = ParsedAnswer(value, res.text, attempts=attempt)
        pending = still
        for i in pending:
            req = current[i]
            sp = req.sampling or SamplingParams.from_spec(chat.spec)
            seed = None if sp.seed is None else sp.seed + attempt
            temp = max(sp.temperature, retry_temperature)
            current[i] = dataclasses.replace(
                req, sampling=dataclasses.replace(sp, seed=seed, temperature=temp)
            )
    return [a if a is not None else ParsedAnswer(None, None, error="not asked") for a in out]
