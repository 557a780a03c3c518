"""The operation registry, operation records and exact replay.

An augmented row's ``ops`` column is a JSON list of records, applied in order::

    [{"op": "synonym", "seed": 812..., "settings": {"rate": 0.3}, "details": {...}}, ...]

``seed`` and ``settings`` determine the operation's output; ``details`` says what was
drawn (for people). :func:`replay` regenerates a row's exact text and image bytes from
its parent and this list. The one exception to "seed and settings determine the output"
is a model paraphrase (``settings.model`` set): model output is recorded in
``details.text`` and replay uses the record instead of calling the model again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from vlsafety.augment import _image, _text
from vlsafety.generate._render import encode_png
from vlsafety.generate._schema import ELITE_METHODS
from vlsafety.models import to_pil

__all__ = [
    "OPS",
    "TYPOGRAPHIC_STRATEGIES",
    "OpRecord",
    "OpSpec",
    "Replayed",
    "apply_op",
    "op_applies",
    "parse_ops",
    "replay",
]

#: Strategies whose image carries text (a mirror flip would garble it).
TYPOGRAPHIC_STRATEGIES: tuple[str, ...] = ELITE_METHODS


@dataclass(frozen=True)
class OpSpec:
    """A registered operation: its modality and its function ``fn(x, rng, **settings)``."""

    name: str
    modality: Literal["text", "image"]
    fn: Callable[..., tuple[Any, dict[str, Any]]]


OPS: dict[str, OpSpec] = {
    "synonym": OpSpec("synonym", "text", _text.synonym_substitute),
    "paraphrase": OpSpec("paraphrase", "text", _text.paraphrase_template),
    "role_play": OpSpec("role_play", "text", _text.role_play_frame),
    "context": OpSpec("context", "text", _text.context_frame),
    "persona": OpSpec("persona", "text", _text.persona_rewrite),
    "past_tense": OpSpec("past_tense", "text", _text.past_tense),
    "char_noise": OpSpec("char_noise", "text", _text.char_perturb),
    "crop": OpSpec("crop", "image", _image.crop),
    "blur": OpSpec("blur", "image", _image.blur),
    "noise": OpSpec("noise", "image", _image.add_noise),
    "rotate": OpSpec("rotate", "image", _image.rotate),
    "flip": OpSpec("flip", "image", _image.hflip),
    "perspective": OpSpec("perspective", "image", _image.perspective),
    "jpeg": OpSpec("jpeg", "image", _image.jpeg_reencode),
    "insert": OpSpec("insert", "image", _image.insert_marks),
}


def op_applies(name: str, strategy: str) -> bool:
    """Whether op ``name`` may mutate a candidate of ``strategy`` without hindering its
    semantics (no mirror flip of images that carry text)."""
    return not (name == "flip" and strategy in TYPOGRAPHIC_STRATEGIES)


@dataclass(frozen=True)
class OpRecord:
    """One applied operation, as stored in the ``ops`` column."""

    op: str
    seed: int
    settings: Mapping[str, Any]
    details: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "seed": self.seed,
            "settings": dict(self.settings),
            "details": dict(self.details),
        }


def apply_op(
    name: str,
    value: Any,
    seed: int,
    settings: Mapping[str, Any],
    recorded: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Apply op ``name`` to ``value`` (a text or an RGB PIL image) with ``seed`` and
    ``settings``. A model paraphrase (``settings["model"]``) returns the recorded
    ``recorded["text"]``: model output cannot be re-derived from a seed."""
    spec = OPS.get(name)
    if spec is None:
        raise ValueError(f"unknown augmentation op {name!r} (known: {', '.join(OPS)})")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"op {name}: seed must be a non-negative integer, got {seed!r}")
    if name == "paraphrase" and "model" in settings:
        text = (recorded or {}).get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a model paraphrase record needs details.text (the model output)")
        return text, dict(recorded or {})
    return spec.fn(value, random.Random(seed), **dict(settings))


def parse_ops(ops: str | Sequence[Mapping[str, Any]]) -> list[OpRecord]:
    """The ``ops`` column (JSON text or a list of dicts) as records, validated."""
    data = json.loads(ops) if isinstance(ops, str) else list(ops)
    if not isinstance(data, list):
        raise ValueError("ops must be a JSON list of operation records")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or not {"op", "seed", "settings"} <= set(item):
            raise ValueError(f"ops[{i}] must be an object with op, seed and settings")
        if item["op"] not in OPS:
            raise ValueError(f"ops[{i}]: unknown op {item['op']!r}")
        out.append(OpRecord(item["op"], item["seed"], item["settings"], item.get("details") or {}))
    return out


@dataclass(frozen=True)
class Replayed:
    """A replayed row: its text and image bytes (the parent's bytes when no image op ran)."""

    text: str
    image: bytes | None


def replay(parent: Mapping[str, Any], ops: str | Sequence[Mapping[str, Any]]) -> Replayed:
    """Regenerate an augmented row exactly from its parent and its ``ops``.

    ``parent`` needs ``text`` and, when an image op is listed, ``image`` (the parent's
    image bytes). Image results are encoded as PNG exactly as the stage stores them, so
    ``sha256(replay(...).image)`` is the row's ``image_id``.
    """
    records = parse_ops(ops)
    text = parent.get("text")
    if not isinstance(text, str):
        raise ValueError("replay needs the parent's text")
    image: Image.Image | None = None
    for rec in records:
        if OPS[rec.op].modality == "text":
            text, _ = apply_op(rec.op, text, rec.seed, rec.settings, rec.details)
        else:
            if image is None:
                data = parent.get("image")
                if data is None:
                    raise ValueError(f"replaying image op {rec.op!r} needs the parent's image")
                image = to_pil(data)
            image, _ = apply_op(rec.op, image, rec.seed, rec.settings, rec.details)
    if image is not None:
        return Replayed(text, encode_png(image))
    data = parent.get("image")
    return Replayed(text, None if data is None else bytes(data))
