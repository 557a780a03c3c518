"""The plain records that flow out of source adapters, and their content-hash ids.

An adapter yields :class:`SourceRecord` (a sample to be read) or :class:`Reject` (a row
that could not become a sample, with a machine-readable reason). Ids follow DESIGN.md
"Keys are content hashes": an image's id is the sha256 of its bytes; a sample's id
hashes its image id, text, source and source reference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

__all__ = [
    "INGEST_REASONS",
    "REJECT_COLUMNS",
    "INTENTS",
    "ImageRef",
    "Reject",
    "SourceFile",
    "SourceRecord",
    "image_id_of",
    "reject_id_of",
    "rejects_to_arrow",
    "sample_id_of",
]

#: Reason codes the ingest stage can write to ``rejects``.
INGEST_REASONS: dict[str, str] = {
    "path_escape": "a referenced path resolves outside the dataset root (symlinks included)",
    "remote_not_allowed": "a remote URL (http/https/s3) and remote fetching is off",
    "missing_file": "a referenced file does not exist",
    "unreadable_file": "a referenced file exists but cannot be read",
    "file_too_large": "a file is larger than the configured byte limit",
    "fetch_failed": "fetching an allowed remote URL failed",
    "bad_record": "a CSV/JSON/JSONL/parquet record cannot be parsed or lacks required fields",
    "unsupported_file": "a file in an image folder is neither a known image type nor a sidecar",
    "orphan_sidecar": "a sidecar prompt file has no image with the same stem",
}

ImageKind = Literal["file", "inline", "parquet", "url"]

#: What a sample is meant to test, from the source's own safe/benign marker: ``harmful``
#: (the source publishes it as an unsafe request), ``benign`` (a safe control the source
#: marks as such, e.g. VLGuard's ``safe_instruction``, SPA-VL's ``help`` split) or
#: ``unknown`` (the source says nothing). Preprocess keeps ``preprocess.keep_intents``.
INTENTS: tuple[str, ...] = ("harmful", "benign", "unknown")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where a record's image bytes are. Only the reference travels to Spark tasks;
    the bytes are read there (``kind="inline"`` carries small embedded bytes).

    ``uri``: resolved local path (``file``/``parquet``) or URL (``url``).
    ``column``/``row``: the parquet column and row index holding the bytes.
    """

    kind: ImageKind
    uri: str = ""
    data: bytes | None = None
    column: str | None = None
    row: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "inline" and self.data is None:
            raise ValueError("inline ImageRef needs data")
        if self.kind in ("file", "parquet", "url") and not self.uri:
            raise ValueError(f"{self.kind} ImageRef needs a uri")
        if self.kind == "parquet" and (self.column is None or self.row is None):
            raise ValueError("parquet ImageRef needs column and row")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One would-be sample: an optional image reference, an optional prompt, its origin.

    ``labels`` keeps the source's original labels (scenario, category, safe/unsafe …)
    as strings, for taxonomy mapping and the update mode. ``text_error`` says why the
    text is not valid UTF-8 (the text then holds U+FFFD replacements); the
    preprocessing agent rejects such samples.
    """

    source: str
    source_ref: str
    text: str | None
    image: ImageRef | None
    labels: dict[str, str] = field(default_factory=dict)
    text_error: str | None = None
    intent: str = "unknown"

    def __post_init__(self) -> None:
        if self.image is None and self.text is None:
            raise ValueError(f"{self.source_ref}: a record needs an image or a text")
        if self.intent not in INTENTS:
            raise ValueError(f"{self.source_ref}: intent {self.intent!r} is not one of {INTENTS}")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file of a release an adapter looked at: read (its records follow this note in
    the adapter's output, up to the next note) or skipped, and why (``reason``: which
    split it is, or what it is instead — an answer key, an MCQA variant, a subset)."""

    source: str
    path: str
    read: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A row a stage dropped: stage, reason code, human-readable detail, and origin."""

    stage: str
    reason: str
    detail: str
    source: str | None = None
    source_ref: str | None = None
    sample_id: str | None = None


def image_id_of(data: bytes) -> str:
    """sha256 hex of the image bytes."""
    return hashlib.sha256(data).hexdigest()


def sample_id_of(image_id: str | None, text: str | None, source: str, source_ref: str) -> str:
    """sha256 over the canonical JSON of (image id, text, source, source ref).

    JSON (not string concatenation) keeps the fields apart: no separator inside a prompt
    can make two different samples collide, and None differs from "".
    """
    payload = json.dumps([image_id, text, source, source_ref], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def reject_id_of(
    stage: str, reason: str, source: str | None, source_ref: str | None, sample_id: str | None
) -> str:
    """Key of a reject row: the same drop found again by a rerun merges onto itself."""
    payload = json.dumps([stage, reason, source, source_ref, sample_id], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


#: Column order of the shared ``rejects`` table (every stage writes these columns).
REJECT_COLUMNS: tuple[str, ...] = (
    "reject_id",
    "stage",
    "reason",
    "detail",
    "source",
    "source_ref",
    "sample_id",
)


def rejects_to_arrow(rejects: list[Reject]) -> pa.Table:
    """Reject records as an Arrow table with :data:`REJECT_COLUMNS` (all strings)."""
    rows: dict[str, list[str | None]] = {c: [] for c in REJECT_COLUMNS}
    for r in rejects:
        rows["reject_id"].append(
            reject_id_of(r.stage, r.reason, r.source, r.source_ref, r.sample_id)
        )
        rows["stage"].append(r.stage)
        rows["reason"].append(r.reason)
        rows["detail"].append(r.detail)
        rows["source"].append(r.source)
        rows["source_ref"].append(r.source_ref)
        rows["sample_id"].append(r.sample_id)
    return pa.table({c: pa.array(v, type=pa.string()) for c, v in rows.items()})
