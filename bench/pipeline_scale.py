"""The scale path at three pool sizes: ingest → preprocess → embed → score → select.

    .venv/bin/python bench/pipeline_scale.py                      # 30K, 100K, 300K
    .venv/bin/python bench/pipeline_scale.py --sizes 2000 --no-baseline   # a quick look

For each size N it writes a synthetic demo pool (``vlsafety demo-data --n N``: distinct
prompts, synthetic images, planted exact / near / semantic duplicates and broken files,
``planted.json``), then runs the pipeline's own stage functions on local Spark with a
fresh lake:

* ingest — :func:`vlsafety.ingest.run_ingest` (manifest → ``images``, ``raw_pool``);
* preprocess — :func:`vlsafety.preprocess.run_preprocess` (filters, exact / near dedup,
  categorization; no embedder: the tiny CLIP is untrained, so semantic dedup and CLIP
  votes would be skipped anyway and pool embeddings are not needed downstream);
* embed — :func:`vlsafety.pipeline._model_stages.embed_candidates` with ``tiny-clip-768``
  (open_clip, random weights, 768-d) over the pool as candidates;
* score — :func:`vlsafety.pipeline._score.score_frames` with a synthetic panel (3 victims ×
  3 judges, probabilities from a hash of the ids: no chat models);
* select — :func:`vlsafety.selection.select_table` (Algorithm 1, N_max = 4000) over the
  scored table read through Arrow.

It prints per stage: seconds, rows/s, driver peak RSS of the Python process and of the
JVM (in local mode the JVM also runs the executor threads, so its figure is an upper
bound of the driver's), and the dedup recall on the plants. With ``--baseline REF`` it
runs ingest + preprocess of the code at git ``REF`` (default: the last commit before
the scale-out) in a child process at the sizes where it still runs, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "675dfca"  # main before the scale-out (driver-bound preprocess)


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


class PeakSampler:
    """Samples the RSS of the given processes every ``period`` seconds."""

    def __init__(self, pids: dict[str, int | str], period: float = 0.1) -> None:
        self.pids = pids
        self.period = period
        self.peak = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for k, pid in self.pids.items():
                self.peak[k] = max(self.peak[k], rss_mb(pid))
            self._stop.wait(self.period)

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        self.peak = {k: rss_mb(p) for k, p in self.pids.items()}
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        out: dict[str, float] = {}
        try:
            yield out
        finally:
            self._stop.set()
            self._thread.join()
            out.update(self.peak)


def timed(
    sampler: PeakSampler, rows: Callable[[Any], int], fn: Callable[[], Any]
) -> tuple[Any, dict[str, float]]:
    t0 = time.perf_counter()
    with sampler.measure() as peak:
        result = fn()
    seconds = time.perf_counter() - t0
    n = rows(result)
    return result, {"s": seconds, "rows": n, "rows_per_s": n / seconds if seconds else 0.0, **peak}


def dedup_recall(lake: Any, data_dir: Path) -> dict[str, Any]:
    """Per level, the share of planted duplicates caught: the copy or its original was
    dropped as a duplicate (``found``), and at the planted level (``at_level``).
    Semantic plants can only be caught by a trusted embedder (not the tiny one)."""
    planted = json.loads((data_dir / "planted.json").read_text())
    rows = (
        lake.read("rejects")
        .where("stage = 'preprocess' and reason like 'duplicate_%'")
        .select("source_ref", "reason")
        .collect()  # the duplicates only: a pair list's worth of rows
    )
    dropped = {int(r["source_ref"].rsplit("line ", 1)[-1]): r["reason"] for r in rows}
    out: dict[str, Any] = {}
    for level in ("exact", "near", "semantic"):
        plants = [p for p in planted.get("duplicate", []) if p.get("level") == level]
        if not plants:
            continue
        found = at_level = 0
        for p in plants:
            hit = [dropped.get(p["line"]), dropped.get(p["of_line"])]
            found += any(h is not None for h in hit)
            at_level += f"duplicate_{level}" in hit
        out[level] = {
            "planted": len(plants),
            "found": found,
            "at_level": at_level,
            "recall": found / len(plants),
        }
    return out


def run_current(n: int, data_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np  # noqa: F401 - imported before Spark starts

    from vlsafety.config import SparkConfig
    from vlsafety.ingest import IngestOptions, run_ingest
    from vlsafety.lake import Lake
    from vlsafety.models import load_model_specs
    from vlsafety.preprocess import PreprocessOptions, run_preprocess
    from vlsafety.spark import get_spark

    spark = get_spark(
        SparkConfig(
            master=args.master,
            app_name="vlsafety-scale-bench",
            driver_memory=args.driver_memory,
            shuffle_partitions=args.partitions,
            progress_bar=False,
            conf=dict(kv.split("=", 1) for kv in args.spark_conf),
        )
    )
    jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())  # type: ignore[union-attr]
    sampler = PeakSampler({"py_mb": "self", "jvm_mb": jvm_pid})
    lake_root = work / f"lake-{n}"
    shutil.rmtree(lake_root, ignore_errors=True)
    lake = Lake(lake_root, spark)
    specs = load_model_specs(args.models_yaml)
    embedder = specs[args.embedder]
    stages: dict[str, dict[str, float]] = {}
    manifest = data_dir / "manifest.jsonl"

    counts, stages["ingest"] = timed(
        sampler,
        lambda c: int(c.get("listed", 0)),
        lambda: run_ingest(spark, lake, [f"manifest:{manifest}"], IngestOptions()),
    )
    pre, stages["preprocess"] = timed(
        sampler,
        lambda c: int(c["pending"]),
        lambda: run_preprocess(spark, lake, PreprocessOptions(), embedder=None, verifier=None),
    )
    stages["preprocess"]["kept"] = pre["kept"]
    recall = dedup_recall(lake, data_dir)

    from pyspark.sql import functions as F

    from vlsafety.pipeline._model_stages import embed_candidates
    from vlsafety.pipeline._score import score_frames

    candidates = lake.read("pool").select(
        F.col("sample_id").alias("candidate_id"), "image_id", "text", "category"
    )
    _, stages["embed"] = timed(
        sampler,
        lambda got: int(got["computed"]),
        lambda: embed_candidates(lake, candidates, embedder),
    )

    victims = ["victim-a", "victim-b", "victim-c"]
    judges = ["judge-a", "judge-b", "judge-c"]

    def score() -> int:
        cells = candidates.select("candidate_id").crossJoin(
            spark.createDataFrame(
                [(m, j) for m in victims for j in judges], "model_id string, judge_id string"
            )
        )
        # a synthetic panel: each model is harmful on its own share of the candidates
        judgments = cells.withColumn(
            "p_unsafe",
            (F.abs(F.xxhash64("candidate_id", "model_id")) % 1000 / 1000.0 * 0.7)
            + (F.abs(F.xxhash64("candidate_id", "judge_id")) % 300 / 1000.0),
        )
        emb = lake.read("candidate_embeddings").select("candidate_id", "embedding")
        responses = candidates.select("candidate_id").crossJoin(
            spark.createDataFrame([(m,) for m in victims], "model_id string")
        )
        scored, rejects = score_frames(
            candidates, responses, judgments, emb, victims=victims, judges=judges
        )
        lake.write(scored, "scored", "overwrite", keys=["candidate_id"])
        return lake.read("scored").count()

    _, stages["score"] = timed(sampler, lambda k: int(k), score)

    def select() -> int:
        from vlsafety.pipeline._build import read_for_selection
        from vlsafety.selection import select_table
        from vlsafety.taxonomy import load_taxonomy

        # as the build's select stage: the embeddings stream into the selector's matrix
        scored, embeddings = read_for_selection(lake, "scored")
        cols = ["candidate_id", "category", "p_h", "harm"]
        table = scored.select(cols).rename_columns(["sample_id", "category", "p_h", "harm"])
        del scored
        selected, summary = select_table(
            table,
            n_max=min(args.n_max, table.num_rows),
            category_names=load_taxonomy("vlsb").names,
            embeddings=embeddings,
        )
        lake.write(selected, "benchmark", "overwrite", keys=["sample_id"])
        return int(table.num_rows)

    _, stages["select"] = timed(sampler, lambda k: int(k), select)
    spark.catalog.clearCache()
    return {
        "n": n,
        "stages": stages,
        "recall": recall,
        "counts": {"ingest": counts, "preprocess": pre},
    }


BASELINE_CHILD = r"""
import json, sys, time, threading, re, shutil
from pathlib import Path
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(Path(sys.argv[5]).parent))
from pipeline_scale import PeakSampler
from vlsafety.config import SparkConfig
from vlsafety.ingest import IngestOptions, run_ingest
from vlsafety.lake import Lake
from vlsafety.preprocess import PreprocessOptions, run_preprocess
from vlsafety.spark import get_spark
manifest, lake_root, out = sys.argv[2], sys.argv[3], sys.argv[4]
spark = get_spark(SparkConfig(master="local[2]", app_name="baseline", driver_memory="6g",
                              shuffle_partitions=8, progress_bar=False))
