"""The augmentation agent for a batch of parent candidates (vlsafetybencher.txt §3.4).

Each parent candidate gets ``text_variants`` text variants and, when it has an image,
``image_variants`` image variants. A variant (a *unit*, ``text:<i>`` or ``image:<i>``)
draws ``ops_per_variant`` distinct applicable operations and a seed for each from a
random generator seeded by :func:`~vlsafety.generate.derive_seed` over the run seed,
the parent id and the unit, so every row is reproducible on its own and
:func:`~vlsafety.augment.replay` regenerates it exactly. A paraphrase, when drawn, runs
first, so a paraphraser model reads the parent's own wording (all paraphrase requests of
a batch go to the model together). The parent's strategy, harm pattern and interaction
are kept: augmentation changes wording or pixels, not the modality interaction.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlsafety.augment._ops import OPS, OpRecord, apply_op, op_applies
from vlsafety.augment._options import AugmentOptions
from vlsafety.augment._synonyms import SYNONYMS_VERSION
from vlsafety.generate._parse import parse_paraphrase
from vlsafety.generate._prompts import generation_prompt
from vlsafety.generate._render import encode_png
from vlsafety.generate._schema import Candidate, derive_seed
from vlsafety.ingest._records import Reject, image_id_of
from vlsafety.models import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ImageDecodeError,
    ModelSpec,
    SamplingParams,
    canonical_json,
    generate_parsed,
    to_pil,
)

__all__ = ["AUGMENT_REASONS", "AUGMENT_VERSION", "STAGE", "AugmentAgent", "AugmentResult"]

log = logging.getLogger(__name__)

STAGE = "augment"
#: Bump when an operation's behaviour changes: it enters every augmented candidate id.
AUGMENT_VERSION = "1"

#: Reason codes the augmentation stage writes to ``rejects``.
AUGMENT_REASONS: dict[str, str] = {
    "missing_image": "the parent's image_id is not in the images table",
    "image_decode_error": "the parent's image bytes cannot be decoded",
    "unparsable_generation": "the paraphraser's answer was not the requested JSON after all "
    "retries (detail holds the raw text)",
    "generation_error": "the paraphraser model call failed (timeout, backend error)",
    "op_failed": "an augmentation operation raised on this input (detail names it)",
}

_MAX_RAW_CHARS = 4000
_warned_untrained: set[str] = set()


@dataclass
class AugmentResult:
    """What one parent produced: augmented candidates, rejects, new images (PNG bytes by
    id) and the outcome of each unit (``out`` or ``rejected``)."""

    parent: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


class AugmentAgent:
    """Mutates candidates' text and images; paraphrases with a chat model when given a
    trusted one (``spec.untrained`` models are replaced by the rule-based paraphrase,
    warned once). ``spec`` alone (no model) makes a planner that only computes ids."""

    def __init__(
        self,
        options: AugmentOptions,
        paraphraser: ChatModel | None = None,
        *,
        spec: ModelSpec | None = None,
    ) -> None:
        self.options = options
        self.chat: ChatModel | None = None
        self.spec: ModelSpec | None = None
        self.fallback_from: str | None = None
        if spec is None and paraphraser is not None:
            spec = paraphraser.spec
        if spec is not None:
            if spec.untrained:
                if spec.id not in _warned_untrained:
                    _warned_untrained.add(spec.id)
                    log.warning(
                        "paraphraser %r is marked untrained: the rule-based paraphrase is used",
                        spec.id,
                    )
                self.fallback_from = spec.id
            else:
                self.spec, self.chat = spec, paraphraser
        self.paraphrase_version = generation_prompt("paraphrase").version
        paraphraser_key = f"{self.spec.id}@{self.spec.fingerprint()[:16]}" if self.spec else "rules"
        text_config = {
            "ops": options.text_ops,
            "ops_per_variant": options.ops_per_variant,
            "synonym_rate": options.synonym_rate,
            "char_rate": options.char_rate,
            "synonyms": SYNONYMS_VERSION,
            "paraphraser": paraphraser_key if "paraphrase" in options.text_ops else None,
            "paraphrase_prompt": self.paraphrase_version if self.spec else None,
        }
        image_config = {
            "ops": options.image_ops,
            "ops_per_variant": options.ops_per_variant,
            "settings": {op: options.image_settings(op) for op in options.image_ops},
        }
        self._config = {
            "text": hashlib.sha256(canonical_json(text_config).encode()).hexdigest()[:16],
            "image": hashlib.sha256(canonical_json(image_config).encode()).hexdigest()[:16],
        }

    # ------------------------------------------------------------------ identity
    def units(self, parent: Candidate) -> list[str]:
        """The variants planned for ``parent`` (a modality with no applicable op, or an
        image variant of a text-only parent, is not planned)."""
        o = self.options
        out: list[str] = []
        if any(op_applies(op, parent.strategy) for op in o.text_ops):
            out.extend(f"text:{i}" for i in range(o.text_variants))
        if parent.image_id is not None and any(
            op_applies(op, parent.strategy) for op in o.image_ops
        ):
            out.extend(f"image:{i}" for i in range(o.image_variants))
        return out

    @staticmethod
    def _modality(unit: str) -> str:
        modality, _, index = unit.partition(":")
        if modality not in ("text", "image") or not index.isdigit():
            raise ValueError(f"bad augmentation unit {unit!r}")
        return modality

    def candidate_id(self, parent_id: str, unit: str) -> str:
        """sha256 over the parent, the unit, the run seed, the operation set and its
        settings (``AUGMENT_VERSION``, synonym table, paraphraser and prompt version)."""
        modality = self._modality(unit)
        payload = canonical_json(
            ["augment", AUGMENT_VERSION, parent_id, unit, self.options.seed, self._config[modality]]
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def variant_seed(self, parent_id: str, unit: str) -> int:
        return derive_seed(self.options.seed, "augment", parent_id, unit)

    def _settings(self, op: str, parent: Candidate) -> dict[str, Any]:
        o = self.options
        if OPS[op].modality == "image":
            return dict(o.image_settings(op))
        if op == "synonym":
            return {"rate": o.synonym_rate}
        if op == "char_noise":
            return {"rate": o.char_rate}
        if op == "persona":
            return {"category": parent.category}
        if op == "paraphrase" and self.spec is not None:
            return {"model": self.spec.id, "prompt_version": self.paraphrase_version}
        return {}

    def plan(self, parent: Candidate, unit: str) -> list[tuple[str, int, dict[str, Any]]]:
        """The (op, seed, settings) chain of a unit, drawn from its variant seed."""
        modality = self._modality(unit)
        names = self.options.text_ops if modality == "text" else self.options.image_ops
        applicable = [n for n in names if op_applies(n, parent.strategy)]
        if not applicable:
            raise ValueError(f"no {modality} op applies to a {parent.strategy} candidate")
        rng = random.Random(self.variant_seed(parent.candidate_id, unit))
        chosen = rng.sample(applicable, min(self.options.ops_per_variant, len(applicable)))
        chosen.sort(key=lambda n: n != "paraphrase")  # stable: paraphrase first, rest in order
        return [(n, rng.getrandbits(63), self._settings(n, parent)) for n in chosen]

    # ------------------------------------------------------------------- run
    def _reject(self, result: AugmentResult, unit: str, reason: str, detail: str) -> None:
        if reason not in AUGMENT_REASONS:  # pragma: no cover - programming error
            raise ValueError(f"unknown augment reject reason {reason!r}")
        p = result.parent
        result.rejects.append(
            Reject(
                stage=STAGE,
                reason=reason,
                detail=f"{unit} of candidate {p.candidate_id}: {detail}",
                source=None,
                source_ref=self.candidate_id(p.candidate_id, unit),
                sample_id=p.parent_sample_id,
            )
        )
        result.units[unit] = "rejected"

    def _paraphrase_request(self, text: str, seed: int) -> ChatRequest:
        assert self.spec is not None
        overrides: dict[str, Any] = {"seed": seed % 2**31}
        if self.options.max_new_tokens is not None:
            overrides["max_tokens"] = self.options.max_new_tokens
        prompt = generation_prompt("paraphrase").render(text=text)
        return ChatRequest(
            messages=(ChatMessage("user", prompt),),
            sampling=SamplingParams.from_spec(self.spec, **overrides),
            response_schema={
                "type": "object",
                "properties": {"paraphrase": {"type": "string"}},
                "required": ["paraphrase"],
            },
        )

    def _model_paraphrases(
        self, jobs: list[tuple[AugmentResult, str, int]]
    ) -> dict[tuple[str, str], dict[str, Any] | None]:
        """Recorded details (text, attempts) per (parent id, unit); None after a reject."""
        if self.chat is None:
            raise RuntimeError("this AugmentAgent only plans: no paraphraser model was given")
        answers = generate_parsed(
            self.chat,
            [self._paraphrase_request(r.parent.text, seed) for r, _, seed in jobs],
            parse_paraphrase,
            retries=self.options.parse_retries,
        )
        out: dict[tuple[str, str], dict[str, Any] | None] = {}
        for (result, unit, _), ans in zip(jobs, answers, strict=True):
            key = (result.parent.candidate_id, unit)
            if ans.value is not None:
                out[key] = {"text": ans.value, "attempts": ans.attempts}
                continue
            out[key] = None
            if ans.error is not None:
                self._reject(result, unit, "generation_error", f"paraphrase: {ans.error}")
            else:
                raw = ans.raw if ans.raw is not None else "<no text>"
                if len(raw) > _MAX_RAW_CHARS:
                    raw = f"{raw[:_MAX_RAW_CHARS]}...[{len(raw) - _MAX_RAW_CHARS} more chars cut]"
                self._reject(
                    result,
                    unit,
                    "unparsable_generation",
                    f"paraphrase: {ans.parse_error} (after {ans.attempts} attempt(s)); raw: {raw}",
                )
        return out

    @staticmethod
    def _decode(image_id: str, images: Mapping[str, bytes]) -> Image.Image | tuple[str, str]:
        """The decoded image, or a (reject reason, detail) pair."""
        data = images.get(image_id)
        if data is None:
            return "missing_image", f"image {image_id} not found"
        try:
            return to_pil(data)
        except ImageDecodeError as exc:
            return "image_decode_error", str(exc)

    def _augmented(
        self,
        parent: Candidate,
        unit: str,
        text: str,
        image_id: str | None,
        records: list[OpRecord],
    ) -> Candidate:
        return Candidate(
            candidate_id=self.candidate_id(parent.candidate_id, unit),
            parent_sample_id=parent.parent_sample_id,
            parent_candidate_id=parent.candidate_id,
            image_id=image_id,
            text=text,
            category=parent.category,
            subcategory=parent.subcategory,
            strategy=parent.strategy,
            harm_pattern=parent.harm_pattern,
            interaction=parent.interaction,
            key_phrase=parent.key_phrase,
            method=parent.method,
            ops=canonical_json([r.to_dict() for r in records]),
            generator=parent.generator,
            prompt_version=parent.prompt_version,
            origin="augment",
            seed=self.variant_seed(parent.candidate_id, unit),
        )

    def run(
        self,
        parents: Sequence[Candidate],
        images: Mapping[str, bytes] | None = None,
        pending: Mapping[str, Sequence[str]] | None = None,
    ) -> list[AugmentResult]:
        """Augment ``parents``; ``images`` maps image ids to bytes (needed for image
        variants), ``pending`` limits each parent to the units still to do."""
        images = images or {}
        results = [AugmentResult(p) for p in parents]
        plans: list[tuple[AugmentResult, str, list[tuple[str, int, dict[str, Any]]]]] = []
        for result in results:
            p = result.parent
            todo = list(pending[p.candidate_id]) if pending is not None else self.units(p)
            for unit in todo:
                plans.append((result, unit, self.plan(p, unit)))
        recorded: dict[tuple[str, str], dict[str, Any] | None] = {}
        jobs = [
            (r, unit, chain[0][1])
            for r, unit, chain in plans
            if chain[0][0] == "paraphrase" and "model" in chain[0][2]
        ]
        if jobs:
            recorded = self._model_paraphrases(jobs)
        # Plans are grouped by parent: keep only the current parent's decoded image, shared
        # by its variants (every op returns a new image, none mutates its input).
        current: tuple[str | None, Image.Image | tuple[str, str]] = (None, ("", ""))
        for result, unit, chain in plans:
            p = result.parent
            key = (p.candidate_id, unit)
            if key in recorded and recorded[key] is None:
                continue  # rejected by the paraphraser
            value: Any = p.text
            if self._modality(unit) == "image":
                assert p.image_id is not None  # units() plans image variants only with one
                if current[0] != p.image_id:
                    current = (p.image_id, self._decode(p.image_id, images))
                decoded = current[1]
                if isinstance(decoded, tuple):
                    self._reject(result, unit, *decoded)
                    continue
                value = decoded
            records: list[OpRecord] = []
            try:
                for name, seed, settings in chain:
                    value, details = apply_op(name, value, seed, settings, recorded.get(key))
                    if name == "paraphrase" and self.fallback_from is not None:
                        details = {**details, "fallback_from": self.fallback_from}
                    records.append(OpRecord(name, seed, settings, details))
            except ValueError as exc:
                self._reject(result, unit, "op_failed", f"{name}: {exc}")
                continue
            if isinstance(value, Image.Image):
                data = encode_png(value)
                image_id = image_id_of(data)
                result.images[image_id] = data
                cand = self._augmented(p, unit, p.text, image_id, records)
            else:
                cand = self._augmented(p, unit, value, p.image_id, records)
            result.candidates.append(cand)
            result.units[unit] = "out"
        return results
