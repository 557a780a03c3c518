"""Where the real benchmark subsets live, and what each metadata file holds, counted
straight from the files (csv / json / pyarrow) — independently of the adapters.

The data stays in ``shared/`` next to the repository (CI clones the repo with ``../shared``
beside it); it is never copied into the repo.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "realbench" / "data"


def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"the real benchmark subsets are missing: expected {DATA} (../shared)")
    return DATA


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def json_entries(path: Path) -> list[dict[str, object]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(data.values()) if isinstance(data, dict) else list(data)


def parquet_rows(*paths: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def expected_records(kind: str, path: Path) -> int:
    """How many benchmark records the source holds, by the benchmark's own semantics."""
    if kind == "figstep":
        csv_path = path if path.is_file() else path / "data" / "question" / "safebench.csv"
        return len(csv_rows(csv_path))
    if kind == "mm-safetybench":
        files = sorted((path / "data" / "processed_questions").glob("*.json"))
        return 3 * sum(len(json_entries(f)) for f in files)  # SD, SD_TYPO, TYPO
    if kind == "vlsbench":
        return len(json_entries(path / "data.json"))
    if kind == "mllmguard":
        n = 0
        for f in sorted(path.glob("*/prompt.csv")):
            rows = csv_rows(f)
            n += len(rows) + sum(1 for r in rows if r.get("Reverse Image"))  # two images
        return n
    if kind == "elite":
        csvs = sorted(path.rglob("*.csv"))
        if csvs:
            return sum(len(csv_rows(f)) for f in csvs)
        return parquet_rows(*sorted(path.rglob("*.parquet")))
    if kind == "siuo":
        return len(json_entries(path if path.is_file() else path / "siuo_gen.json"))
    if kind == "jailbreakv":
        return len(csv_rows(path / "JailBreakV_28K.csv"))
    if kind == "vlguard":
        splits = [path / n for n in ("train.json", "test.json") if (path / n).is_file()]
        return sum(len(e["instr-resp"]) for f in splits for e in json_entries(f))  # type: ignore[arg-type]
    if kind == "spa-vl":
        return parquet_rows(*sorted(path.rglob("*.parquet")))
    raise AssertionError(f"no expectation for {kind}")


#: The published MLLMGuard dimensions (one ``<dimension>/prompt.csv`` each).
MLLMGUARD_DIMENSIONS = (
    "bias",
    "hallucination",
    "legality",
    "noise-injection",
    "position-swapping",
    "privacy",
    "toxicity",
)

#: (kind, path under DATA, files read, files skipped) for every folder of the subsets.
CASES: list[tuple[str, str, set[str], set[str]]] = [
    (
        "figstep",
        "figstep",
        {"data/question/safebench.csv"},
        {
            "data/question/SafeBench-Tiny.csv",
            "data/question/benign_sentences_without_harmful_phase.csv",
        },
    ),
    ("figstep", "figstep/data/question/safebench.csv", {"data/question/safebench.csv"}, set()),
    (
        "mm-safetybench",
        "mm-safetybench",
        {
            f"data/processed_questions/{p.name}"
            for p in (DATA / "mm-safetybench" / "data" / "processed_questions").glob("*.json")
        },
        set(),
    ),
    ("vlsbench", "vlsbench", {"data.json"}, set()),
    (
        "mllmguard",
        "mllmguard/desensitize",
        {f"{d}/prompt.csv" for d in MLLMGUARD_DIMENSIONS},
        set(),
    ),
    (
        "mllmguard",
        "mllmguard-hf-layout/desensitize",
        {f"{d}/prompt.csv" for d in MLLMGUARD_DIMENSIONS},
        {
            "bias/fr.csv",
            "hallucination/fr.csv",
            "legality/fr.csv",
            "noise-injection/ar.csv",
            "position-swapping/fr.csv",
            "privacy/ar.csv",
            "toxicity/arabic.csv",
        },
    ),
    ("elite", "elite", {"ELITE/ELITE-benchmark.csv"}, set()),
    ("elite", "elite-flat-images", {"ELITE/ELITE-benchmark.csv"}, set()),
    (
        "elite",
        "elite-hf",
        {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"},
        set(),
    ),
    ("siuo", "siuo/data", {"siuo_gen.json"}, {"siuo_mcqa.json"}),
    ("siuo", "siuo/data/siuo_gen.json", {"siuo_gen.json"}, set()),
    (
        "jailbreakv",
        "jailbreakv/JailBreakV_28K",
        {"JailBreakV_28K.csv"},
        {"mini_JailBreakV_28K.csv", "RedTeam_2K.csv"},
    ),
    ("vlguard", "vlguard", {"train.json", "test.json"}, set()),
    ("vlguard", "vlguard-github-data", {"test.json"}, {"gpt4_safe_safes.json"}),
    (
        "spa-vl",
        "spa-vl",
        {
            "data/train-00000-of-00008.parquet",
            "test/harm-00000-of-00001.parquet",
            "test/help-00000-of-00001.parquet",
            "validation/validation-00000-of-00001.parquet",
        },
        set(),
    ),
]


def case_id(case: tuple[str, str, set[str], set[str]]) -> str:
    return f"{case[0]}:{case[1]}"
