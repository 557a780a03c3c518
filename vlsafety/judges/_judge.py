"""Rubric judges: the ELITE evaluator and the StrongREJECT evaluator over any chat model.

Two modes:

* ``json`` — the judge answers all questions as one JSON object (schema-constrained where
  the backend supports it: OpenAI ``json_schema``, vLLM structured outputs), parsed by
  :func:`parse_rubric`; unparsable answers are asked again, then recorded as parse errors.
* ``logprobs`` — for local models: each question is asked on its own, and its answer is
  the expected value of the allowed answer tokens ("0"/"1", "1".."5", "0".."5") under the
  model's next-token distribution, renormalised over those tokens (as StrongREJECT's
  fine-tuned evaluator reads its 1-5 score). Always yields a value, also from tiny models.

Scores use ``vlsafety.metrics``: ELITE ``elite_score(refused, specific, convincing,
toxicity)`` (Eq. 2, 0-25) and StrongREJECT ``strongreject_score`` (Eq. 1, 0-1).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vlsafety.judges._rubric import (
    ELITE_RUBRIC,
    Rubric,
    parse_rubric,
    rubric_schema,
)
from vlsafety.models import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    GuardInput,
    SamplingParams,
    canonical_json,
    generate_parsed,
)
from vlsafety.prompts import load_prompt

__all__ = ["JudgeMode", "RubricJudge", "RubricJudgment", "expected_answer", "rubric_score"]

JudgeMode = Literal["auto", "json", "logprobs"]

_IMAGE_NOTE = " (sent together with the attached image)"


@dataclass(frozen=True)
class RubricJudgment:
    """One rubric judgment. Values and ``score`` are None exactly when ``parse_error`` or
    ``error`` says why; ``raw`` keeps the judge's answer (JSON of the answer-token
    distributions in ``logprobs`` mode). ``toxicity`` is None for StrongREJECT."""

    refused: float | None
    toxicity: float | None
    convincing: float | None
    specific: float | None
    score: float | None
    raw: str | None
    parse_error: str | None
    error: str | None
    attempts: int
    mode: str
    prompt_version: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _metric(name: str) -> Callable[..., float]:
    # vlsafety.metrics is another module's; importing it lazily keeps judges importable
    # (and parsers testable) on their own.
    module = importlib.import_module("vlsafety.metrics")
    fn: Callable[..., float] = getattr(module, name)
    return fn


def rubric_score(rubric: Rubric, values: dict[str, float]) -> float:
    """The rubric's score from its answers (``vlsafety.metrics``)."""
    fn = _metric(rubric.score_metric)
    if "toxicity" in rubric.names:
        return float(
            fn(values["refused"], values["specific"], values["convincing"], values["toxicity"])
        )
    return float(fn(values["refused"], values["specific"], values["convincing"]))


def expected_answer(
    logprobs: dict[str, float], values: Sequence[int]
) -> tuple[float, dict[int, float]]:
    """Expected value of an integer answer from the log-probabilities of its tokens,
    renormalised over the allowed values; ``ValueError`` when none has a finite one."""
    lps = [logprobs[str(v)] for v in values]
    finite = [lp for lp in lps if math.isfinite(lp)]
    if not finite:
        raise ValueError("no allowed answer token has a finite log-probability")
    top = max(finite)
    weights = [math.exp(lp - top) if math.isfinite(lp) else 0.0 for lp in lps]
    total = sum(weights)
    probs = {v: w / total for v, w in zip(values, weights, strict=True)}
    value = sum(v * p for v, p in probs.items())
    # Rounding can push a certain answer a hair past its bound; the scale is closed.
    return min(max(value, float(values[0])), float(values[-1])), probs


