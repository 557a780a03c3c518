"""spark-submit entry point of the build job.

    spark-submit jobs/build_benchmark.py --conf conf/cluster.yaml [--set KEY=VALUE ...]

Same job as ``vlsafety build``. spark-submit's (or Databricks') master and settings win:
the config's ``spark.master`` is never given to the session builder here, and the
config only fills in settings the launcher left open (see :mod:`vlsafety.spark`). With a
non-local master the lake root must be one every executor sees (an object store,
``dbfs:/``, or a mount declared ``lake.shared: true``); a local root exits with status 2.

    spark-submit --master spark://host:7077 --driver-memory 4g \
        jobs/build_benchmark.py --conf conf/cluster.yaml --set lake.shared=true
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
