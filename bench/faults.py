"""Kill anywhere, lose nothing: SIGKILL the demo build at seeded moments, rerun, check.

    .venv/bin/python bench/faults.py                          # 10 kills, seed 0
    .venv/bin/python bench/faults.py --kills 12 --seed 1 --json faults.json

The build (``python -m vlsafety ... build``, the e2e tests' demo configuration: the demo
pool n=24 seed 3, tiny random-weight models, every agent) runs in a child process in its
own process group. First one uninterrupted reference build: its duration, when each
stage ended (its progress line on stderr; start = end − the stage's duration) and the
writes it made per stage. Then, for each kill, on a fresh lake: start the build, send
SIGKILL to its whole process group at the planned moment, rerun the build to completion
and check it. Moments (seeded, spread over the stages):

* ``commit`` — inside a Delta commit: a watcher polls the lake and kills as soon as a
  table has staged data files its ``_delta_log`` does not reference yet (the
  ``index``-th such write of the stage). The kill *landed inside* when unreferenced data
  files were left behind.
* ``delay`` — a seeded delay after the stage started (the previous stage's progress
  line); in ``embed`` / ``respond`` / ``judge`` that is inside a model stage.

After each kill it records whether work was left (the benchmark not written; keys of
the reference run missing from each table). After each rerun it checks: the benchmark
equals the reference's (same candidate ids in the same order; every float column to
``--tol``, default 1e-9, and the max |Δ| reported: float32 kernels give last-bit
differences when a resumed run batches the remaining model requests differently, so it
also reports survival at :data:`F32_TOL`), no version of any table holds a key twice, every
version of every table is readable, each table holds the reference's keys, and each
stage's rows in = out + rejected + filtered (the rerun's ``--json``). Then it runs the
lake's garbage collection (``vlsafety gc``, no age limit): the files the kill staged and
never committed must all go, and the lake must read the same after it.

tests/e2e/test_resume.py runs the same machinery twice in one lake.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import vlsafety and tests from the repo
    sys.path.insert(0, str(ROOT))

from vlsafety.lake import Lake  # noqa: E402
from vlsafety.pipeline import BUILD_STAGES  # noqa: E402

#: The key of each table a build writes by merge (resume relies on them).
KEYS = {
    "images": "image_id",
    "raw_pool": "sample_id",
    "pool": "sample_id",
    "candidates": "candidate_id",
    "candidate_embeddings": "request_key",
    "responses": "request_key",
    "judgments": "request_key",
    "rejects": "reject_id",
}
MODEL_STAGES = ("embed", "respond", "judge")
#: float32 kernels give last-bit differences (~6e-8 on a probability) when a resumed run
#: batches the remaining model requests differently from an uninterrupted one; the same
#: happens between two uninterrupted runs that Spark partitions differently.
F32_TOL = 1e-6
_STAGE_LINE = re.compile(r"^\[(\w+)\s*\] in=")
_POLL_S = 0.02


# ------------------------------------------------------------------ watching a build
class LakeWatch:
    """Polls a lake folder for writes in flight: a ``data/<id>/`` folder (where
    :class:`vlsafety.lake.Lake` stages a write) holding parquet files that no version of
    the table's ``_delta_log`` references yet."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._refs: dict[str, set[str]] = {}
        self._parsed: dict[str, set[str]] = {}
        self.seen: set[tuple[str, str]] = set(self.unreferenced())

    def referenced(self, table: str) -> set[str]:
        """The ``data/<id>`` folders any committed version of ``table`` adds files from."""
        log = self.root / table / "_delta_log"
        refs = self._refs.setdefault(table, set())
        done = self._parsed.setdefault(table, set())
        try:
            names = sorted(p.name for p in log.iterdir() if p.name.endswith(".json"))
        except FileNotFoundError:
            return refs
        for name in names:
            if name in done:
                continue
            try:
                text = (log / name).read_text()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                add = json.loads(line).get("add") if line.strip() else None
                if add:
                    refs.add(add["path"].rsplit("/", 1)[0])
            done.add(name)
        return refs

    def _staged(self) -> list[tuple[str, str]]:
        out = []
        try:
            tables = [p for p in self.root.iterdir() if (p / "data").is_dir()]
        except FileNotFoundError:
            return []
        for t in tables:
            try:
                out += [(t.name, f"data/{d.name}") for d in (t / "data").iterdir() if d.is_dir()]
            except FileNotFoundError:
                continue
        return out

    def unreferenced(self) -> dict[tuple[str, str], int]:
        """Staged folders with parquet files and no commit, with their file counts. The
        folders are listed before the logs are read, so a folder reported here was not
        committed at the moment it was listed."""
        staged = self._staged()
        out = {}
        for table, rel in staged:
            if rel in self.referenced(table):
                continue
            n = sum(
                1
                for _, _, files in os.walk(self.root / table / rel)
                for f in files
                if f.endswith(".parquet")
            )
            if n:
                out[(table, rel)] = n
        return out

    def new_writes(self) -> list[tuple[str, str]]:
        """Writes in flight not reported before."""
        fresh = [k for k in self.unreferenced() if k not in self.seen]
        self.seen.update(fresh)
        return fresh


