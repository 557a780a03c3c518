"""Every command, given a wrong kind of table, a missing table or version, or a table
lacking a column it needs, exits 2 with one line naming the table — before any Spark
session, model or MLflow run starts (issue 16).

The lake holds one small table of each kind, its columns taken from the constants of the
code that writes that kind, so the kinds the commands declare stay in sync with the
writers. No Spark: the checks read the Delta log only, and a command that gets past them
(the positive controls) stops at a sentinel where its Spark session, selection or export
would start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from vlsafety import cli, kinds
from vlsafety.generate import CANDIDATE_COLUMNS
from vlsafety.ingest import IMAGE_COLUMNS, RAW_POOL_COLUMNS
from vlsafety.lake import Lake
from vlsafety.pipeline import BENCHMARK_COLUMNS, LEADERBOARD_KEYS, PUBLIC_COLUMNS
from vlsafety.pipeline._evaluate import LEADERBOARD_COLUMNS
from vlsafety.pipeline._judges import AGREEMENT_COLUMNS, AGREEMENT_KEYS
from vlsafety.pipeline._score import SCORED_COLUMNS
from vlsafety.preprocess import POOL_SCHEMA
from vlsafety.selection import OUTPUT_COLUMNS

SCORED = (*CANDIDATE_COLUMNS, *SCORED_COLUMNS, "panel")

#: table name -> (columns as the writer writes them, keys)
TABLES: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "images": (IMAGE_COLUMNS, ["image_id"]),
    "raw_pool": (RAW_POOL_COLUMNS, ["sample_id"]),
    "pool": (tuple(POOL_SCHEMA.names), ["sample_id"]),
    "candidates": (CANDIDATE_COLUMNS, ["candidate_id"]),
    "scored": (SCORED, ["candidate_id"]),
    # what `update` writes, and what the build's select stage writes
    "benchmark": (BENCHMARK_COLUMNS, ["candidate_id"]),
    "selected": ((*SCORED, *OUTPUT_COLUMNS), ["candidate_id"]),
    "leaderboard": ((*LEADERBOARD_KEYS, *LEADERBOARD_COLUMNS), LEADERBOARD_KEYS),
    # what `vlsafety judges` reads besides the benchmark, and what it appends to
    "responses": (("request_key", "candidate_id", "model_id", "text"), ["request_key"]),
    "judgments": (
        ("request_key", "candidate_id", "model_id", "judge_id", "p_unsafe"),
        ["request_key"],
    ),
    "judge_agreement": (AGREEMENT_COLUMNS, AGREEMENT_KEYS),
    # what `ingest --as-benchmark` writes: candidates with the public source's lineage
    "public": ((*CANDIDATE_COLUMNS, *PUBLIC_COLUMNS), ["candidate_id"]),
    # a benchmark missing one column the commands need
    "no_category": (tuple(c for c in BENCHMARK_COLUMNS if c != "category"), ["candidate_id"]),
}


def _write(lake: Lake, name: str, columns: tuple[str, ...], keys: list[str]) -> None:
    # one row of strings: the checks read column names only, never the values
    table = pa.table({c: ["x"] for c in dict.fromkeys(columns)})
    lake.write(table, name, "overwrite", keys=keys or None)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("kinds") / "lake")
    for name, (columns, keys) in TABLES.items():
        _write(lake, name, columns, keys)
    return lake


@pytest.fixture(scope="module")
def mislabeled(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Each table a build stage reads holds another kind's columns."""
    lake = Lake(tmp_path_factory.mktemp("mislabeled") / "lake")
    wrong = {
        "raw_pool": IMAGE_COLUMNS,
        "images": RAW_POOL_COLUMNS,
        "pool": RAW_POOL_COLUMNS,
        "candidates": RAW_POOL_COLUMNS,
        "candidate_embeddings": RAW_POOL_COLUMNS,
        "responses": RAW_POOL_COLUMNS,
        "judgments": RAW_POOL_COLUMNS,
        "scored": CANDIDATE_COLUMNS,
    }
    for name, columns in wrong.items():
        _write(lake, name, columns, [])
    return lake


