"""Options of the augmentation agent (a light module: no torch, no Spark at import)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IMAGE_OP_NAMES", "IMAGE_OP_SETTINGS", "TEXT_OP_NAMES", "AugmentOptions"]

TEXT_OP_NAMES: tuple[str, ...] = (
    "synonym",
    "paraphrase",
    "role_play",
    "context",
    "persona",
    "past_tense",
    "char_noise",
)
IMAGE_OP_NAMES: tuple[str, ...] = (
    "crop",
    "blur",
    "noise",
    "rotate",
    "flip",
    "perspective",
    "jpeg",
    "insert",
)

#: Mild default parameters of the image operations (overridable per op in
#: ``AugmentOptions.op_settings``); they are recorded with every augmented row.
IMAGE_OP_SETTINGS: dict[str, dict[str, float]] = {
    "crop": {"min_keep": 0.85},
    "blur": {"max_radius": 1.5},
    "noise": {"max_sigma": 10.0},
    "rotate": {"max_degrees": 10.0},
    "flip": {},
    "perspective": {"max_shift": 0.06},
    "jpeg": {"min_quality": 60, "max_quality": 90},
    "insert": {"count": 3, "region": 0.25},
}
_INT_SETTINGS = {"min_quality", "max_quality", "count"}


@dataclass(frozen=True)
class AugmentOptions:
    """How :func:`~vlsafety.augment.run_augment` mutates candidates.

    Text and image are augmented separately (vlsafetybencher.txt §3.4): a *text variant*
    rewrites the question and keeps the image, an *image variant* changes the image and
    keeps the question.

    Attributes:
        text_ops / image_ops: the operations a variant may draw from.
        text_variants / image_variants: variants made per parent candidate.
        ops_per_variant: operations chained in one variant (distinct, drawn at random).
        origins: which candidates are parents (augmenting augmented rows compounds).
        seed: run seed; per-row seeds derive from it and the parent id.
        synonym_rate: probability that a word in the synonym table is replaced.
        char_rate: probability that a letter is perturbed (char_noise).
        op_settings: per image op, overrides of :data:`IMAGE_OP_SETTINGS`.
        parse_retries / max_new_tokens: paraphraser model settings.
        rows_per_partition: parent candidates per Spark task.
    """

    text_ops: list[str] = field(default_factory=lambda: list(TEXT_OP_NAMES))
    image_ops: list[str] = field(default_factory=lambda: list(IMAGE_OP_NAMES))
    text_variants: int = 1
    image_variants: int = 1
    ops_per_variant: int = 1
    origins: list[str] = field(default_factory=lambda: ["original", "generate"])
    seed: int = 0
    synonym_rate: float = 0.3
    char_rate: float = 0.05
    op_settings: dict[str, dict[str, float]] = field(default_factory=dict)
    parse_retries: int = 2
    max_new_tokens: int | None = 256
    rows_per_partition: int = 64

    def __post_init__(self) -> None:
        for name, known in (("text_ops", TEXT_OP_NAMES), ("image_ops", IMAGE_OP_NAMES)):
            values = getattr(self, name)
            bad = [v for v in values if v not in known]
            if bad:
                raise ValueError(f"augment.{name}: unknown {bad} (known: {', '.join(known)})")
            if len(set(values)) != len(values):
                raise ValueError(f"augment.{name}: listed twice in {values}")
        for name in ("text_variants", "image_variants"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name}: must be >= 0, got {getattr(self, name)}")
        if not (self.text_variants and self.text_ops) and not (
            self.image_variants and self.image_ops
        ):
            raise ValueError("augment: nothing to do (no text or image variants with operations)")
        if self.ops_per_variant < 1:
            raise ValueError(f"augment.ops_per_variant: must be >= 1, got {self.ops_per_variant}")
        bad_origins = [o for o in self.origins if o not in ("original", "generate", "augment")]
        if not self.origins or bad_origins:
            raise ValueError(
                f"augment.origins: need some of original, generate, augment; got {self.origins}"
            )
        for name in ("synonym_rate", "char_rate"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"augment.{name}: must be in (0, 1], got {value}")
        for op, overrides in self.op_settings.items():
            if op not in IMAGE_OP_SETTINGS:
                raise ValueError(f"augment.op_settings: unknown image op {op!r}")
            for key, value in overrides.items():
                if key not in IMAGE_OP_SETTINGS[op]:
                    names = ", ".join(IMAGE_OP_SETTINGS[op]) or "none"
                    raise ValueError(f"augment.op_settings.{op}.{key}: unknown (known: {names})")
                if key in _INT_SETTINGS and value != int(value):
                    raise ValueError(f"augment.op_settings.{op}.{key}: must be an integer")
        if self.parse_retries < 0:
            raise ValueError(f"augment.parse_retries: must be >= 0, got {self.parse_retries}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"augment.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.rows_per_partition < 1:
            raise ValueError(
                f"augment.rows_per_partition: must be >= 1, got {self.rows_per_partition}"
            )

    def image_settings(self, op: str) -> dict[str, float | int]:
        """The effective settings of image op ``op`` (defaults with overrides)."""
        merged: dict[str, float | int] = {**IMAGE_OP_SETTINGS[op], **self.op_settings.get(op, {})}
        return {k: int(v) if k in _INT_SETTINGS else float(v) for k, v in merged.items()}