class LogWatch:
    """Reads a build's stderr as it grows: the stages that have finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._partial = ""
        self.done: list[str] = []

    def poll(self) -> list[str]:
        try:
            with self.path.open() as fh:
                fh.seek(self._pos)
                chunk = fh.read()
                self._pos = fh.tell()
        except FileNotFoundError:
            return []
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        ended = [m.group(1) for m in map(_STAGE_LINE.match, lines) if m]
        self.done += ended
        return ended

    @property
    def current(self) -> str | None:
        """The stage running now (None once the last one finished)."""
        left = [s for s in BUILD_STAGES if s not in self.done]
        return left[0] if left else None


@dataclass
class Trigger:
    """When to kill: inside the ``index``-th write of ``stage`` (``commit``), or
    ``delay_s`` seconds after ``stage`` started (``delay``; for ``ingest``, after launch)."""

    stage: str
    kind: Literal["commit", "delay"]
    index: int = 0
    delay_s: float = 0.0

    def describe(self) -> str:
        if self.kind == "commit":
            return f"{self.stage} write #{self.index}"
        return f"{self.stage} +{self.delay_s:.1f}s"


@dataclass
class Write:
    t: float  # seconds after launch the staged files were seen
    stage: str | None
    table: str
    folder: str


@dataclass
class Run:
    """One build process: how it ended, what the watcher saw."""

    returncode: int | None
    duration_s: float
    stage_ends: dict[str, float]
    writes: list[Write]
    result: dict[str, Any] | None  # the build's --json output (None when killed)
    killed_at: float | None = None
    killed_stage: str | None = None
    killed_write: Write | None = None
    stderr_tail: str = ""


def build_command(overrides: Sequence[str], *extra: str) -> list[str]:
    args: list[str] = []
    for o in overrides:
        args += ["--set", o]
    return [sys.executable, "-m", "vlsafety", *args, "build", "--json", *extra]


def _group_alive(pgid: int) -> list[int]:
    """Processes still in process group ``pgid`` (from /proc)."""
    alive = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(p.name))
    return alive


def run_build(
    cmd: Sequence[str],
    lake_root: Path,
    logs: Path,
    *,
    trigger: Trigger | None = None,
    timeout_s: float = 3600,
    env: dict[str, str] | None = None,
) -> Run:
    """Run the build command; with ``trigger``, SIGKILL its process group at that moment.

    The child runs in its own session (its JVM and Python workers share its process
    group), so ``os.killpg`` takes everything down at once, with no cleanup.
    """
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.json", logs / "stderr.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYSPARK_PYTHON": sys.executable,
        **(env or {}),
    }
    lake_w, log_w = LakeWatch(lake_root), LogWatch(err_path)
    writes: list[Write] = []
    ends: dict[str, float] = {}
    count = 0
    killed: tuple[float, Write | None] | None = None
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(cmd), cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            while True:
                finished = proc.poll() is not None
                now = time.monotonic() - started
                stage_before = log_w.current
                for s in log_w.poll():
                    ends[s] = now
                fresh = [Write(now, stage_before, t, f) for t, f in lake_w.new_writes()]
                writes += fresh
                if finished:
                    break
                if now > timeout_s:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise TimeoutError(f"build ran over {timeout_s:.0f}s: {err_path}")
                hit: Write | None = None
                fire = False
                if trigger is not None and trigger.kind == "commit":
                    order = BUILD_STAGES.index(trigger.stage)
                    for w in fresh:
                        at = BUILD_STAGES.index(w.stage) if w.stage else len(BUILD_STAGES)
                        count += at == order
                        if count > trigger.index or at > order:
                            hit, fire = w, True
                            break
                elif trigger is not None:
                    if trigger.stage == BUILD_STAGES[0]:
                        since = now
                    else:
                        prev = BUILD_STAGES[BUILD_STAGES.index(trigger.stage) - 1]
                        since = now - ends[prev] if prev in ends else -1.0
                    fire = since >= trigger.delay_s
                if fire:
                    with contextlib.suppress(ProcessLookupError):  # it may have just ended
                        os.killpg(proc.pid, signal.SIGKILL)
                    killed = (now, hit)
                    break
                time.sleep(_POLL_S)
        finally:
            if proc.poll() is None and killed is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for _ in range(50):  # the JVM and workers may take a moment to go
                if not _group_alive(proc.pid):
                    break
                time.sleep(0.1)
        duration = time.monotonic() - started
    result = None
    if killed is None and proc.returncode == 0:
        result = json.loads(out_path.read_text())
    tail = err_path.read_text()[-3000:]
    run = Run(proc.returncode, duration, ends, writes, result, stderr_tail=tail)
    if killed is not None:
        log_w.poll()  # a progress line printed just before the kill: the next stage ran
        run.killed_at, run.killed_write = killed
        run.killed_stage = log_w.current
    return run


# ------------------------------------------------------------------------ checks
def stage_windows(ref: Run) -> dict[str, tuple[float, float]]:
    """(start, end) of each stage in seconds after launch, from the reference run."""
    assert ref.result is not None
    durations = {s["stage"]: float(s["duration_s"]) for s in ref.result["stages"]}
    return {s: (ref.stage_ends[s] - durations[s], ref.stage_ends[s]) for s in BUILD_STAGES}


def key_diff(
    lake: Lake, ref: Lake, ref_version: Callable[[Lake, str], int | None] | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """Per table of :data:`KEYS`: how many of the reference lake's keys ``lake`` lacks
    (work a resumed build still has to do), and how many it has that the reference lacks.
    ``ref_version`` picks the reference's version of each table (default: the latest)."""
    missing, extra = {}, {}
    for table, key in KEYS.items():
        want = set()
        if ref.exists(table):
            want = _keys(ref, table, key, ref_version(ref, table) if ref_version else None)
        got = _keys(lake, table, key) if lake.exists(table) else set()
        missing[table], extra[table] = len(want - got), len(got - want)
    return missing, extra


