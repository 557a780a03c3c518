"""Driver memory of the select stage: embeddings streamed vs. read with the table.

The build's select stage reads the ``scored`` table on the driver. The straightforward
way (the baseline, measured in the same run) reads every column, so the pool's
embeddings are held twice: as the Arrow column and as the selector's quantized matrix.
The streamed way (:func:`vlsafety.pipeline._build.read_for_selection`) reads every other
column, streams the embedding column batch by batch into the matrix and reads back only
the selected rows.

Each way runs in a fresh child process per size (peak RSS from ``getrusage``); both must
select the same samples in the same order. Uses the ``scored`` tables that
``bench/pipeline_scale.py`` leaves under ``.cache/scale-bench/lake-N``::

    .venv/bin/python bench/select_memory.py --sizes 30000,100000,300000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, resource, sys, time
from vlsafety.lake import Lake
from vlsafety.pipeline._build import read_for_selection
from vlsafety.selection import select_table
from vlsafety.taxonomy import load_taxonomy

way, root, n_max = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = Lake(root)
names = load_taxonomy("vlsb").names
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if way == "streamed":
    scored, embeddings = read_for_selection(lake, "scored")
else:
    scored, embeddings = lake.read_arrow("scored"), None
renames = {"candidate_id": "sample_id", "elite": "elite_scores"}
table = scored.rename_columns([renames.get(c, c) for c in scored.column_names])
del scored
t1 = time.perf_counter()
selected, summary = select_table(
    table, n_max=min(n_max, table.num_rows), category_names=names, embeddings=embeddings
)
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids = selected.column("sample_id").to_pylist()
emb = selected.column("embedding")
print(json.dumps({
    "n": table.num_rows,
    "read_s": t1 - t0,
    "select_s": t2 - t1,
    "peak_gb": peak / 2**20,
    "growth_gb": (peak - base) / 2**20,
    "ids": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
    "emb": hashlib.sha256(str(emb.to_pylist()).encode()).hexdigest(),
    "n_selected": len(ids),
}))
"""


def run(way: str, lake: Path, n_max: int) -> dict[str, float | str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, way, str(lake), str(n_max)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{way} on {lake} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float | str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="30000,100000,300000")
    p.add_argument("--work", default=str(ROOT / ".cache" / "scale-bench"))
    p.add_argument("--n-max", type=int, default=4000)
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        lake = Path(args.work) / f"lake-{n}"
        if not (lake / "scored").is_dir():
            raise SystemExit(f"{lake}/scored missing: run bench/pipeline_scale.py --sizes {n}")
        base = run("with-table", lake, args.n_max)
        new = run("streamed", lake, args.n_max)
        same = base["ids"] == new["ids"] and base["emb"] == new["emb"]
        rows.append({"n": n, "baseline": base, "streamed": new, "same_selection": same})
        print(
            f"N={n:>7}  driver peak {new['peak_gb']:.2f} GB (growth {new['growth_gb']:.2f})"
            f"  vs baseline {base['peak_gb']:.2f} GB (growth {base['growth_gb']:.2f})"
            f"  ratio {float(base['growth_gb']) / max(float(new['growth_gb']), 1e-9):.2f}x"
            f"  | read+select {float(new['read_s']) + float(new['select_s']):.2f} s"
            f" vs {float(base['read_s']) + float(base['select_s']):.2f} s"
            f"  | same selection: {same}",
            flush=True,
        )
        if not same:
            raise SystemExit("the two ways selected different samples")
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        for way in ("baseline", "streamed"):
            growth = float(hi[way]["peak_gb"]) - float(lo[way]["peak_gb"])
            print(f"{way}: driver peak growth N={lo['n']} -> {hi['n']}: {growth:.2f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