class RubricJudge:
    """Judge (image, prompt, response) with a rubric on a chat model. See module docstring.

    Args:
        model: the judge model (any ChatModel backend).
        rubric: :data:`ELITE_RUBRIC` (default) or :data:`STRONGREJECT_RUBRIC`.
        mode: ``json``, ``logprobs``, or ``auto`` (``logprobs`` on ``hf``, else ``json``).
        retries: re-asks for an unparsable ``json`` answer (default ``spec.parse_retries``).
    """

    def __init__(
        self,
        model: ChatModel,
        rubric: Rubric = ELITE_RUBRIC,
        *,
        mode: JudgeMode = "auto",
        retries: int | None = None,
    ) -> None:
        if mode not in ("auto", "json", "logprobs"):
            raise ValueError(f"judge mode must be auto, json or logprobs, got {mode!r}")
        self.model = model
        self.rubric = rubric
        self.mode: str = (
            mode if mode != "auto" else ("logprobs" if model.spec.backend == "hf" else "json")
        )
        self.retries = model.spec.parse_retries if retries is None else retries
        self._json_template = load_prompt("rubric_json")
        self._question_template = load_prompt("rubric_question")
        template = self._json_template if self.mode == "json" else self._question_template
        digest = hashlib.sha256(
            (template.text + canonical_json(rubric.criteria)).encode()
        ).hexdigest()
        self.prompt_version = f"{rubric.name}-{self.mode}@{digest[:12]}"

    # ------------------------------------------------------------- requests
    def json_request(self, item: GuardInput) -> ChatRequest:
        r = self.rubric
        criteria = "\n".join(
            f"- {c.name} ({c.low} to {c.high}): {c.description}" for c in r.criteria
        )
        keys = ", ".join(f'"{n}"' for n in r.names)
        example = json.dumps(
            {"reasoning": "...", **{c.name: c.low for c in r.criteria}}, ensure_ascii=False
        )
        text = self._json_template.render(
            prompt=item.prompt,
            response=item.response,
            image_note=_IMAGE_NOTE if item.image is not None else "",
            criteria=criteria,
            keys=keys,
            example=example,
        )
        return ChatRequest(
            messages=(ChatMessage("user", text),),
            image=item.image,
            sampling=SamplingParams.from_spec(self.model.spec),
            response_schema=rubric_schema(r),
        )

    def question_request(self, item: GuardInput, criterion: str) -> ChatRequest:
        c = self.rubric.criterion(criterion)
        text = self._question_template.render(
            prompt=item.prompt,
            response=item.response,
            image_note=_IMAGE_NOTE if item.image is not None else "",
            criterion=f"{c.name}. {c.description}",
            low=str(c.low),
            high=str(c.high),
        )
        return ChatRequest(
            messages=(ChatMessage("user", text),),
            image=item.image,
            sampling=SamplingParams(temperature=0.0, max_tokens=1, seed=self.model.spec.seed),
        )

    # ---------------------------------------------------------------- judge
    def _record(
        self,
        values: dict[str, float] | None,
        raw: str | None,
        *,
        parse_error: str | None = None,
        error: str | None = None,
        attempts: int = 1,
    ) -> RubricJudgment:
        score = rubric_score(self.rubric, values) if values is not None else None
        v = values or {}
        return RubricJudgment(
            refused=v.get("refused"),
            toxicity=v.get("toxicity"),
            convincing=v.get("convincing"),
            specific=v.get("specific"),
            score=score,
            raw=raw,
            parse_error=parse_error,
            error=error,
            attempts=attempts,
            mode=self.mode,
            prompt_version=self.prompt_version,
        )

    def _judge_json(self, items: Sequence[GuardInput]) -> list[RubricJudgment]:
        answers = generate_parsed(
            self.model,
            [self.json_request(it) for it in items],
            lambda text: parse_rubric(text, self.rubric),
            retries=self.retries,
        )
        out = []
        for a in answers:
            values = {k: float(v) for k, v in a.value.items()} if a.value is not None else None
            out.append(
                self._record(
                    values, a.raw, parse_error=a.parse_error, error=a.error, attempts=a.attempts
                )
            )
        return out

    def _judge_logprobs(self, items: Sequence[GuardInput]) -> list[RubricJudgment]:
        names = self.rubric.names
        requests = [self.question_request(it, n) for it in items for n in names]
        # One call per distinct answer range; the backend batches within it.
        scores: list[Any] = [None] * len(requests)
        for c in self.rubric.criteria:
            idx = [i for i in range(len(requests)) if names[i % len(names)] == c.name]
            got = self.model.next_token_logprobs(
                [requests[i] for i in idx], [str(v) for v in c.values]
            )
            for i, s in zip(idx, got, strict=True):
                scores[i] = s
        out = []
        for k in range(len(items)):
            values: dict[str, float] = {}
            dists: dict[str, Any] = {}
            problem: tuple[str, str] | None = None
            for j, c in enumerate(self.rubric.criteria):
                s = scores[k * len(names) + j]
                if s.error is not None or s.logprobs is None:
                    problem = ("error", f"{c.name}: {s.error or 'no scores'}")
                    break
                try:
                    value, probs = expected_answer(dict(s.logprobs), c.values)
                except ValueError as exc:
                    problem = ("parse_error", f"{c.name}: {exc}")
                    break
                values[c.name] = value
                dists[c.name] = {str(v): round(p, 6) for v, p in probs.items()}
            raw = json.dumps(dists, sort_keys=True)
            if problem is None:
                out.append(self._record(values, raw))
            elif problem[0] == "error":
                out.append(self._record(None, raw, error=problem[1]))
            else:
                out.append(self._record(None, raw, parse_error=problem[1]))
        return out

    def judge(self, items: Sequence[GuardInput]) -> list[RubricJudgment]:
        """One :class:`RubricJudgment` per item, in order; never raises for a bad answer."""
        if not items:
            return []
        if self.mode == "json":
            return self._judge_json(items)
        return self._judge_logprobs(items)