def _keys(lake: Lake, table: str, key: str, version: int | None = None) -> set[Any]:
    col = lake.read_arrow(table, version=version, columns=[key], track=False).column(key)
    return set(col.to_pylist())


def orphans(lake_root: Path) -> dict[str, int]:
    """Staged data files no version of their table references, per table."""
    found: dict[str, int] = {}
    for (table, _), n in LakeWatch(lake_root).unreferenced().items():
        found[table] = found.get(table, 0) + n
    return found


def check_versions(lake: Lake) -> dict[str, Any]:
    """Every version of every table is readable and holds each declared key once."""
    unreadable: list[str] = []
    duplicates: list[str] = []
    n_versions = 0
    for table in lake.tables():
        keys = lake.keys(table) or ([KEYS[table]] if table in KEYS else [])
        for v in range(lake.version(table) + 1):
            n_versions += 1
            try:
                data = lake.read_arrow(table, version=v, track=False)
            except Exception as exc:  # a partial version: missing or torn files
                unreadable.append(f"{table}@{v}: {type(exc).__name__}: {exc}"[:200])
                continue
            if keys and data.num_rows:
                rows = list(zip(*(data.column(k).to_pylist() for k in keys), strict=True))
                if len(rows) != len(set(rows)):
                    duplicates.append(f"{table}@{v}")
    return {
        "tables": len(lake.tables()),
        "versions": n_versions,
        "unreadable": unreadable,
        "duplicates": duplicates,
    }


