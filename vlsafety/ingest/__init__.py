"""Ingest: read raw sources into the content-addressed ``images`` and ``raw_pool`` tables.

Sources are ``KIND:PATH`` strings (``folder``, ``manifest`` and the published layouts of
existing safety benchmarks, see :data:`ADAPTERS`). Each adapter knows which files of a
release are benchmark splits and notes every file it read or skipped (:class:`SourceFile`);
:func:`dry_run` reports a source per file without Spark. Adapters list records on the driver;
bytes are read, hashed and described in Spark tasks by :func:`run_ingest`. Rows that
cannot become samples go to ``rejects`` with a reason code (:data:`INGEST_REASONS`).

``vlsafety.ingest.demo_data.write_demo_data`` writes the shipped synthetic demo pool.
"""

from vlsafety.ingest._adapters import (
    ADAPTERS,
    FIGSTEP_PROMPT,
    IMAGE_EXTENSIONS,
    IMAGE_TEXT_LABEL,
    iter_source,
    parse_source,
    scan_source,
)
from vlsafety.ingest._dry_run import FileReport, dry_run, format_dry_run
from vlsafety.ingest._images import (
    DECODE_ERRORS,
    DEFAULT_MAX_PIXELS,
    LOAD_ERRORS,
    ImageHeader,
    fine_hash,
    hamming,
    open_image_header,
    perceptual_hash,
    phash_from_int64,
    phash_to_int64,
    pixel_limit,
    read_image_header,
)
from vlsafety.ingest._options import IngestOptions
from vlsafety.ingest._paths import PathEscapeError, is_remote, resolve_under
from vlsafety.ingest._readers import clean_text
from vlsafety.ingest._records import (
    INGEST_REASONS,
    INTENTS,
    REJECT_COLUMNS,
    ImageRef,
    Reject,
    SourceFile,
    SourceRecord,
    image_id_of,
    reject_id_of,
    rejects_to_arrow,
    sample_id_of,
)
from vlsafety.ingest._stage import (
    IMAGE_COLUMNS,
    OWN_DATA_KINDS,
    RAW_POOL_COLUMNS,
    SOURCES_SCHEMA,
    ingest_batch,
    records_to_arrow,
    run_ingest,
)

__all__ = [
    "ADAPTERS",
    "DECODE_ERRORS",
    "DEFAULT_MAX_PIXELS",
    "FileReport",
    "FIGSTEP_PROMPT",
    "IMAGE_COLUMNS",
    "IMAGE_EXTENSIONS",
    "IMAGE_TEXT_LABEL",
    "INGEST_REASONS",
    "INTENTS",
    "LOAD_ERRORS",
    "OWN_DATA_KINDS",
    "RAW_POOL_COLUMNS",
    "SOURCES_SCHEMA",
    "REJECT_COLUMNS",
    "ImageHeader",
    "ImageRef",
    "IngestOptions",
    "PathEscapeError",
    "Reject",
    "SourceFile",
    "SourceRecord",
    "clean_text",
    "dry_run",
    "format_dry_run",
    "fine_hash",
    "hamming",
    "image_id_of",
    "ingest_batch",
    "is_remote",
    "iter_source",
    "open_image_header",
    "parse_source",
    "perceptual_hash",
    "phash_from_int64",
    "phash_to_int64",
    "pixel_limit",
    "read_image_header",
    "records_to_arrow",
    "reject_id_of",
    "rejects_to_arrow",
    "resolve_under",
    "run_ingest",
    "sample_id_of",
    "scan_source",
]
