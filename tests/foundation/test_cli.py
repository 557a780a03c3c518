from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from vlsafety.cli import main
from vlsafety.lake import Lake

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def filled(tmp_path: Path) -> Path:
    lake = Lake(tmp_path / "lake")
    lake.write(
        pa.table({"id": ["a", "b", "c"], "v": [1, 2, 3], "img": [b"x", b"yy", b"z"]}),
        "bench",
        "merge",
        keys=["id"],
    )
    lake.write(
        pa.table({"id": ["c", "d"], "v": [30, 4], "img": [b"z", b"w"]}), "bench", "overwrite"
    )
    return tmp_path / "lake"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_tables_history_show(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "--lake", str(filled), "tables", "--json")
    assert rc == 0
    assert [t["table"] for t in json.loads(out)] == ["bench"]
    rc, out, _ = _run(capsys, "--lake", str(filled), "history", "bench", "--json")
    hist = json.loads(out)
    assert [h["version"] for h in hist] == [1, 0]
    assert hist[0]["operation"] == "OVERWRITE"
    rc, out, _ = _run(capsys, "--lake", str(filled), "show", "bench@0", "--json")
    shown = json.loads(out)
    assert shown["version"] == 0 and shown["rows"] == 3
    assert shown["data"][1]["img"] == "<2 bytes>"
    rc, out, _ = _run(capsys, "--lake", str(filled), "show", "bench", "--limit", "1")
    assert rc == 0 and "(1 of 2 rows; bench@1)" in out


def test_diff_by_key(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "--lake", str(filled), "diff", "bench@0", "bench@1", "--json")
    assert rc == 0
    d = json.loads(out)
    assert (d["added"], d["removed"], d["changed"]) == (1, 2, 1)
    assert d["keys"] == ["id"]
    assert [r["id"] for r in d["examples"]["added"]] == ["d"]
    assert sorted(r["id"] for r in d["examples"]["removed"]) == ["a", "b"]
    assert d["examples"]["changed"] == [{"id": "c", "changes": {"v": [3, 30]}}]
    assert d["changed_columns"] == {"v": 1}  # img of "c" is the same in both versions
    rc, out, _ = _run(capsys, "--lake", str(filled), "diff", "bench@0", "bench@1")
    assert rc == 0
    assert "changed columns: v (1)" in out
    assert "~ id=c  v: 3 -> 30" in out
    assert "+ id=d  v=4" in out


@pytest.mark.parametrize(
    ("args", "fragment", "code"),
    [
        (["--set", "select.n_max=abc", "tables"], "select.n_max: expected an integer", 2),
        (["--set", "nope.key=1", "tables"], "nope: unknown key", 2),
        (["--conf", "missing.yaml", "tables"], "missing.yaml: config file not found", 2),
        (["frobnicate"], "invalid choice", 2),
        (["history", "Bad-Name"], "bad table name", 2),
        (["show", "bench@x"], "must be an integer", 2),
        (["history", "absent"], "not found", 2),
    ],
)
def test_errors_are_one_line(
    filled: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str, code: int
) -> None:
    rc, out, err = _run(capsys, "--lake", str(filled), *args)
    assert rc == code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vlsafety: error:") and fragment in lines[0]


def test_console_entry_point_runs(filled: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vlsafety", "--lake", str(filled), "tables"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bench" in proc.stdout


def test_select_reads_a_scored_lake_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lake table names its ids and ELITE scores as the build writes them
    (candidate_id, elite); select reads them as sample_id and elite_scores."""
    root = tmp_path / "lake"
    n = 6
    scored = pa.table(
        {
            "candidate_id": [f"c{i}" for i in range(n)],
            "category": ["a", "b"] * 3,
            "embedding": pa.array([[1.0, float(i)] for i in range(n)], pa.list_(pa.float32())),
            "p_h": [0.5, 0.4, 0.6, 0.2, 0.5, 0.9],
            "harm": [0.9, 0.1, 0.5, 0.7, 0.3, 0.6],
            "elite": pa.array([[12.0, 14.0, 3.0]] * n, pa.list_(pa.float64())),
        }
    )
    Lake(root).write(scored, "scored", "overwrite", keys=["candidate_id"])
    base = ["--lake", str(root), "--set", "tracking.enabled=false", "select"]
    rc, out, err = _run(capsys, *base, "--input", "scored@0", "--n-max", "2", "--json")
    assert rc == 0, err
    assert json.loads(out)["n_selected"] == 2
    rc, out, err = _run(capsys, *base, "--input", "scored", "--mode", "elite-filter", "--json")
    assert rc == 0, err
    assert json.loads(out)["n_selected"] == n  # two votes of three reach the threshold