def unbalanced(result: dict[str, Any]) -> list[str]:
    """Stages of a build's --json output whose rows in != out + rejected + filtered."""
    return [
        f"{s['stage']}: {s['rows_in']} != {s['rows_out']} + {s['rejected']} + {s['filtered']}"
        for s in result["stages"]
        if s["rows_in"] != s["rows_out"] + s["rejected"] + s.get("filtered", 0)
    ]


def _numeric(col: Any) -> bool:
    import pyarrow as pa

    t = col.type
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return bool(pa.types.is_floating(t))


def _flat(values: list[Any]) -> list[float | None]:
    out: list[float | None] = []
    for v in values:
        if isinstance(v, list | tuple):
            out += _flat(list(v))
        else:
            out.append(v)
    return out


def compare_benchmark(got: Any, want: Any, tol: float = 1e-9) -> dict[str, Any]:
    """Two benchmark tables (pyarrow), each in rank order: the same candidate ids in the
    same order (``same_ids``, ``same_order``), every float column within ``tol``
    (``max_abs_delta`` over all of them, ``deltas`` per column, ``over_tol`` the columns
    beyond it) and every other column equal (``other_differing`` lists those that are not).
    ``equal`` when all hold."""
    got, want = (t.sort_by("rank") if "rank" in t.column_names else t for t in (got, want))
    ids_g = got.column("candidate_id").to_pylist()
    ids_w = want.column("candidate_id").to_pylist()
    out: dict[str, Any] = {
        "rows": len(ids_g),
        "same_ids": set(ids_g) == set(ids_w) and len(ids_g) == len(ids_w),
        "same_order": ids_g == ids_w,
        "max_abs_delta": 0.0,
        "deltas": {},
        "over_tol": [],
        "other_differing": [],
    }
    if not out["same_ids"]:
        out["equal"] = False
        return out
    # compare row by row in the reference's order (by id, so a reorder still shows deltas)
    at = {cid: i for i, cid in enumerate(ids_g)}
    got = got.take([at[c] for c in ids_w])
    for name in want.column_names:
        if name not in got.column_names:
            out["other_differing"].append(name)
            continue
        a, b = got.column(name), want.column(name)
        if not _numeric(b):
            if a.to_pylist() != b.to_pylist():
                out["other_differing"].append(name)
            continue
        fa, fb = _flat(a.to_pylist()), _flat(b.to_pylist())
        if len(fa) != len(fb) or any(
            (x is None) != (y is None) for x, y in zip(fa, fb, strict=True)
        ):
            out["other_differing"].append(name)
            continue
        delta = max(
            (abs(x - y) for x, y in zip(fa, fb, strict=True) if x is not None and y is not None),
            default=0.0,
        )
        if delta:
            out["deltas"][name] = delta
        out["max_abs_delta"] = max(out["max_abs_delta"], delta)
        if delta > tol:
            out["over_tol"].append(name)
    out["equal"] = matches(out, tol)
    return out


def matches(cmp: dict[str, Any], tol: float) -> bool:
    """A :func:`compare_benchmark` result: the same ids in the same order, every other
    column equal and every float within ``tol``."""
    return bool(
        cmp.get("same_ids")
        and cmp.get("same_order")
        and not cmp.get("other_differing")
        and cmp.get("max_abs_delta", float("inf")) <= tol
    )


@dataclass
class KillReport:
    """One kill and its rerun."""

    planned: str
    kind: str
    at_s: float | None = None
    stage: str | None = None  # the stage running when the kill landed
    table: str | None = None  # commit kills: the table being written
    inside_commit: bool = False  # unreferenced data files were left behind
    orphan_files: int = 0
    work_left: bool = False
    benchmark_written: bool = False
    missing: dict[str, int] = field(default_factory=dict)
    rerun_rc: int | None = None
    rerun_s: float = 0.0
    benchmark: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    missing_after: dict[str, int] = field(default_factory=dict)
    extra_after: dict[str, int] = field(default_factory=dict)
    unbalanced: list[str] = field(default_factory=list)
    gc_files: int = 0  # files `vlsafety gc` removed after the rerun (staged, never committed)
    orphans_after_gc: int = -1  # unreferenced data files left after it
    error: str = ""

    @property
    def survived(self) -> bool:
        """Every check passed, the benchmark's floats to the bench's tolerance."""
        return self.lake_ok and bool(self.benchmark.get("equal"))

    @property
    def survived_f32(self) -> bool:
        """Every check passed, the benchmark's floats to :data:`F32_TOL`."""
        return self.lake_ok and matches(self.benchmark, F32_TOL)

    @property
    def lake_ok(self) -> bool:
        """Every check but the benchmark's: rerun, versions, keys, counts."""
        return (
            self.rerun_rc == 0
            and not self.versions.get("unreadable")
            and not self.versions.get("duplicates")
            and not any(self.missing_after.values())
            and not any(self.extra_after.values())
            and not self.unbalanced
            and self.orphans_after_gc == 0
        )


