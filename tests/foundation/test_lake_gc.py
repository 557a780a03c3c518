"""`Lake.collect_garbage` / `vlsafety gc`: what killed writes leave is removed, nothing
any table version reads is touched."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlsafety.cli import main
from vlsafety.lake import Lake

DAY = 24 * 3600


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in [folder, *folder.rglob("*")]:
        os.utime(p, (then, then))


def _killed_stage(lake: Lake, table: str, rows: pa.Table) -> Path:
    """What a write killed after staging and before its commit leaves."""
    stage = Path(lake.path(table)) / "data" / uuid.uuid4().hex
    stage.mkdir(parents=True)
    pq.write_table(rows, stage / "part-00000.parquet")
    (stage / "_SUCCESS").write_bytes(b"")
    return stage


def _all_versions(lake: Lake, table: str) -> list[list[tuple]]:
    return [
        sorted(zip(*lake.read_arrow(table, version=v).to_pydict().values(), strict=True))
        for v in range(lake.version(table) + 1)
    ]


@pytest.fixture
def littered(tmp_path: Path) -> tuple[Lake, dict[str, Path]]:
    lake = Lake(tmp_path / "lake")
    lake.write(pa.table({"id": ["a", "b"], "x": [1, 2]}), "t", "append", keys=["id"])
    lake.write(pa.table({"id": ["c"], "x": [3]}), "t", "merge", keys=["id"])
    lake.write(pa.table({"id": ["z"], "x": [9]}), "t", "overwrite", keys=["id"])  # removes
    lake.write(pa.table({"k": [1]}), "u", "append", keys=["k"])
    old = _killed_stage(lake, "t", pa.table({"id": ["d"], "x": [4]}))
    young = _killed_stage(lake, "u", pa.table({"k": [2]}))
    scratch = Path(lake.root) / "_staging" / f"preprocess-{uuid.uuid4().hex}" / "001-part"
    scratch.mkdir(parents=True)
    pq.write_table(pa.table({"y": [1.0]}), scratch / "part-0.parquet")
    for p in (Path(lake.path("t")), Path(lake.path("u"))):
        _age(p, 2 * DAY)  # committed files as old as the orphans: age alone decides nothing
    _age(old, 2 * DAY)
    _age(scratch.parent, 2 * DAY)
    (young / "part-00000.parquet").touch()  # just staged
    return lake, {"old": old, "young": young, "scratch": scratch.parent}


def test_removes_only_unreferenced_old_folders(littered) -> None:
    lake, paths = littered
    before = {t: _all_versions(lake, t) for t in ("t", "u")}
    committed = sorted(p for p in Path(lake.root).rglob("*.parquet") if "_delta_log" not in str(p))

    dry = lake.collect_garbage(dry_run=True)
    assert dry.stages == [f"t/data/{paths['old'].name}"]
    assert dry.scratch == [f"_staging/{paths['scratch'].name}"]
    assert dry.young == 1 and dry.n_files == 3  # stage parquet + _SUCCESS, scratch parquet
    assert paths["old"].exists() and paths["scratch"].exists()

    rep = lake.collect_garbage()
    assert rep.stages == dry.stages and rep.scratch == dry.scratch
    assert not paths["old"].exists() and not paths["scratch"].exists()
    assert paths["young"].exists()  # a writer may still commit it
    # every version of every table still reads the same (removed files of version 0/1 too)
    assert {t: _all_versions(lake, t) for t in ("t", "u")} == before
    left = sorted(p for p in Path(lake.root).rglob("*.parquet") if "_delta_log" not in str(p))
    gone = (paths["old"], paths["scratch"])
    assert left == [p for p in committed if not any(g in p.parents for g in gone)]
    assert lake.collect_garbage().stages == []  # idempotent

    # with no age limit the young orphan goes too, still nothing referenced
    assert lake.collect_garbage(older_than_s=0).stages == [f"u/data/{paths['young'].name}"]
    assert {t: _all_versions(lake, t) for t in ("t", "u")} == before


def test_checkpointed_tables_keep_their_files(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    lake = Lake(tmp_path / "lake")
    for i in range(3):
        lake.write(pa.table({"id": [str(i)], "x": [i]}), "t", "merge", keys=["id"])
    DeltaTable(lake.path("t")).create_checkpoint()
    # a checkpoint stands in for the commits before it: drop them, as log cleanup would
    for name in ("00000000000000000000.json", "00000000000000000001.json"):
        (Path(lake.path("t")) / "_delta_log" / name).unlink()
    orphan = _killed_stage(lake, "t", pa.table({"id": ["q"], "x": [7]}))
    rep = lake.collect_garbage(older_than_s=0)
    assert rep.stages == [f"t/data/{orphan.name}"]
    assert sorted(lake.read_arrow("t").column("id").to_pylist()) == ["0", "1", "2"]


def test_gc_command(littered, capsys) -> None:
    lake, paths = littered
    assert main(["--lake", lake.root, "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 unreferenced stage folder(s) and 1 scratch folder(s)" in out
    assert f"t/data/{paths['old'].name}" in out and "kept 1 folder(s) younger than 24 h" in out
    assert paths["old"].exists()
    assert main(["--lake", lake.root, "gc", "--older-than-hours", "0"]) == 0
    assert "removed 2 unreferenced stage folder(s)" in capsys.readouterr().out
    assert not paths["old"].exists() and not paths["young"].exists()
    assert main(["--lake", lake.root, "gc", "--older-than-hours", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--older-than-hours must be >= 0" in err[0]
