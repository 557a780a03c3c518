"""Running one stage: a nested MLflow run, counts that must balance, a progress line."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlsafety.config import Config
from vlsafety.lake import Lake
from vlsafety.tracking import RunRecorder, track

__all__ = ["CountsMismatchError", "StageResult", "run_stage"]

log = logging.getLogger("vlsafety")


class CountsMismatchError(RuntimeError):
    """A stage's rows in != rows out + rejected + filtered: something was lost."""


@dataclass
class StageResult:
    """What a stage did: ``rows_in == rows_out + rejected + filtered`` always holds.

    ``rejected`` rows were bad (each has a row with its reason in ``rejects``);
    ``filtered`` rows were fine but left out by design (selection keeps N of the pool).
    """

    name: str
    rows_in: int
    rows_out: int
    rejected: int
    duration_s: float
    filtered: int = 0
    written: dict[str, int] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rejected,
            "filtered": self.filtered,
            "duration_s": round(self.duration_s, 3),
            "written": self.written,
            "read": self.read,
            **self.extra,
        }


def run_stage(
    name: str,
    fn: Callable[[RunRecorder], Mapping[str, Any]],
    *,
    cfg: Config,
    lake: Lake,
    parent: RunRecorder | None = None,
) -> StageResult:
    """Run ``fn`` as stage ``name`` in a nested MLflow run.

    ``fn`` returns a mapping with ``rows_in``, ``rows_out``, ``rejected``, optionally
    ``filtered`` (and any other figures, logged as metrics when numeric). Counts that do
    not balance raise
    :class:`CountsMismatchError` — a stage may not lose rows silently.
    """
    started = time.perf_counter()
    with track(cfg, f"stage:{name}", lake=lake, nested=True, run_name=name) as rec:
        out = dict(fn(rec))
        duration = time.perf_counter() - started
        rows_in, rows_out, rejected = (int(out.pop(k)) for k in ("rows_in", "rows_out", "rejected"))
        filtered = int(out.pop("filtered", 0))
        result = StageResult(
            name,
            rows_in,
            rows_out,
            rejected,
            duration,
            filtered=filtered,
            written=dict(rec.tables["write"]),
            read=dict(rec.tables["read"]),
            extra=out,
        )
        rec.log_counts(name, rows_in, rows_out, rejected, filtered)
        rec.log_metrics({f"{name}.{k}": v for k, v in out.items() if isinstance(v, int | float)})
    if parent is not None:
        parent.log_counts(name, rows_in, rows_out, rejected, filtered)
        parent.log_metrics({f"{name}.duration_s": duration})
    rate = rows_in / duration if duration > 0 else 0.0
    dropped = f" filtered={filtered}" if filtered else ""
    print(
        f"[{name:<10}] in={rows_in:<7} out={rows_out:<7} rejected={rejected:<6} "
        f"{duration:7.1f}s  {rate:8.1f} rows/s{dropped}",
        file=sys.stderr,
        flush=True,
    )
    if rows_in != rows_out + rejected + filtered:
        raise CountsMismatchError(
            f"stage {name}: rows in ({rows_in}) != out ({rows_out}) + rejected ({rejected})"
            f" + filtered ({filtered})"
        )
    return result