def after_kill(
    run: Run,
    lake_root: Path,
    ref: Lake,
    before: dict[str, int],
    ref_version: Callable[[Lake, str], int | None] | None = None,
) -> KillReport:
    """What a kill left: did it land inside a commit, was work left."""
    lake = Lake(lake_root)
    left = orphans(lake_root)
    new = {t: n - before.get(t, 0) for t, n in left.items() if n > before.get(t, 0)}
    rep = KillReport(planned="", kind="")
    rep.at_s = run.killed_at
    rep.stage = run.killed_stage
    rep.table = run.killed_write.table if run.killed_write else None
    rep.orphan_files = sum(new.values())
    rep.inside_commit = bool(new) and (rep.table is None or rep.table in new)
    rep.benchmark_written = lake.exists("benchmark")
    rep.missing = key_diff(lake, ref, ref_version)[0]
    rep.work_left = run.killed_at is not None and (
        not rep.benchmark_written or any(rep.missing.values())
    )
    return rep


def check_rerun(
    rep: KillReport,
    run: Run,
    lake_root: Path,
    ref: Lake,
    ref_benchmark: Any,
    *,
    tol: float = 1e-9,
    ref_version: Callable[[Lake, str], int | None] | None = None,
) -> KillReport:
    """Fill ``rep`` with the checks of the rerun ``run`` against the reference."""
    rep.rerun_rc = run.returncode
    rep.rerun_s = run.duration_s
    if run.returncode != 0 or run.result is None:
        rep.error = run.stderr_tail[-600:]
        return rep
    lake = Lake(lake_root)
    rep.benchmark = compare_benchmark(lake.read_arrow("benchmark", track=False), ref_benchmark, tol)
    rep.versions = check_versions(lake)
    rep.missing_after, rep.extra_after = key_diff(lake, ref, ref_version)
    rep.unbalanced = unbalanced(run.result)
    # what the kill staged and never committed: `vlsafety gc` removes it, nothing else
    gc = lake.collect_garbage(older_than_s=0)
    rep.gc_files = gc.n_files
    rep.orphans_after_gc = sum(orphans(lake_root).values())
    after = compare_benchmark(lake.read_arrow("benchmark", track=False), ref_benchmark, tol)
    if after != rep.benchmark or check_versions(lake) != rep.versions:
        rep.error = "gc changed what the lake reads"
        rep.orphans_after_gc = max(rep.orphans_after_gc, 1)
    return rep


# -------------------------------------------------------------------------- plan
def plan_kills(ref: Run, n: int, seed: int) -> list[Trigger]:
    """``n`` seeded kill moments: every stage once (kind drawn at random; ``delay`` where
    the reference run saw no write in the stage), then the model stages and the others
    again with the other kind. ``commit`` picks one of the stage's writes at random,
    ``delay`` a moment between 10 % and 90 % of the stage's reference duration."""
    rng = random.Random(seed)
    windows = stage_windows(ref)
    writes = {s: sum(w.stage == s for w in ref.writes) for s in BUILD_STAGES}
    extra = [*MODEL_STAGES, *(s for s in BUILD_STAGES if s not in MODEL_STAGES)]
    order = list(BUILD_STAGES) + [extra[i % len(extra)] for i in range(max(0, n - 9))]
    last: dict[str, str] = {}
    plan: list[Trigger] = []
    for stage in order[:n]:
        if stage in last:
            kind = "delay" if last[stage] == "commit" else "commit"
        else:
            kind = rng.choice(["commit", "delay"])
        if kind == "commit" and not writes[stage]:
            kind = "delay"
        last[stage] = kind
        start, end = windows[stage]
        if kind == "commit":
            plan.append(Trigger(stage, "commit", index=rng.randrange(writes[stage])))
        else:
            f = rng.uniform(0.1, 0.9)
            delay = (start if stage == BUILD_STAGES[0] else 0.0) + f * (end - start)
            plan.append(Trigger(stage, "delay", delay_s=round(delay, 2)))
    return plan


