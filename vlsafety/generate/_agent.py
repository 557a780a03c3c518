"""The generation agent for a batch of pool samples (vlsafetybencher.txt §3.3, elite.txt §3.3).

For each pool sample the agent works through *units*, each one an independent
generation attempt with its own id, seed and outcome:

* a cross-modal strategy (``modality_dependence``, ``modality_complementarity``,
  ``modality_conflict``) — for samples with an image. With a generator model the model
  first writes a description of the image and an explanation of its harm, then, with
  few-shot prompting, ``questions_per_strategy`` questions with their harm pattern and
  interaction. Without a (trusted) model, the template backend fills question patterns;
* an ELITE method (``flowchart``, ``blueprint``, ``role_play``, ``fake_news``) — a
  rendered image for the sample's key phrase paired with its instruction;
* ``original`` — the pool sample itself, kept as a candidate.

A unit ends with one or more candidates or with one reject row (stage ``generate``) whose
``source_ref`` is the unit's attempt id (:func:`candidate_id_of` with ``index=None``), so
a rerun skips units that are done either way. An untrained model (``spec.untrained``)
never has its free text parsed into candidates: the template backend serves instead and
the candidates record ``fallback_from``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlsafety.generate._keyphrase import humanize
from vlsafety.generate._options import GenerateOptions
from vlsafety.generate._parse import (
    DESCRIBE_SCHEMA,
    Description,
    GeneratedQuestion,
    parse_description,
    parse_questions,
    questions_schema,
)
from vlsafety.generate._prompts import combined_version, generation_data, generation_prompt
from vlsafety.generate._render import encode_png
from vlsafety.generate._schema import (
    ELITE_METHODS,
    MODALITY_STRATEGIES,
    Candidate,
    PoolSample,
    candidate_id_of,
    derive_seed,
)
from vlsafety.generate._templates import (
    MissingKeyPhraseError,
    elite_pair,
    elite_version,
    sample_key_phrase,
    template_questions,
    templates_version,
)
from vlsafety.ingest._records import Reject, image_id_of
from vlsafety.models import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ModelSpec,
    ParsedAnswer,
    SamplingParams,
    canonical_json,
    generate_parsed,
)

__all__ = [
    "GENERATE_REASONS",
    "NO_UNIT",
    "STAGE",
    "GenerationAgent",
    "GenerationResult",
    "generate_for_sample",
]

log = logging.getLogger(__name__)

STAGE = "generate"
#: The pseudo-unit of a sample to which no strategy or method applies.
NO_UNIT = "none"

#: Reason codes the generation stage writes to ``rejects``.
GENERATE_REASONS: dict[str, str] = {
    "unparsable_generation": "the generator's answer was not the requested JSON after all "
    "retries (detail holds the raw text)",
    "generation_error": "the generator model call failed (timeout, backend error)",
    "missing_image": "the pool sample's image_id is not in the images table",
    "no_key_phrase": "the sample has no key phrase, category or subcategory to fill patterns",
    "no_applicable_strategy": "no configured strategy or method applies to the sample",
}

#: Raw model text kept in a reject's detail (the rest is cut, with a marker).
MAX_RAW_CHARS = 4000

_warned_untrained: set[str] = set()


def _warn_untrained(model_id: str) -> None:
    if model_id not in _warned_untrained:
        _warned_untrained.add(model_id)
        log.warning(
            "generator %r is marked untrained: its free text is never parsed into candidates; "
            "the template backend generates instead",
            model_id,
        )


def _clip(text: str | None) -> str:
    if text is None:
        return "<no text>"
    if len(text) <= MAX_RAW_CHARS:
        return text
    return f"{text[:MAX_RAW_CHARS]}...[{len(text) - MAX_RAW_CHARS} more chars cut]"


@dataclass
class GenerationResult:
    """What one pool sample produced: candidates, rejects, rendered images (PNG bytes by
    image id), and the outcome of each unit (``out`` or ``rejected``)."""

    sample: PoolSample
    candidates: list[Candidate] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``out`` when the sample produced at least one candidate, else ``rejected``."""
        return "out" if self.candidates else "rejected"


