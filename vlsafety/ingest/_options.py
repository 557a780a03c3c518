"""Ingest options (a light module: no Spark, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from vlsafety.ingest._images import DEFAULT_MAX_PIXELS

__all__ = ["IngestOptions"]


@dataclass(frozen=True)
class IngestOptions:
    """How sources are read.

    Attributes:
        allow_remote: fetch http/https/s3 image references (off: they are rejected as
            ``remote_not_allowed``).
        image_col, text_col, label_cols: manifest column names; ``label_cols=None`` keeps
            every other scalar column as a label, so no original label is lost.
        root: dataset root for manifest paths (default: the manifest's folder). Paths
            must resolve inside it.
        max_file_bytes: larger image files are rejected (``file_too_large``) unread.
        max_pixels: images above this are not decoded for hashing (bomb guard).
        fetch_timeout_s, max_fetch_bytes: limits for allowed remote fetches.
        partitions: Spark partitions for reading/hashing (None: from the record count).
        records_per_partition: target records per partition when ``partitions`` is None.
        limit: read only the first N records (and record-level rejects) of each source,
            in the adapter's order: a trial run over a subset of a release (None: all).
    """

    allow_remote: bool = False
    image_col: str = "image"
    text_col: str = "text"
    label_cols: tuple[str, ...] | None = None
    root: str | None = None
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    fetch_timeout_s: float = 20.0
    max_fetch_bytes: int = 32 * 1024 * 1024
    partitions: int | None = None
    records_per_partition: int = 2000
    limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_pixels", "max_fetch_bytes", "records_per_partition"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"IngestOptions.{name}: must be a positive integer, got {value!r}")
        if self.partitions is not None and (
            not isinstance(self.partitions, int) or self.partitions <= 0
        ):
            raise ValueError(
                f"IngestOptions.partitions: must be a positive integer, got {self.partitions!r}"
            )
        if self.limit is not None and (
            not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit <= 0
        ):
            raise ValueError(f"IngestOptions.limit: must be a positive integer, got {self.limit!r}")
        if self.fetch_timeout_s <= 0:
            raise ValueError(
                f"IngestOptions.fetch_timeout_s: must be positive, got {self.fetch_timeout_s!r}"
            )
        for name in ("image_col", "text_col"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"IngestOptions.{name}: must be a non-empty string")
        if self.label_cols is not None:
            if isinstance(self.label_cols, str):
                raise ValueError("IngestOptions.label_cols: give a tuple of column names")
            object.__setattr__(self, "label_cols", tuple(self.label_cols))
