"""The ``candidates`` table: its columns, the :class:`Candidate` record, ids and seeds.

``candidates`` (key ``candidate_id``) holds every image-question pair that may enter a
benchmark: pool samples kept as they are, generated pairs and augmented pairs.

=====================  ======  =========================================================
column                 type    meaning
=====================  ======  =========================================================
candidate_id           string  sha256 hex (:func:`candidate_id_of`)
parent_sample_id       string  the ``pool`` sample every row descends from
parent_candidate_id    string  the candidate an augmented row was made from (else null)
image_id               string  key into ``images``; null for a text-only candidate
text                   string  the question sent with the image
category               string  vlsb category name, copied from the pool sample
subcategory            string  vlsb subcategory name, copied from the pool sample
strategy               string  one of :data:`STRATEGIES`
harm_pattern           string  HH | HT | TH | TT (first letter image, second text;
                               H harmful alone, T harmless alone; vlsafetybencher §3.3);
                               null for ``original`` rows (the source does not say)
interaction            string  one sentence: how image and text combine into the harm
key_phrase             string  the harmful key phrase used (null when none was used)
method                 string  JSON object: how the pair was made (backend, key-phrase
                               source, rendering parameters, model description, ...)
ops                    string  JSON list of augmentation operations with their
                               parameters (``[]`` unless ``origin`` is ``augment``)
generator              string  model id, ``template``, or ``pool`` for originals
prompt_version         string  versions of the prompt files used (null for originals)
origin                 string  original | generate | augment
seed                   int64   the seed the row was made with (derived per row)
=====================  ======  =========================================================

Augmented rows keep their parent's strategy, harm pattern and interaction: augmentation
changes wording or pixels, not the modality interaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from vlsafety.models import canonical_json

__all__ = [
    "CANDIDATE_COLUMNS",
    "CANDIDATE_SCHEMA",
    "ELITE_METHODS",
    "HARM_PATTERNS",
    "MODALITY_STRATEGIES",
    "ORIGINS",
    "STRATEGIES",
    "STRATEGY_PATTERNS",
    "Candidate",
    "PoolSample",
    "candidate_id_of",
    "candidates_to_arrow",
    "derive_seed",
]

#: Cross-modal synthesis strategies (vlsafetybencher.txt §3.3).
MODALITY_STRATEGIES: tuple[str, ...] = (
    "modality_dependence",
    "modality_complementarity",
    "modality_conflict",
)
#: ELITE generation methods (elite.txt §3.3).
ELITE_METHODS: tuple[str, ...] = ("flowchart", "blueprint", "role_play", "fake_news")
STRATEGIES: tuple[str, ...] = (*MODALITY_STRATEGIES, *ELITE_METHODS, "original")
HARM_PATTERNS: tuple[str, ...] = ("HH", "HT", "TH", "TT")
ORIGINS: tuple[str, ...] = ("original", "generate", "augment")

#: Harm patterns each strategy may produce. Dependence puts the harm in one modality;
#: complementarity splits one harmful scenario over both (the paper counts it as HH; a
#: split whose halves each look harmless is TT); conflict covers all four (§3.3, Fig. 3a).
STRATEGY_PATTERNS: dict[str, tuple[str, ...]] = {
    "modality_dependence": ("HT", "TH"),
    "modality_complementarity": ("HH", "TT"),
    "modality_conflict": HARM_PATTERNS,
}

CANDIDATE_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("parent_sample_id", pa.string()),
        ("parent_candidate_id", pa.string()),
        ("image_id", pa.string()),
        ("text", pa.string()),
        ("category", pa.string()),
        ("subcategory", pa.string()),
        ("strategy", pa.string()),
        ("harm_pattern", pa.string()),
        ("interaction", pa.string()),
        ("key_phrase", pa.string()),
        ("method", pa.string()),
        ("ops", pa.string()),
        ("generator", pa.string()),
        ("prompt_version", pa.string()),
        ("origin", pa.string()),
        ("seed", pa.int64()),
    ]
)
CANDIDATE_COLUMNS: tuple[str, ...] = tuple(CANDIDATE_SCHEMA.names)

_SEED_BITS = 63  # fits a signed int64 column


def derive_seed(*parts: Any) -> int:
    """A seed in ``[0, 2**63)`` from the run seed and row identity (sha256 of canonical
    JSON), so rows are reproducible one by one and never depend on global random state."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _SEED_BITS)


def candidate_id_of(
    parent_sample_id: str,
    strategy: str,
    method: str,
    generator: str,
    prompt_version: str | None,
    seed: int,
    index: int | None,
) -> str:
    """sha256 over everything that determines a generated candidate: parent pool sample,
    strategy, method, generator (model id and fingerprint, or ``template``), prompt
    version, run seed and the index of the candidate within its generation call.

    ``index=None`` names the generation attempt itself (used as the ``source_ref`` of
    its reject rows, so a rerun knows the attempt is done)."""
    payload = canonical_json(
        [parent_sample_id, strategy, method, generator, prompt_version, seed, index]
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PoolSample:
    """The columns of a ``pool`` row that generation reads."""

    sample_id: str
    image_id: str | None
    text: str | None
    category: str | None = None
    subcategory: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sample_id, str) or not self.sample_id:
            raise ValueError(f"a pool sample needs a sample_id, got {self.sample_id!r}")
        if self.image_id is None and not (self.text and self.text.strip()):
            raise ValueError(f"pool sample {self.sample_id}: needs an image or a text")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One row of ``candidates`` (see the module docstring for the columns)."""

    candidate_id: str
    parent_sample_id: str
    image_id: str | None
    text: str
    strategy: str
    harm_pattern: str | None
    interaction: str
    method: str
    generator: str
    prompt_version: str | None
    origin: str
    seed: int
    category: str | None = None
    subcategory: str | None = None
    key_phrase: str | None = None
    parent_candidate_id: str | None = None
    ops: str = "[]"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"candidate strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.harm_pattern is not None and self.harm_pattern not in HARM_PATTERNS:
            raise ValueError(
                f"harm_pattern must be one of {HARM_PATTERNS}, got {self.harm_pattern!r}"
            )
        if self.harm_pattern is None and self.strategy != "original":
            raise ValueError(f"a {self.strategy} candidate needs a harm_pattern")
        allowed = STRATEGY_PATTERNS.get(self.strategy)
        if allowed is not None and self.harm_pattern not in allowed:
            raise ValueError(
                f"{self.strategy} allows harm patterns {allowed}, got {self.harm_pattern!r}"
            )
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {self.origin!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("a candidate needs a non-empty text")
        if (self.origin == "augment") != (self.parent_candidate_id is not None):
            raise ValueError("exactly the augmented candidates name a parent candidate")
        for name in ("method", "ops"):
            try:
                json.loads(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"candidate {name} must be JSON: {exc}") from exc
        if not 0 <= self.seed < 2**_SEED_BITS:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")

    def to_row(self) -> dict[str, Any]:
        """The row as a dict in :data:`CANDIDATE_COLUMNS` order."""
        d = asdict(self)
        return {c: d[c] for c in CANDIDATE_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Candidate:
        """Rebuild (and re-validate) a candidate from a table row."""
        return cls(**{c: row[c] for c in CANDIDATE_COLUMNS})


def candidates_to_arrow(candidates: list[Candidate]) -> pa.Table:
    """Candidates as an Arrow table with :data:`CANDIDATE_SCHEMA`."""
    rows = [c.to_row() for c in candidates]
    return pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)
