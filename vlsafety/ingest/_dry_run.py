"""``vlsafety ingest --dry-run``: what a source would give, read from its metadata only.

Runs the adapters on the driver (no Spark, no image bytes read, nothing written) and
reports per file: records listed, rejects by reason, intents, the vlsb category each
record's source labels map to, label values no mapping rule knows (with counts), and
missing images. This is how a user checks a new download before a large run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vlsafety.ingest._adapters import scan_source
from vlsafety.ingest._options import IngestOptions
from vlsafety.ingest._records import Reject, SourceFile

__all__ = ["FileReport", "dry_run", "format_dry_run"]

#: Missing image paths named per file (the count covers all of them).
MISSING_EXAMPLES = 3


@dataclass
class FileReport:
    """What one file of a source gives (``read`` False: skipped, ``reason`` says why)."""

    source: str
    file: str
    read: bool
    reason: str
    records: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    missing_images: int = 0
    missing_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "file": self.file,
            "read": self.read,
            "reason": self.reason,
            "records": self.records,
            "rejects": dict(self.rejects),
            "intents": dict(self.intents),
            "categories": dict(self.categories),
            "unmapped": dict(self.unmapped),
            "missing_images": self.missing_images,
            "missing_examples": list(self.missing_examples),
        }


def dry_run(sources: list[str], options: IngestOptions | None = None) -> list[FileReport]:
    """Per-file reports of ``sources`` (``KIND:PATH``); records are mapped with the
    shipped label mappings. ``records`` counts samples the source would give; rejects
    are counted apart (records + rejects = every metadata row)."""
    from vlsafety.taxonomy import map_label, unmapped_labels

    reports: list[FileReport] = []
    for spec in sources:
        kind = spec.partition(":")[0].strip().lower()
        current: FileReport | None = None
        for item in scan_source(spec, options):
            if isinstance(item, SourceFile):
                current = FileReport(item.source, item.path, item.read, item.reason)
                reports.append(current)
                continue
            if current is None:  # adapters note a file before its records; be safe anyway
                current = FileReport(kind, "-", True, "records before any file note")
                reports.append(current)
            if isinstance(item, Reject):
                current.rejects[item.reason] += 1
                if item.reason == "missing_file":
                    current.missing_images += 1
                    if len(current.missing_examples) < MISSING_EXAMPLES:
                        current.missing_examples.append(item.detail)
                continue
            current.records += 1
            current.intents[item.intent] += 1
            category = map_label(item.source, item.labels)
            current.categories[category or "(no source category)"] += 1
            for label, value in unmapped_labels(item.source, item.labels):
                current.unmapped[f"{label}={value!r}"] += 1
    return reports


def _counter(c: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in c.most_common()) or "-"


def format_dry_run(reports: list[FileReport]) -> str:
    """The reports as text, one block per file."""
    lines: list[str] = []
    for r in reports:
        head = f"{r.source}:{r.file}"
        if not r.read:
            lines.append(f"{head}  SKIPPED: {r.reason}")
            continue
        lines.append(f"{head}  ({r.reason})")
        lines.append(f"  records: {r.records}   rejects: {sum(r.rejects.values())}")
        if r.rejects:
            lines.append(f"  rejects by reason: {_counter(r.rejects)}")
        lines.append(f"  intents: {_counter(r.intents)}")
        lines.append(f"  categories: {_counter(r.categories)}")
        lines.append(f"  unmapped label values: {_counter(r.unmapped)}")
        lines.append(f"  missing images: {r.missing_images}")
        lines.extend(f"    {m}" for m in r.missing_examples)
    return "\n".join(lines)
