"""Kinds of lake tables, and what each command and build stage reads (its input contract).

A command checks the tables it reads against their kind before it starts any work:
:func:`require_table` reads only the Delta log (``Lake.schema``: no Spark job, no model
load), so a wrong kind of table, a missing table or version, or an absent column fails at
once, in one line naming the table and what is missing (:class:`TableKindError`, which
the CLI turns into exit status 2), instead of deep inside a Spark plan.

A :class:`Kind` lists the columns a reader needs, not every column a writer writes: an
older table missing a column nobody reads stays readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlsafety.lake import LakeError, TableNotFoundError

if TYPE_CHECKING:
    from vlsafety.lake import Lake

__all__ = [
    "BENCHMARK",
    "CANDIDATES",
    "CANDIDATE_EMBEDDINGS",
    "CONTAMINATION",
    "IMAGES",
    "JUDGE_AGREEMENT",
    "JUDGMENTS",
    "LEADERBOARD",
    "POOL",
    "PUBLIC_BENCHMARK",
    "RAW_POOL",
    "REJECTS",
    "RESPONSES",
    "SAMPLES",
    "SCORED",
    "STAGE_INPUTS",
    "STAGE_OUTPUTS",
    "Kind",
    "TableKindError",
    "check_columns",
    "check_if_present",
    "require_table",
    "selection_input",
    "stage_inputs",
    "stage_outputs",
]

#: A needed column: one name, or alternatives of which any one will do.
Column = str | tuple[str, ...]


class TableKindError(LakeError):
    """A table a command reads is missing, lacks the version asked for, or is not of the
    kind the command needs (the CLI exits 2 with this one-line message)."""


@dataclass(frozen=True)
class Kind:
    """A kind of table, by what a reader needs of it.

    Args:
        name: how a message names the kind (``"a benchmark"``).
        columns: the columns needed; a tuple entry is a set of alternatives.
        clashes: columns a table of this kind must not have (a reader would overwrite them).
        hint: how to get a table of this kind (said when the table is missing).
    """

    name: str
    columns: tuple[Column, ...]
    clashes: tuple[str, ...] = ()
    hint: str = ""

    def missing(self, present: Iterable[str]) -> list[str]:
        """The needed columns ``present`` lacks (alternatives joined by ``" or "``)."""
        have = set(present)
        out = []
        for col in self.columns:
            alternatives = (col,) if isinstance(col, str) else col
            if not any(a in have for a in alternatives):
                out.append(" or ".join(alternatives))
        return out


#: ``raw_pool``, written by ingest (a subset of ``vlsafety.ingest.RAW_POOL_COLUMNS``).
RAW_POOL = Kind("a raw pool", ("sample_id", "image_id", "text"), hint="run `vlsafety ingest`")
#: ``images``, written by ingest (a subset of ``vlsafety.ingest.IMAGE_COLUMNS``).
IMAGES = Kind("an images table", ("image_id", "bytes"), hint="run `vlsafety ingest`")
#: ``pool``, written by preprocess (a subset of ``vlsafety.preprocess.POOL_SCHEMA``).
POOL = Kind(
    "a pool", ("sample_id", "image_id", "text", "category"), hint="run `vlsafety preprocess`"
)
#: ``candidates``, written by generate and augment (``vlsafety.generate.CANDIDATE_COLUMNS``).
CANDIDATES = Kind(
    "a candidates table",
    ("candidate_id", "image_id", "text", "category"),
    hint="run `vlsafety generate`",
)
CANDIDATE_EMBEDDINGS = Kind(
    "a candidate embeddings table",
    ("candidate_id", "model_id", "embedding"),
    hint="run `vlsafety build --stages embed`",
)
RESPONSES = Kind(
    "a responses table",
    ("request_key", "candidate_id", "model_id", "text"),
    hint="run `vlsafety build --stages respond`",
)
JUDGMENTS = Kind(
    "a judgments table",
    ("request_key", "judge_id", "p_unsafe"),
    hint="run `vlsafety build --stages judge`",
)
#: ``scored``, written by the score stage: candidates plus the panel's figures.
SCORED = Kind(
    "a scored pool",
    ("candidate_id", "image_id", "text", "category", "embedding", "p_h", "harm", "harmful"),
    hint="run `vlsafety build`",
)
#: ``leaderboard``, merged into by ``evaluate`` on its keys
#: (``vlsafety.pipeline.LEADERBOARD_KEYS``).
LEADERBOARD = Kind(
    "a leaderboard", ("benchmark", "benchmark_version", "model_id", "category", "panel")
)
#: ``judge_agreement``, appended to by ``vlsafety judges``
#: (``vlsafety.pipeline._judges.AGREEMENT_KEYS``).
JUDGE_AGREEMENT = Kind(
    "a judge agreement table",
    ("agreement_id", "benchmark", "benchmark_version", "group", "metric", "rater", "value"),
)
#: What ``evaluate`` answers and judges: the build's benchmark schema (candidate ids).
BENCHMARK = Kind("a benchmark", ("candidate_id", "image_id", "text", "category"))
#: ``rejects``, merged into by every stage on ``reject_id``.
REJECTS = Kind("a rejects table", ("reject_id", "stage", "reason", "sample_id"))
#: A public benchmark written by ``ingest --as-benchmark`` (what a re-ingest overwrites:
#: never a table of another kind).
PUBLIC_BENCHMARK = Kind(
    "a public benchmark",
    ("candidate_id", "image_id", "text", "category", "source", "source_release"),
    hint="run `vlsafety ingest --source KIND:PATH --as-benchmark NAME`",
)
#: Samples with an id, an image, a question and a category: a benchmark, or rows of a
#: pool (what ``update``, ``export`` and ``report`` take).
SAMPLES = Kind("a benchmark", (("candidate_id", "sample_id"), "image_id", "text", "category"))

#: ``contamination``, merged into by ``vlsafety contamination`` on its keys
#: (``vlsafety.contamination.CONTAMINATION_SCHEMA``).
CONTAMINATION = Kind(
    "a contamination table",
    ("check_id", "benchmark", "sample_id", "source", "kind", "similarity"),
    hint="run `vlsafety contamination`",
)


def selection_input(mode: str, *, source_balancing: bool = False) -> Kind:
    """What ``vlsafety select`` needs in ``mode`` (see :func:`vlsafety.selection.select_table`;
    a lake table's ``candidate_id`` / ``elite`` stand for ``sample_id`` / ``elite_scores``)."""
    from vlsafety.selection import OUTPUT_COLUMNS

    ident: tuple[Column, ...] = (("sample_id", "candidate_id"), "category")
    if mode == "elite-filter":
        columns = (*ident, ("elite_scores", "elite"), *(("source",) if source_balancing else ()))
        name = "a table with per-model ELITE scores"
    else:
        columns = (*ident, "embedding", ("p_h", "harmful"), ("harm", "judge_probs"))
        name = "a scored pool"
    return Kind(
        name,
        columns,
        clashes=OUTPUT_COLUMNS,
        hint="`vlsafety build` writes a `scored` table",
    )


#: The tables each build stage reads (the ``ingest`` stage reads its sources).
STAGE_INPUTS: dict[str, dict[str, Kind]] = {
    "preprocess": {"raw_pool": RAW_POOL, "images": IMAGES},
    "generate": {"pool": POOL},
    "augment": {"candidates": CANDIDATES},
    "embed": {"candidates": CANDIDATES, "images": IMAGES},
    "respond": {"candidates": CANDIDATES, "images": IMAGES},
    "judge": {"candidates": CANDIDATES, "responses": RESPONSES, "images": IMAGES},
    "score": {
        "candidates": CANDIDATES,
        "candidate_embeddings": CANDIDATE_EMBEDDINGS,
        "responses": RESPONSES,
        "judgments": JUDGMENTS,
    },
    "select": {"scored": SCORED},
}
#: The tables each build stage merges its rows into (``ingest`` only when it has
#: sources): one already there must be of the kind, or the merge would fail after the
#: stage's work. ``score`` and ``select`` overwrite theirs.
STAGE_OUTPUTS: dict[str, dict[str, Kind]] = {
    "ingest": {"raw_pool": RAW_POOL, "images": IMAGES},
    "preprocess": {"pool": POOL, "images": IMAGES},
    "generate": {"candidates": CANDIDATES},
    "augment": {"candidates": CANDIDATES},
    "embed": {"candidate_embeddings": CANDIDATE_EMBEDDINGS},
    "respond": {"responses": RESPONSES},
    "judge": {"judgments": JUDGMENTS},
}
#: Tables the score stage overwrites (no earlier table of them needed).
_OVERWRITTEN = {"score": ("scored",)}


def stage_inputs(stages: Sequence[str], *, has_sources: bool = True) -> dict[str, Kind]:
    """The tables ``stages`` (run in order) read that none of them writes before: those
    must already be in the lake. ``ingest`` without sources writes nothing."""
    written: set[str] = set()
    needed: dict[str, Kind] = {}
    for stage in stages:
        for table, kind in STAGE_INPUTS.get(stage, {}).items():
            if table not in written:
                needed.setdefault(table, kind)
        if stage != "ingest" or has_sources:
            written.update(STAGE_OUTPUTS.get(stage, {}))
            written.update(_OVERWRITTEN.get(stage, ()))
    return needed


def stage_outputs(stages: Sequence[str]) -> dict[str, Kind]:
    """The tables ``stages`` merge into: each must be of its kind if it exists."""
    out: dict[str, Kind] = {}
    for stage in stages:
        out.update(STAGE_OUTPUTS.get(stage, {}))
    return out


def check_if_present(lake: Lake, table: str, kind: Kind, *, what: str) -> None:
    """:func:`require_table` on the latest version of ``table`` when the lake has it (a
    table a command merges into, or creates)."""
    if lake.exists(table):
        require_table(lake, table, None, kind, what=what)


def require_table(
    lake: Lake, table: str, version: int | None, kind: Kind | None, *, what: str
) -> int:
    """Check that ``table@version`` (latest if None) exists and is of ``kind``; return the
    version. Reads the Delta log only.

    Args:
        what: the command and argument, as the message starts (``"evaluate --benchmark"``).

    Raises:
        TableKindError: one line: ``what``, the table, and what is missing.
    """
    if not lake.exists(table):
        hint = f" ({kind.hint})" if kind is not None and kind.hint else ""
        raise TableKindError(f"{what}: table {table!r} not found under {lake.root}{hint}")
    try:
        latest = lake.version(table)
        if version is not None and version > latest:
            raise TableKindError(
                f"{what}: table {table!r} has no version {version} (latest is {latest})"
            )
        version = latest if version is None else version
        names = lake.schema(table, version).names
    except TableNotFoundError as exc:  # e.g. an old version whose log was cleaned up
        raise TableKindError(f"{what}: {exc}") from None
    if kind is not None:
        check_columns(f"{what}: table {table!r} (version {version})", names, kind)
    return version


def check_columns(where: str, names: Sequence[str], kind: Kind) -> None:
    """Raise :class:`TableKindError` when columns ``names`` are not of ``kind``; ``where``
    opens the message (``"select --input x.parquet"``)."""
    missing = kind.missing(names)
    if missing:
        raise TableKindError(f"{where} is not {kind.name}: missing column(s) {', '.join(missing)}")
    clash = [c for c in kind.clashes if c in names]
    if clash:
        raise TableKindError(
            f"{where} is not {kind.name}: it already has the output column(s) {', '.join(clash)}"
        )
