"""spark-submit entry point of the build job.

    spark-submit jobs/build_benchmark.py --conf conf/cluster.yaml [--set KEY=VALUE ...]

Same job as ``vlsafety build``: the active SparkSession (created by spark-submit or
Databricks) is used, so cluster settings come from spark-submit / the cluster.
"""

from __future__ import annotations

import sys

from vlsafety.cli import main


def run(argv: list[str]) -> int:
    """Global options (``--conf``, ``--set``, ``--lake``) then ``build`` and its options."""
    globals_, rest = [], list(argv)
    while rest and rest[0] in ("--conf", "--set", "--lake"):
        globals_ += rest[:2]
        rest = rest[2:]
    return main([*globals_, "build", *rest])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