# -------------------------------------------------------------------------- main
def prepare(root: Path, models_dir: Path) -> list[str]:
    """The demo pool under ``root/data`` and the e2e build's overrides for ``root``."""
    from tests.e2e.conftest import e2e_overrides
    from vlsafety.ingest.demo_data import write_demo_data

    write_demo_data(root / "data", n=24, seed=3)
    return e2e_overrides(root, models_dir)


def _fmt_table(reports: list[KillReport], tol: float) -> str:
    head = (
        f"{'#':>2}  {'planned':<20} {'killed in':<10} {'at s':>6}  {'table':<20} "
        f"{'in commit':<9} {'work left':<9} {'ids':<4} {'order':<5} {'max|Δ|':>8} "
        f"{'dup':>3} {'bad v':>5} {'keys':<4} {'bal':<4} {'gc':>4} {f'ok {tol:g}':<8} ok f32"
    )
    lines = [head, "-" * len(head)]

    def yes(flag: Any) -> str:
        return "yes" if flag else "no"

    for i, r in enumerate(reports):
        b, ran = r.benchmark, r.rerun_rc == 0
        keys_ok = ran and not any(r.missing_after.values()) and not any(r.extra_after.values())
        lines.append(
            f"{i:>2}  {r.planned:<20} {r.stage or '-':<10} "
            f"{(r.at_s if r.at_s is not None else float('nan')):6.1f}  {r.table or '-':<20} "
            f"{yes(r.inside_commit):<9} {yes(r.work_left):<9} "
            f"{yes(b.get('same_ids')):<4} {yes(b.get('same_order')):<5} "
            f"{b.get('max_abs_delta', float('nan')):8.1e} "
            f"{len(r.versions.get('duplicates', [])):>3} "
            f"{len(r.versions.get('unreadable', [])):>5} "
            f"{'ok' if keys_ok else 'BAD':<4} {'ok' if ran and not r.unbalanced else 'BAD':<4} "
            f"{r.gc_files if r.orphans_after_gc == 0 else 'BAD':>4} "
            f"{yes(r.survived):<8} {yes(r.survived_f32)}"
        )
    return "\n".join(lines)