class GenerationAgent:
    """Generates candidates for pool samples with a chat model or the template backend.

    Args:
        options: the generation options.
        generator: the generator chat model, or None for the template backend. A model
            whose spec says ``untrained`` is not used (warned once).
        spec: the generator's spec when no model is passed: the agent then only plans
            (computes unit ids) as the driver does before the Spark tasks run.
    """

    def __init__(
        self,
        options: GenerateOptions,
        generator: ChatModel | None = None,
        *,
        spec: ModelSpec | None = None,
    ) -> None:
        self.options = options
        self.chat: ChatModel | None = None
        #: The trusted generator's spec (None: the template backend generates).
        self.spec: ModelSpec | None = None
        self.fallback_from: str | None = None
        if spec is None and generator is not None:
            spec = generator.spec
        if spec is not None:
            if spec.untrained:
                _warn_untrained(spec.id)
                self.fallback_from = spec.id
            else:
                # generator may be None: a planner that only computes ids on the driver.
                self.spec, self.chat = spec, generator
        if self.spec is not None:
            self.generator_name = self.spec.id
            self.generator_key = f"{self.spec.id}@{self.spec.fingerprint()[:16]}"
            self.modality_version = combined_version(
                generation_prompt("describe").version,
                generation_prompt("questions").version,
                generation_data("strategies").version,
            )
        else:
            self.generator_name = self.generator_key = "template"
            self.modality_version = templates_version()
        self.elite_version = elite_version()

    # ------------------------------------------------------------------ identity
    @property
    def backend(self) -> str:
        return "model" if self.spec is not None else "template"

    def identity(self, unit: str) -> tuple[str, str, str | None]:
        """(method key, generator key, prompt version) of a unit: what its ids hash. The
        method key holds every option that changes the unit's output, so changing one
        makes new candidates instead of reusing rows made under other settings."""
        o = self.options
        if unit in MODALITY_STRATEGIES:
            method: dict[str, Any] = {
                "name": self.backend,
                "n": o.questions_per_strategy,
                "key_phrase_words": o.key_phrase_words,
            }
            if self.spec is not None:
                method.update(max_new_tokens=o.max_new_tokens, temperature=o.temperature)
            return canonical_json(method), self.generator_key, self.modality_version
        if unit in ELITE_METHODS:
            method = {"name": unit, "size": o.render_size, "key_phrase_words": o.key_phrase_words}
            return canonical_json(method), "template", self.elite_version
        if unit in ("original", NO_UNIT):
            return unit, "pool", None
        raise ValueError(f"unknown generation unit {unit!r}")

    def candidate_id(self, sample_id: str, unit: str, index: int | None) -> str:
        method, generator, version = self.identity(unit)
        strategy = unit if unit != NO_UNIT else "original"
        return candidate_id_of(
            sample_id, strategy, method, generator, version, self.options.seed, index
        )

    def attempt_id(self, sample_id: str, unit: str) -> str:
        """The id of a unit's generation attempt (``source_ref`` of its rejects)."""
        return self.candidate_id(sample_id, unit, None)

    def unit_seed(self, sample_id: str, unit: str) -> int:
        return derive_seed(self.options.seed, sample_id, unit)

    def units(self, sample: PoolSample) -> list[str]:
        """The units that apply to ``sample`` (``[NO_UNIT]`` when none does)."""
        o = self.options
        out: list[str] = []
        if sample.image_id is not None:
            out.extend(o.strategies)
        out.extend(m for m in o.methods if o.method_applies(m, sample.category, sample.subcategory))
        if o.include_original and sample.text and sample.text.strip():
            out.append("original")
        return out or [NO_UNIT]

    def done_marker(self, sample_id: str, unit: str) -> tuple[str, str]:
        """(first candidate id, attempt id): a unit is done when the first is in
        ``candidates`` or the second is the ``source_ref`` of a ``generate`` reject."""
        return self.candidate_id(sample_id, unit, 0), self.attempt_id(sample_id, unit)

    # --------------------------------------------------------------- building
    def _candidate(
        self,
        sample: PoolSample,
        unit: str,
        index: int,
        *,
        text: str,
        harm_pattern: str | None,
        interaction: str,
        method: Mapping[str, Any],
        image_id: str | None,
        key_phrase: str | None,
    ) -> Candidate:
        _, _, version = self.identity(unit)
        if unit in MODALITY_STRATEGIES:
            generator, origin = self.generator_name, "generate"
        elif unit in ELITE_METHODS:
            generator, origin = "template", "generate"
        else:
            generator, origin = "pool", "original"
        return Candidate(
            candidate_id=self.candidate_id(sample.sample_id, unit, index),
            parent_sample_id=sample.sample_id,
            image_id=image_id,
            text=text,
            strategy=unit,
            harm_pattern=harm_pattern,
            interaction=interaction,
            method=canonical_json(dict(method)),
            generator=generator,
            prompt_version=version,
            origin=origin,
            seed=self.unit_seed(sample.sample_id, unit),
            category=sample.category,
            subcategory=sample.subcategory,
            key_phrase=key_phrase,
        )

    def _reject(self, result: GenerationResult, unit: str, reason: str, detail: str) -> None:
        if reason not in GENERATE_REASONS:  # pragma: no cover - programming error
            raise ValueError(f"unknown generate reject reason {reason!r}")
        s = result.sample
        result.rejects.append(
            Reject(
                stage=STAGE,
                reason=reason,
                detail=f"{unit}: {detail}",
                source=s.source,
                source_ref=self.attempt_id(s.sample_id, unit),
                sample_id=s.sample_id,
            )
        )
        result.units[unit] = "rejected"

    def _add(self, result: GenerationResult, unit: str, candidates: list[Candidate]) -> None:
        result.candidates.extend(candidates)
        result.units[unit] = "out"

    def _original(self, result: GenerationResult) -> None:
        s = result.sample
        assert s.text is not None  # units() only plans originals for samples with a text
        cand = self._candidate(
            s,
            "original",
            0,
            text=s.text,
            harm_pattern=None,
            interaction="The pool sample as collected.",
            method={"name": "original", "source": s.source},
            image_id=s.image_id,
            key_phrase=None,
        )
        self._add(result, "original", [cand])

    def _elite(self, result: GenerationResult, method: str) -> None:
        s = result.sample
        rng = random.Random(self.unit_seed(s.sample_id, method))
        topic = sample_key_phrase(s, self.options.key_phrase_words)
        try:
            pair = elite_pair(s, method, rng, size=self.options.render_size, topic=topic)
        except MissingKeyPhraseError as exc:
            self._reject(result, method, "no_key_phrase", str(exc))
            return
        assert topic is not None
        data = encode_png(pair.image)
        image_id = image_id_of(data)
        result.images[image_id] = data
        method_json = {"name": method, "key_phrase_source": topic.source, **pair.details}
        cand = self._candidate(
            s,
            method,
            0,
            text=pair.text,
            harm_pattern=pair.harm_pattern,
            interaction=pair.interaction,
            method=method_json,
            image_id=image_id,
            key_phrase=topic.text,
        )
        self._add(result, method, [cand])

    def _template(self, result: GenerationResult, strategy: str) -> None:
        s = result.sample
        rng = random.Random(self.unit_seed(s.sample_id, strategy))
        topic = sample_key_phrase(s, self.options.key_phrase_words)
        try:
            questions = template_questions(
                s, strategy, rng, self.options.questions_per_strategy, topic=topic
            )
        except MissingKeyPhraseError as exc:
            self._reject(result, strategy, "no_key_phrase", str(exc))
            return
        cands = []
        for i, q in enumerate(questions):
            method: dict[str, Any] = {"name": "template", "pattern": q.pattern}
            if q.uses_topic and topic is not None:
                method["key_phrase_source"] = topic.source
            if self.fallback_from is not None:
                method["fallback_from"] = self.fallback_from
            cands.append(
                self._candidate(
                    s,
                    strategy,
                    i,
                    text=q.text,
                    harm_pattern=q.harm_pattern,
                    interaction=q.interaction,
                    method=method,
                    image_id=s.image_id,
                    key_phrase=topic.text if q.uses_topic and topic is not None else None,
                )
            )
        self._add(result, strategy, cands)

    # ------------------------------------------------------------- the model
    def _sampling(self, seed: int) -> SamplingParams:
        assert self.spec is not None
        overrides: dict[str, Any] = {"seed": seed % 2**31}
        if self.options.max_new_tokens is not None:
            overrides["max_tokens"] = self.options.max_new_tokens
        if self.options.temperature is not None:
            overrides["temperature"] = self.options.temperature
        return SamplingParams.from_spec(self.spec, **overrides)

    def describe_request(self, sample: PoolSample, image: bytes) -> ChatRequest:
        """The request asking for the image description and harm explanation."""
        prompt = generation_prompt("describe").render(
            category=humanize(sample.category) if sample.category else "uncategorised",
            subcategory=humanize(sample.subcategory) if sample.subcategory else "none",
            text=" ".join((sample.text or "(none)").split()),
        )
        return ChatRequest(
            messages=(ChatMessage("user", prompt),),
            image=image,
            sampling=self._sampling(derive_seed(self.options.seed, sample.sample_id, "describe")),
            response_schema=DESCRIBE_SCHEMA,
        )

    def questions_request(
        self, sample: PoolSample, strategy: str, image: bytes, described: Description
    ) -> ChatRequest:
        """The few-shot request for ``strategy``'s questions about the described image."""
        spec = generation_data("strategies").data[strategy]
        examples = "\n".join(
            f"Image: {ex['image']}\n"
            + canonical_json(
                {
                    "question": ex["question"],
                    "harm_pattern": ex["harm_pattern"],
                    "interaction": ex["interaction"],
                }
            )
            for ex in spec["examples"]
        )
        prompt = generation_prompt("questions").render(
            category=humanize(sample.category) if sample.category else "uncategorised",
            subcategory=humanize(sample.subcategory) if sample.subcategory else "none",
            description=described.description,
            harm_explanation=described.harm_explanation,
            n=str(self.options.questions_per_strategy),
            strategy_title=spec["title"],
            strategy_definition=" ".join(spec["definition"].split()),
            allowed_patterns=", ".join(spec["allowed_patterns"]),
            examples=examples,
        )
        return ChatRequest(
            messages=(ChatMessage("user", prompt),),
            image=image,
            sampling=self._sampling(self.unit_seed(sample.sample_id, strategy)),
            response_schema=questions_schema(strategy),
        )

    def _failed(
        self, result: GenerationResult, unit: str, step: str, ans: ParsedAnswer[Any]
    ) -> None:
        if ans.error is not None:
            self._reject(result, unit, "generation_error", f"{step}: {ans.error}")
        else:
            self._reject(
                result,
                unit,
                "unparsable_generation",
                f"{step}: {ans.parse_error} (after {ans.attempts} attempt(s)); "
                f"raw: {_clip(ans.raw)}",
            )

    def _run_model(
        self,
        work: Sequence[tuple[GenerationResult, str]],
        images: Mapping[str, bytes],
    ) -> None:
        chat = self.chat
        if chat is None:
            raise RuntimeError("this GenerationAgent only plans: no generator model was given")
        retries = self.options.parse_retries
        by_sample: dict[str, tuple[GenerationResult, list[str]]] = {}
        for result, unit in work:
            by_sample.setdefault(result.sample.sample_id, (result, []))[1].append(unit)
        ready: list[tuple[GenerationResult, list[str], bytes]] = []
        for result, units in by_sample.values():
            image_id = result.sample.image_id
            data = images.get(image_id) if image_id is not None else None
            if data is None:
                for unit in units:
                    self._reject(result, unit, "missing_image", f"image {image_id} not found")
            else:
                ready.append((result, units, data))
        if not ready:
            return
        described = generate_parsed(
            chat,
            [self.describe_request(r.sample, data) for r, _, data in ready],
            parse_description,
            retries=retries,
        )
        asks: dict[str, list[tuple[GenerationResult, bytes, Description]]] = {}
        descriptions: dict[str, ParsedAnswer[Description]] = {}
        for (result, units, data), ans in zip(ready, described, strict=True):
            descriptions[result.sample.sample_id] = ans
            for unit in units:
                if ans.value is None:
                    self._failed(result, unit, "image description", ans)
                else:
                    asks.setdefault(unit, []).append((result, data, ans.value))
        n = self.options.questions_per_strategy
        for strategy, items in asks.items():

            def parse(text: str, strategy: str = strategy) -> list[GeneratedQuestion]:
                return parse_questions(text, strategy, n)

            answers = generate_parsed(
                chat,
                [self.questions_request(r.sample, strategy, d, desc) for r, d, desc in items],
                parse,
                retries=retries,
            )
            for (result, _, desc), qans in zip(items, answers, strict=True):
                if qans.value is None:
                    self._failed(result, strategy, "questions", qans)
                    continue
                first = descriptions[result.sample.sample_id].attempts
                method = {
                    "name": "model",
                    "description": desc.description,
                    "harm_explanation": desc.harm_explanation,
                    "attempts": [first, qans.attempts],
                }
                cands = [
                    self._candidate(
                        result.sample,
                        strategy,
                        i,
                        text=q.question,
                        harm_pattern=q.harm_pattern,
                        interaction=q.interaction,
                        method=method,
                        image_id=result.sample.image_id,
                        key_phrase=None,
                    )
                    for i, q in enumerate(qans.value)
                ]
                self._add(result, strategy, cands)

    # ------------------------------------------------------------------- run
    def run(
        self,
        samples: Sequence[PoolSample],
        images: Mapping[str, bytes] | None = None,
        pending: Mapping[str, Sequence[str]] | None = None,
    ) -> list[GenerationResult]:
        """Generate for ``samples``; ``images`` maps image ids to bytes (needed by the
        model backend), ``pending`` limits each sample to the units still to do (all
        applicable units otherwise). One result per sample, in order."""
        results = [GenerationResult(s) for s in samples]
        model_work: list[tuple[GenerationResult, str]] = []
        for result in results:
            s = result.sample
            todo = list(pending[s.sample_id]) if pending is not None else self.units(s)
            for unit in todo:
                if unit == NO_UNIT:
                    self._reject(
                        result,
                        unit,
                        "no_applicable_strategy",
                        f"none of strategies {self.options.strategies} (need an image) or "
                        f"methods {self.options.methods} (scoped by category) applies, and "
                        "no original is kept",
                    )
                elif unit == "original":
                    self._original(result)
                elif unit in ELITE_METHODS:
                    self._elite(result, unit)
                elif unit in MODALITY_STRATEGIES:
                    if self.spec is None:
                        self._template(result, unit)
                    else:
                        model_work.append((result, unit))
                else:
                    raise ValueError(f"unknown generation unit {unit!r}")
        if model_work:
            self._run_model(model_work, images or {})
        return results


def generate_for_sample(
    sample: PoolSample,
    generator: ChatModel | None = None,
    *,
    options: GenerateOptions | None = None,
    image: bytes | None = None,
) -> GenerationResult:
    """Candidates, rejects and rendered images for one pool sample (every applicable
    unit). ``image`` is the sample's image bytes, needed when a model generates."""
    agent = GenerationAgent(options or GenerateOptions(), generator)
    images = {sample.image_id: image} if sample.image_id is not None and image else {}
    return agent.run([sample], images)[0]
