"""A small end-to-end lake: demo pool → build → evaluate, shared by the e2e tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class E2E:
    root: Path
    overrides: list[str]
    cfg: Any
    lake: Any
    build: Any
    #: the largest query-plan text of a Spark DataFrame each table was written from
    plan_chars: dict[str, int]

    def cli(self, *args: str) -> list[str]:
        out: list[str] = []
        for o in self.overrides:
            out += ["--set", o]
        return [*out, *args]


def e2e_overrides(root: Path, models_dir: Path) -> list[str]:
    """A small but complete configuration of the demo (every agent runs)."""
    return [
        f"lake.root={root / 'lake'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        "tracking.experiment=e2e",
        f"models.root={models_dir}",
        "models.victims=[tiny-llava,tiny-qwen2-vl,tiny-llama]",
        f'build.sources=["manifest:{root / "data" / "manifest.jsonl"}"]',
        "generate.methods=[flowchart,role_play]",
        "augment.origins=[original]",
        "select.n_max=12",
        "spark.progress_bar=false",
    ]


@pytest.fixture(scope="session")
def e2e(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path
) -> Iterator[E2E]:
    from vlsafety.config import load_config
    from vlsafety.ingest.demo_data import write_demo_data
    from vlsafety.lake import Lake
    from vlsafety.pipeline import build

    root = tmp_path_factory.mktemp("e2e")
    write_demo_data(root / "data", n=24, seed=3)
    overrides = e2e_overrides(root, tiny_models_dir)
    cwd = os.getcwd()
    os.chdir(REPO)  # conf/models/tiny.yaml is relative to the repo
    plan_chars: dict[str, int] = {}
    write = Lake.write

    def measured_write(self: Lake, data: Any, table: str, *args: Any, **kwargs: Any) -> int:
        if hasattr(data, "_jdf"):
            size = len(data._jdf.queryExecution().toString())
            plan_chars[table] = max(size, plan_chars.get(table, 0))
        return write(self, data, table, *args, **kwargs)

    try:
        cfg = load_config(REPO / "conf" / "demo.yaml", overrides)
        lake = Lake(cfg.lake.root, spark)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Lake, "write", measured_write)
            result = build(cfg, lake, command="e2e build")
        yield E2E(root, overrides, cfg, lake, result, plan_chars)
    finally:
        os.chdir(cwd)