def reference(work: Path, models_dir: Path, *, reuse: bool = False) -> Run:
    """The uninterrupted reference build under ``work/reference`` (its run is saved as
    ``run.json`` there; ``reuse`` takes a saved one instead of building again)."""
    ref_root = work / "reference"
    saved = ref_root / "run.json"
    if reuse and saved.is_file():
        raw = json.loads(saved.read_text())
        raw["writes"] = [Write(**w) for w in raw["writes"]]
        raw["killed_write"] = None
        return Run(**raw)
    shutil.rmtree(ref_root, ignore_errors=True)
    cmd = build_command(prepare(ref_root, models_dir))
    run = run_build(cmd, ref_root / "lake", ref_root / "logs")
    if run.returncode != 0 or run.result is None:
        sys.exit(f"reference build failed:\n{run.stderr_tail}")
    saved.write_text(json.dumps(asdict(run), default=str))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=10, help="kill moments (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-9, help="benchmark score tolerance")
    ap.add_argument("--models-dir", type=Path, help="tiny models (default: built under --work)")
    ap.add_argument("--work", type=Path, help="working folder (default: a temp folder)")
    ap.add_argument(
        "--reuse-reference",
        action="store_true",
        help="reuse the reference build kept under --work by an earlier --keep run",
    )
    ap.add_argument("--keep", action="store_true", help="keep the lakes")
    ap.add_argument("--json", type=Path, help="write the figures here (after each kill)")
    ap.add_argument("--report", type=Path, metavar="JSON", help="print a saved run's figures")
    args = ap.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        names = {f.name for f in fields(KillReport)}
        reports = [
            KillReport(**{k: v for k, v in r.items() if k in names}) for r in saved["results"]
        ]
        summarize(reports, saved["tol"])
        return
    if args.kills < 1:
        ap.error("--kills: must be >= 1")
    from vlsafety.models.tiny import make_tiny

    work = (args.work or Path(tempfile.mkdtemp(prefix="vlsafety-faults-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    models_dir = (args.models_dir or work / "tiny-models").resolve()
    make_tiny(models_dir)
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; work: {work}")

    ref_run = reference(work, models_dir, reuse=args.reuse_reference)
    windows = stage_windows(ref_run)
    print(f"reference build: {ref_run.duration_s:.1f} s, {len(ref_run.writes)} writes seen")
    for s, (a, b) in windows.items():
        n_w = sum(w.stage == s for w in ref_run.writes)
        print(f"  {s:<10} {a:6.1f} → {b:6.1f} s  {n_w} writes")
    ref_lake = Lake(work / "reference" / "lake")
    ref_bench = ref_lake.read_arrow("benchmark", track=False)

    plan = plan_kills(ref_run, args.kills, args.seed)
    reports: list[KillReport] = []

    def save() -> None:
        if not args.json:
            return
        figures = {
            "seed": args.seed,
            "kills": args.kills,
            "tol": args.tol,
            "load_average": os.getloadavg()[0],
            "reference": {
                "duration_s": ref_run.duration_s,
                "stages": {s: list(w) for s, w in windows.items()},
                "writes": [asdict(w) for w in ref_run.writes],
                "build": ref_run.result,
            },
            "plan": [asdict(t) for t in plan],
            "results": [
                {**asdict(r), "survived": r.survived, "survived_f32": r.survived_f32}
                for r in reports
            ],
            "survived": sum(r.survived for r in reports),
            "survived_f32": sum(r.survived_f32 for r in reports),
            "f32_tol": F32_TOL,
            "tried": len(reports),
        }
        args.json.write_text(json.dumps(figures, indent=2, default=str))

    for i, trig in enumerate(plan):
        root = work / f"kill-{i:02d}"
        shutil.rmtree(root, ignore_errors=True)
        cmd = build_command(prepare(root, models_dir))
        killed = run_build(cmd, root / "lake", root / "logs" / "killed", trigger=trig)
        rep = after_kill(killed, root / "lake", ref_lake, {})
        rep.planned, rep.kind = trig.describe(), trig.kind
        rerun = run_build(cmd, root / "lake", root / "logs" / "rerun")
        check_rerun(rep, rerun, root / "lake", ref_lake, ref_bench, tol=args.tol)
        reports.append(rep)
        save()
        print(
            f"kill {i}: {rep.planned} → killed in {rep.stage} at {rep.at_s or float('nan'):.1f} s"
            f" (inside commit: {rep.inside_commit}, work left: {rep.work_left}); rerun "
            f"{rep.rerun_s:.0f} s, max |Δ| {rep.benchmark.get('max_abs_delta', float('nan')):.1e}"
            f", survived: {rep.survived} (at {F32_TOL:g}: {rep.survived_f32})",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    survived = summarize(reports, args.tol)
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if survived == len(reports) else 1)


def summarize(reports: list[KillReport], tol: float) -> int:
    """Print the per-kill table and the totals; return the kills survived."""
    survived = sum(r.survived for r in reports)
    print()
    print(_fmt_table(reports, tol))
    print(
        f"\nkills survived / tried: {survived}/{len(reports)} (benchmark floats to {tol:g}); "
        f"{sum(r.survived_f32 for r in reports)}/{len(reports)} to {F32_TOL:g}\n"
        f"landed inside a commit: {sum(r.inside_commit for r in reports)}, "
        f"work left: {sum(r.work_left for r in reports)}, same order: "
        f"{sum(bool(r.benchmark.get('same_order')) for r in reports)}, max |Δscore|: "
        f"{max(r.benchmark.get('max_abs_delta', 0.0) for r in reports):.1e}\n"
        f"staged files the kills left: {sum(r.orphan_files for r in reports)}, removed by "
        f"`vlsafety gc`: {sum(r.gc_files for r in reports)}, unreferenced files after gc: "
        f"{sum(max(r.orphans_after_gc, 0) for r in reports)}"
    )
    return survived


if __name__ == "__main__":
    main()
