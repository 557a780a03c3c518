# Databricks notebook source
# MAGIC %md
# MAGIC # Build a benchmark
# MAGIC Runs the whole pipeline (ingest → … → select) as one MLflow run and writes a new
# MAGIC version of the `benchmark` table. On a cluster, point VLSAFETY_CONF at your config.

# COMMAND ----------
import os

from vlsafety.config import load_config
from vlsafety.lake import Lake
from vlsafety.pipeline import build
from vlsafety.spark import get_spark

cfg = load_config(
    os.environ.get("VLSAFETY_CONF"),
    [f"lake.root={os.environ['VLSAFETY_LAKE']}"] if os.environ.get("VLSAFETY_LAKE") else [],
)
spark = get_spark(cfg.spark)
lake = Lake.from_config(cfg.lake, spark)

# COMMAND ----------
result = build(cfg, lake, command="notebook 02_build")
for stage in result.stages:
    print(stage.as_dict())
print("benchmark version:", result.benchmark_version, "run:", result.run_id)

# COMMAND ----------
bench = lake.read(cfg.build.benchmark_table, version=result.benchmark_version)
bench.select("rank", "category", "strategy", "score", "c_sep", "c_harm", "c_div").orderBy(
    "rank"
).show(10, truncate=False)