class Proceeded(Exception):
    """The command got past its checks to real work (Spark, selection, export)."""


@pytest.fixture(autouse=True)
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: Any, **kwargs: Any) -> Any:
        raise Proceeded

    monkeypatch.setattr("vlsafety.spark.get_spark", stop)
    monkeypatch.setattr("vlsafety.selection.select_table", stop)
    monkeypatch.setattr("vlsafety.pipeline.export_benchmark", stop)


def _main(root: str | Path, tmp_path: Path, *args: str) -> int:
    base = ["--set", f"lake.root={root}", "--set", "tracking.enabled=false"]
    base += ["--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    return cli.main([*base, *args])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vlsafety: error: ")
    return lines[0]


#: command (with {ref} for the table) -> the tables of the right kind; every other table
#: of the lake is a wrong kind for it.
COMMANDS: dict[str, tuple[list[str], set[str]]] = {
    "evaluate": (
        ["evaluate", "--benchmark", "{ref}", "--models", "tiny-llava"],
        {"benchmark", "selected", "scored", "candidates", "public"},
    ),
    "update": (
        ["update", "--benchmark", "{ref}", "--replace", "0.2"],
        {"benchmark", "selected", "scored", "candidates", "pool", "public"},
    ),
    # the pool the replacements come from: a table with the panel's scores (a build's
    # scored table, its selected rows, an updated benchmark)
    "update-pool": (
        ["update", "--benchmark", "public@0", "--pool", "{ref}"],
        {"scored", "selected", "benchmark"},
    ),
    "judges": (
        ["judges", "--benchmark", "{ref}"],
        {"benchmark", "selected", "scored", "candidates", "public"},
    ),
    "select": (["select", "--input", "{ref}", "--n-max", "1"], {"scored", "benchmark"}),
    # a benchmark without ELITE scores (a public one, candidates) is scored by the panel
    # first; one with them is filtered as it is
    "select-elite": (
        ["select", "--mode", "elite-filter", "--input", "{ref}"],
        {"scored", "benchmark", "public", "candidates"},
    ),
    "export": (
        ["export", "{ref}", "--out", "{out}"],
        {"benchmark", "selected", "scored", "candidates", "pool", "public"},
    ),
    "report": (
        ["report", "{ref}", "--out", "{out}/r.html"],
        {"benchmark", "selected", "scored", "candidates", "pool", "public"},
    ),
    "contamination": (
        ["contamination", "--benchmark", "{ref}"],
        {"benchmark", "selected", "scored", "candidates", "pool", "public"},
    ),
}


def _args(command: str, ref: str, tmp_path: Path) -> list[str]:
    template, _ = COMMANDS[command]
    return [a.format(ref=ref, out=tmp_path / "out") for a in template]


WRONG_KIND = [
    (command, table)
    for command, (_, right) in COMMANDS.items()
    for table in TABLES
    if table not in right
]
RIGHT_KIND = [
    (command, table) for command, (_, right) in COMMANDS.items() for table in sorted(right)
]


@pytest.mark.parametrize(("command", "table"), WRONG_KIND)
def test_wrong_kind_of_table_is_one_line(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, table: str
) -> None:
    rc = _main(lake.root, tmp_path, *_args(command, f"{table}@0", tmp_path))
    line = _one_error_line(capsys)
    assert rc == 2
    assert f"table '{table}' (version 0) is not " in line
    assert "missing column(s)" in line or "already has the output column(s)" in line
    if table == "no_category":
        assert "missing column(s) category" in line


@pytest.mark.parametrize(("command", "table"), RIGHT_KIND)
def test_right_kind_of_table_gets_past_the_checks(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, table: str
) -> None:
    with pytest.raises(Proceeded):
        _main(lake.root, tmp_path, *_args(command, f"{table}@0", tmp_path))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", [*COMMANDS, "show", "diff"])
