"""spark-submit entry point of the evaluate job.

spark-submit jobs/evaluate_models.py --conf conf/cluster.yaml --benchmark benchmark@3 --models a,b

As ``jobs/build_benchmark.py``: spark-submit's master and settings win over the config.
"""

from __future__ import annotations

import sys

from vlsafety.cli import main


def run(argv: list[str]) -> int:
    globals_, rest = [], list(argv)
    while rest and rest[0] in ("--conf", "--set", "--lake"):
        globals_ += rest[:2]
        rest = rest[2:]
    return main([*globals_, "evaluate", *rest])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
