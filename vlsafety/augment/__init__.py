"""Augmentation agent (vlsafetybencher.txt §3.4): text and image mutations that raise
harmfulness and diversity while keeping each sample's modality interaction.

:func:`run_augment` is the Spark stage; the operations below are its pure core and
:func:`replay` regenerates any augmented row exactly from its parent and ``ops``.
"""

from vlsafety.augment._agent import AUGMENT_REASONS, AUGMENT_VERSION, AugmentAgent, AugmentResult
from vlsafety.augment._image import (
    add_noise,
    blur,
    crop,
    hflip,
    insert_marks,
    jpeg_reencode,
    perspective,
    rotate,
)
from vlsafety.augment._ops import OPS, OpRecord, Replayed, apply_op, op_applies, parse_ops, replay
from vlsafety.augment._options import (
    IMAGE_OP_NAMES,
    IMAGE_OP_SETTINGS,
    TEXT_OP_NAMES,
    AugmentOptions,
)
from vlsafety.augment._stage import run_augment
from vlsafety.augment._synonyms import SYNONYMS
from vlsafety.augment._text import (
    char_perturb,
    context_frame,
    paraphrase_template,
    past_tense,
    persona_rewrite,
    role_play_frame,
    synonym_substitute,
)

__all__ = [
    "AUGMENT_REASONS",
    "AUGMENT_VERSION",
    "IMAGE_OP_NAMES",
    "IMAGE_OP_SETTINGS",
    "OPS",
    "SYNONYMS",
    "TEXT_OP_NAMES",
    "AugmentAgent",
    "AugmentOptions",
    "AugmentResult",
    "OpRecord",
    "Replayed",
    "add_noise",
    "apply_op",
    "blur",
    "char_perturb",
    "context_frame",
    "crop",
    "hflip",
    "insert_marks",
    "jpeg_reencode",
    "op_applies",
    "paraphrase_template",
    "parse_ops",
    "past_tense",
    "persona_rewrite",
    "perspective",
    "replay",
    "role_play_frame",
    "rotate",
    "run_augment",
    "synonym_substitute",
]