@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("absent@0", "table 'absent' not found under "),
        ("benchmark@7", "table 'benchmark' has no version 7 (latest is 0)"),
        ("scored@7", "table 'scored' has no version 7 (latest is 0)"),
    ],
)
def test_missing_table_or_version_is_one_line(
    lake: Lake,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    ref: str,
    fragment: str,
) -> None:
    if command == "show":
        args = ["show", ref]
    elif command == "diff":
        args = ["diff", "benchmark@0", ref]
    else:
        args = _args(command, ref, tmp_path)
    rc = _main(lake.root, tmp_path, *args)
    line = _one_error_line(capsys)
    assert rc == 2
    assert fragment in line
    if "absent" in ref:
        assert str(lake.root) in line


def test_missing_table_without_version(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["history", "absent"],
        ["show", "absent"],
        ["evaluate", "--benchmark", "absent"],
        ["update", "--benchmark", "absent"],
        ["select", "--input", "absent"],
        ["export", "absent", "--out", str(tmp_path / "out")],
        ["judges", "--benchmark", "absent"],
        ["contamination", "--benchmark", "absent"],
    ):
        rc = _main(lake.root, tmp_path, *args)
        line = _one_error_line(capsys)
        assert rc == 2 and f"table 'absent' not found under {lake.root}" in line, args