jvm = int(spark.sparkContext._jvm.ProcessHandle.current().pid())
sampler = PeakSampler({"py_mb": "self", "jvm_mb": jvm})
shutil.rmtree(lake_root, ignore_errors=True)
lake = Lake(lake_root, spark)
res = {}
for name, fn in (
    ("ingest", lambda: run_ingest(spark, lake, [f"manifest:{manifest}"], IngestOptions())),
    ("preprocess", lambda: run_preprocess(spark, lake, PreprocessOptions())),
):
    t0 = time.perf_counter()
    with sampler.measure() as peak:
        c = fn()
    res[name] = {"s": time.perf_counter() - t0, **peak,
                 "rows": int(c.get("listed", c.get("pending", 0)))}
    Path(out).write_text(json.dumps(res))
"""


def run_baseline(n: int, data_dir: Path, work: Path, ref: str, timeout: int) -> dict[str, Any]:
    tree = work / f"baseline-{ref}"
    if not tree.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
            check=True,
            capture_output=True,
        )
    out = work / f"baseline-{n}.json"
    out.unlink(missing_ok=True)
    child = work / "baseline_child.py"
    child.write_text(BASELINE_CHILD)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    try:
        proc = subprocess.run(
            [
                sys.executable,
                str(child),
                str(tree),
                str(data_dir / "manifest.jsonl"),
                str(work / f"baseline-lake-{n}"),
                str(out),
                str(Path(__file__).resolve()),
            ],
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        status = (
            "ok"
            if proc.returncode == 0
            else f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        )
    except subprocess.TimeoutExpired:
        status = f"did not finish in {timeout} s"
    res = json.loads(out.read_text()) if out.exists() else {}
    return {"status": status, "stages": res}


def fmt_row(name: str, s: dict[str, float]) -> str:
    return (
        f"  {name:<11} {s['s']:8.1f} s  {s['rows']:>8} rows  {s['rows_per_s']:9.0f} rows/s  "
        f"driver py {s['py_mb']:7.0f} MB  jvm {s['jvm_mb']:7.0f} MB"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="30000,100000,300000")
    p.add_argument("--work", default=str(ROOT / ".cache" / "scale-bench"))
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="3g")
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--n-max", type=int, default=4000)
    p.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark setting, e.g. spark.eventLog.enabled=true (repeatable)",
    )
    p.add_argument("--models-yaml", default=None)
    p.add_argument("--embedder", default="tiny-clip-768")
    p.add_argument("--baseline", default=BASELINE_REF)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--baseline-sizes", default="30000,100000")
    p.add_argument("--baseline-timeout", type=int, default=1200)
    p.add_argument("--json", default=None, help="write all figures to this file")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.models_yaml is None:  # built in a child: the driver's RSS is the pipeline's
        subprocess.run(
            [sys.executable, "-m", "vlsafety", "models", "make-tiny", str(work / "tiny-models")],
            check=True,
            capture_output=True,
        )
        args.models_yaml = str(work / "tiny-models" / "models.yaml")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    base_sizes = (
        set() if args.no_baseline else {int(s) for s in args.baseline_sizes.split(",") if s}
    )
    results: list[dict[str, Any]] = []
    for n in sizes:
        data_dir = work / f"data-{n}"
        t0 = time.perf_counter()
        if not (data_dir / "planted.json").exists():
            shutil.rmtree(data_dir, ignore_errors=True)
            # in a child, like make-tiny: the driver's RSS is then the pipeline's alone
            subprocess.run(
                [sys.executable, "-m", "vlsafety", "demo-data", str(data_dir), "--n", str(n)]
                + ["--seed", "0"],
                check=True,
                capture_output=True,
            )
        gen_s = time.perf_counter() - t0
        res = run_current(n, data_dir, work, args)
        res["demo_data_s"] = gen_s
        if n in base_sizes:
            res["baseline"] = run_baseline(n, data_dir, work, args.baseline, args.baseline_timeout)
        results.append(res)
        print(f"\nN = {n:,}  (demo-data {gen_s:.0f} s)", flush=True)
        total = 0.0
        for name, s in res["stages"].items():
            print(fmt_row(name, s), flush=True)
            total += s["s"]
        print(f"  {'total':<11} {total:8.1f} s", flush=True)
        for level, r in res["recall"].items():
            print(
                f"  recall {level:<8} {r['found']}/{r['planted']} = {r['recall']:.3f}", flush=True
            )
        if "baseline" in res:
            b = res["baseline"]
            print(f"  baseline {args.baseline}: {b['status']}", flush=True)
            for name, s in b["stages"].items():
                cur = res["stages"][name]
                print(
                    f"    {name:<11} {s['s']:8.1f} s  driver py {s['py_mb']:7.0f} MB  "
                    f"jvm {s['jvm_mb']:7.0f} MB   (now / before: time {cur['s'] / s['s']:.2f}x, "
                    f"driver py {cur['py_mb'] / s['py_mb']:.2f}x)",
                    flush=True,
                )
    if len(results) > 1:
        first, last = results[0], results[-1]
        grow = max(s["py_mb"] for s in last["stages"].values()) - max(
            s["py_mb"] for s in first["stages"].values()
        )
        print(
            f"\ndriver Python peak grows {grow:.0f} MB from N={first['n']:,} to N={last['n']:,}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