def test_the_issue_example(lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = _main(lake.root, tmp_path, "evaluate", "--benchmark", "raw_pool@0", "--models", "a,b")
    assert rc == 2
    assert _one_error_line(capsys) == (
        "vlsafety: error: evaluate --benchmark raw_pool@0: table 'raw_pool' (version 0) "
        "is not a benchmark: missing column(s) candidate_id, category"
    )


def test_update_and_evaluate_name_the_other_tables_they_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``update`` draws replacements from ``scored`` and answers with the images."""
    partial = Lake(tmp_path / "partial")
    _write(partial, "benchmark", BENCHMARK_COLUMNS, ["candidate_id"])
    rc = _main(partial.root, tmp_path, "update", "--benchmark", "benchmark@0")
    assert rc == 2 and "table 'scored' not found" in _one_error_line(capsys)
    rc = _main(partial.root, tmp_path, "evaluate", "--benchmark", "benchmark@0")
    assert rc == 2 and "table 'images' not found" in _one_error_line(capsys)
    _write(partial, "scored", RAW_POOL_COLUMNS, [])  # not a scored pool
    rc = _main(partial.root, tmp_path, "update", "--benchmark", "benchmark@0")
    line = _one_error_line(capsys)
    assert rc == 2 and "table 'scored' (version 0) is not a scored pool" in line


def test_contamination_names_the_other_tables_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The public records (raw_pool, images) it compares with, and the contamination
    table it merges into."""
    partial = Lake(tmp_path / "partial")
    _write(partial, "benchmark", BENCHMARK_COLUMNS, ["candidate_id"])
    args = ["contamination", "--benchmark", "benchmark@0"]
    rc = _main(partial.root, tmp_path, *args)
    assert rc == 2 and "table 'raw_pool' not found" in _one_error_line(capsys)
    _write(partial, "raw_pool", RAW_POOL_COLUMNS, ["sample_id"])
    rc = _main(partial.root, tmp_path, *args)
    assert rc == 2 and "table 'images' not found" in _one_error_line(capsys)
    _write(partial, "images", IMAGE_COLUMNS, ["image_id"])
    _write(partial, "contamination", RAW_POOL_COLUMNS, ["sample_id"])  # not one
    rc = _main(partial.root, tmp_path, *args)
    line = _one_error_line(capsys)
    assert rc == 2 and "(merges into contamination)" in line
    assert "table 'contamination' (version 0) is not a contamination table" in line


def test_contamination_against_a_source_never_ingested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlsafety.ingest import SOURCES_SCHEMA

    lake = Lake(tmp_path / "lake")
    for name, (columns, keys) in TABLES.items():
        if name in ("benchmark", "raw_pool", "images"):
            _write(lake, name, columns, keys)
    row = {"source": "vlguard", "kind": "vlguard", "path": "/d/vlguard", "listed": 3}
    lake.write(
        pa.Table.from_pylist([{**row, "ingested_at": "2026-12-01T00:00:00+00:00"}], SOURCES_SCHEMA),
        "sources",
        "overwrite",
    )
    args = ["contamination", "--benchmark", "benchmark@0"]
    rc = _main(lake.root, tmp_path, *args, "--against", "figstep")
    line = _one_error_line(capsys)
    assert rc == 2 and "--against figstep: not an ingested source (ingested: vlguard)" in line
    with pytest.raises(Proceeded):  # a known source gets past the checks
        _main(lake.root, tmp_path, *args, "--against", "vlguard")


@pytest.mark.parametrize("table", sorted(set(TABLES) - {"leaderboard"}))
def test_diff_without_common_keys(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    # the leaderboard's keys (benchmark, model_id, ...) are in no other kind of table
    rc = _main(lake.root, tmp_path, "diff", f"{table}@0", "leaderboard@0")
    line = _one_error_line(capsys)
    assert rc == 2
    assert f"table '{table}' (version 0) has no key column(s)" in line
    assert "--key" in line


def test_diff_of_the_right_tables_gets_past_the_checks(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(Proceeded):
        _main(lake.root, tmp_path, "diff", "scored@0", "benchmark@0")


#: stage command -> the table it reads first
STAGE_COMMANDS: list[tuple[list[str], str]] = [
    (["preprocess"], "raw_pool"),
    (["generate"], "pool"),
    (["augment"], "candidates"),
    (["build", "--stages", "embed"], "candidates"),
    (["build", "--stages", "respond"], "candidates"),
    (["build", "--stages", "judge"], "candidates"),
    (["build", "--stages", "score,select"], "candidates"),
    (["build", "--stages", "select"], "scored"),
    (["--set", "build.sources=[]", "build"], "raw_pool"),
]


@pytest.mark.parametrize(("args", "table"), STAGE_COMMANDS)
def test_stage_without_its_input_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], table: str
) -> None:
    rc = _main(tmp_path / "empty", tmp_path, *args)
    line = _one_error_line(capsys)
    assert rc == 2
    assert f"table {table!r} not found under {tmp_path / 'empty'}" in line


@pytest.mark.parametrize(("args", "table"), STAGE_COMMANDS)
def test_stage_with_a_wrong_kind_of_input(
    mislabeled: Lake,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    table: str,
) -> None:
    rc = _main(mislabeled.root, tmp_path, *args)
    line = _one_error_line(capsys)
    assert rc == 2
    assert f"table {table!r} (version 0) is not " in line and "missing column(s)" in line


@pytest.mark.parametrize(
    "args",
    [
        ["preprocess"],
        ["generate"],
        ["augment"],
        ["build", "--stages", "select"],
        ["build"],  # the demo config's sources: ingest writes what the rest reads
    ],
)
def test_stage_with_its_inputs_gets_past_the_checks(
    lake: Lake, tmp_path: Path, args: list[str]
) -> None:
    with pytest.raises(Proceeded):
        _main(lake.root, tmp_path, *args)


def test_a_table_a_command_merges_into_must_be_of_its_kind(
    mislabeled: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found before the work whose rows the merge would then refuse."""
    (tmp_path / "m.jsonl").write_text("")
    rc = _main(mislabeled.root, tmp_path, "ingest", "--source", f"manifest:{tmp_path}/m.jsonl")
    line = _one_error_line(capsys)
    assert rc == 2
    assert "ingest (merges into raw_pool): table 'raw_pool' (version 0) is not a raw pool" in line
    partial = Lake(tmp_path / "partial")
    for name in ("benchmark", "images", "scored"):
        columns, keys = TABLES[name]
        _write(partial, name, columns, keys)
    _write(partial, "leaderboard", LEADERBOARD_COLUMNS, [])  # figures without their keys
    rc = _main(partial.root, tmp_path, "evaluate", "--benchmark", "benchmark@0")
    line = _one_error_line(capsys)
    assert rc == 2
    assert "(merges into leaderboard): table 'leaderboard' (version 0) is not a leaderboard" in line
    assert "missing column(s) benchmark, benchmark_version, panel" in line
    _write(partial, "responses", IMAGE_COLUMNS, [])
    rc = _main(partial.root, tmp_path, "update", "--benchmark", "benchmark@0")
    line = _one_error_line(capsys)
    assert rc == 2 and "table 'responses' (version 0) is not a responses table" in line


def test_ingest_into_tables_of_its_kind_gets_past_the_checks(lake: Lake, tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text("")
    with pytest.raises(Proceeded):
        _main(lake.root, tmp_path, "ingest", "--source", f"manifest:{tmp_path}/m.jsonl")


def test_kinds_are_what_their_writers_write() -> None:
    """The columns each kind needs are columns its writer writes."""
    from vlsafety.inference import TASKS

    def fields(task: str) -> set[str]:
        return {name for name, _ in TASKS[task].fields} | {TASKS[task].id_col}

    def needed(kind: kinds.Kind) -> set[str]:
        return {c if isinstance(c, str) else c[0] for c in kind.columns}

    assert needed(kinds.RAW_POOL) <= set(RAW_POOL_COLUMNS)
    assert needed(kinds.IMAGES) <= set(IMAGE_COLUMNS)
    assert needed(kinds.POOL) <= set(POOL_SCHEMA.names)
    assert needed(kinds.CANDIDATES) <= set(CANDIDATE_COLUMNS)
    assert needed(kinds.SCORED) <= set(SCORED)
    assert needed(kinds.BENCHMARK) <= set(BENCHMARK_COLUMNS)
    assert needed(kinds.SAMPLES) <= set(BENCHMARK_COLUMNS)
    assert needed(kinds.LEADERBOARD) == set(LEADERBOARD_KEYS)
    assert needed(kinds.JUDGE_AGREEMENT) <= set(AGREEMENT_COLUMNS)
    assert set(AGREEMENT_KEYS) <= needed(kinds.JUDGE_AGREEMENT)
    # model outputs: the request's ids plus the task's output fields
    assert needed(kinds.RESPONSES) <= {"request_key", "candidate_id"} | fields("chat")
    assert needed(kinds.JUDGMENTS) <= {"request_key"} | fields("guard")
    assert needed(kinds.CANDIDATE_EMBEDDINGS) <= {"candidate_id"} | fields("embed_pair")


def test_stage_inputs_are_what_no_earlier_stage_writes() -> None:
    assert kinds.stage_inputs(["ingest", "preprocess", "generate"]) == {}
    assert set(kinds.stage_inputs(["ingest", "preprocess"], has_sources=False)) == {
        "raw_pool",
        "images",
    }
    assert set(kinds.stage_inputs(["score", "select"])) == {
        "candidates",
        "candidate_embeddings",
        "responses",
        "judgments",
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "benchmark@x"], "show: bad table reference 'benchmark@x'"),
        (["evaluate", "--benchmark", "Bad-Name@0"], "evaluate --benchmark: bad table name"),
        (["select", "--input", "missing.parquet"], "select --input missing.parquet: file not"),
        (["build", "--stages", "embedd"], "build --stages: unknown stage(s) embedd"),
    ],
)
def test_bad_references_are_usage_errors(
    lake: Lake,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragment: str,
) -> None:
    rc = _main(lake.root, tmp_path, *args)
    assert rc == 2 and fragment in _one_error_line(capsys)


def test_parquet_input_of_the_wrong_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({c: ["x"] for c in RAW_POOL_COLUMNS}), path)
    rc = _main(tmp_path / "lake", tmp_path, "select", "--input", str(path))
    line = _one_error_line(capsys)
    assert rc == 2 and f"select --input {path} is not a scored pool" in line


def test_spark_analysis_error_is_one_line_as_a_last_resort(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.errors import AnalysisException

    def unresolved(*args: Any) -> int:
        raise AnalysisException(
            message="[UNRESOLVED_COLUMN] A column `candidate_id` cannot be resolved.\n'Project"
        )

    monkeypatch.setitem(cli._HANDLERS, "tables", unresolved)
    rc = _main(tmp_path / "lake", tmp_path, "tables")
    assert rc == 2
    assert _one_error_line(capsys) == (
        "vlsafety: error: tables: [UNRESOLVED_COLUMN] A column `candidate_id` cannot be resolved."
    )


def test_other_errors_still_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: Any) -> int:
        raise TypeError("a bug")

    monkeypatch.setitem(cli._HANDLERS, "tables", bug)
    with pytest.raises(TypeError):
        _main(tmp_path / "lake", tmp_path, "tables")


def test_judges_names_the_tables_it_reads_and_its_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Judgments, a judge_agreement table of another kind, and a bad labels file: one
    line each, before Spark."""
    partial = Lake(tmp_path / "partial")
    for name in ("benchmark", "responses"):
        _write(partial, name, *TABLES[name])
    rc = _main(partial.root, tmp_path, "judges", "--benchmark", "benchmark@0")
    assert rc == 2 and "table 'judgments' not found" in _one_error_line(capsys)
    _write(partial, "judgments", *TABLES["judgments"])
    _write(partial, "judge_agreement", LEADERBOARD_COLUMNS, [])
    rc = _main(partial.root, tmp_path, "judges", "--benchmark", "benchmark@0")
    line = _one_error_line(capsys)
    assert rc == 2 and "(merges into judge_agreement): table 'judge_agreement'" in line
    _write(partial, "judge_agreement", *TABLES["judge_agreement"])
    labels = tmp_path / "labels.csv"
    labels.write_text("request_key,harmful\nk,1\n")
    rc = _main(
        partial.root, tmp_path, "judges", "--benchmark", "benchmark@0", "--labels", str(labels)
    )
    assert rc == 2 and "no column 'label'" in _one_error_line(capsys)
    labels.write_text("request_key,label\nk,1\n")
    with pytest.raises(Proceeded):
        _main(
            partial.root, tmp_path, "judges", "--benchmark", "benchmark@0", "--labels", str(labels)
        )


FIGSTEP = Path(__file__).resolve().parents[2].parent / "shared" / "realbench" / "data" / "figstep"


@pytest.mark.parametrize("table", sorted(t for t in TABLES if t != "public"))
def test_as_benchmark_never_overwrites_another_kind(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    args = ["ingest", "--source", f"figstep:{FIGSTEP}", "--as-benchmark", table]
    rc = _main(lake.root, tmp_path, *args)
    line = _one_error_line(capsys)
    assert rc == 2
    assert f"ingest --as-benchmark {table} (merges into {table}): table '{table}'" in line
    assert "is not a public benchmark: missing column(s)" in line


def test_as_benchmark_rewrites_a_public_benchmark_or_makes_one(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("public", "fresh"):
        with pytest.raises(Proceeded):
            _main(
                lake.root,
                tmp_path,
                *["ingest", "--source", f"figstep:{FIGSTEP}", "--as-benchmark", name],
            )
        assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--as-benchmark", "bad name"], "ingest --as-benchmark bad name: "),
        (["--as-benchmark", "x", "--dry-run"], "--as-benchmark writes a table; drop --dry-run"),
        (["--as-benchmark", "x", "--limit", "0"], "ingest --limit: expected a positive number"),
    ],
)
def test_as_benchmark_usage_is_one_line(
    lake: Lake,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragment: str,
) -> None:
    rc = _main(lake.root, tmp_path, "ingest", "--source", f"figstep:{FIGSTEP}", *args)
    assert fragment in _one_error_line(capsys)
    assert rc == 2


def test_same_source_kind_twice_is_one_line(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # past the table checks the job itself refuses before any work: no Spark
    monkeypatch.setattr("vlsafety.cli._ctx", lambda cfg: None)
    rc = _main(
        lake.root,
        tmp_path,
        *["ingest", "--source", f"figstep:{FIGSTEP}", "--source", f"figstep:{FIGSTEP}/data"],
        *["--as-benchmark", "x"],
    )
    assert "source kind 'figstep' is given twice" in _one_error_line(capsys)
    assert rc == 2


def test_update_replace_outside_0_1_is_one_line(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _main(lake.root, tmp_path, "update", "--benchmark", "public@0", "--replace", "1.5")
    assert "update --replace: expected a share in [0, 1], got 1.5" in _one_error_line(capsys)
    assert rc == 2
