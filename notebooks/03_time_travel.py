# Databricks notebook source
# MAGIC %md
# MAGIC # Benchmark versions: time travel and diff
# MAGIC Every build writes a new Delta version; each version records the MLflow run that made it.

# COMMAND ----------
import os

from vlsafety.config import load_config
from vlsafety.lake import Lake
from vlsafety.lake_diff import diff_versions
from vlsafety.spark import get_spark

cfg = load_config(
    os.environ.get("VLSAFETY_CONF"),
    [f"lake.root={os.environ['VLSAFETY_LAKE']}"] if os.environ.get("VLSAFETY_LAKE") else [],
)
spark = get_spark(cfg.spark)
lake = Lake.from_config(cfg.lake, spark)
table = cfg.build.benchmark_table

# COMMAND ----------
history = lake.history(table)
for h in history:
    print(h["version"], h["timestamp"], h["operation"], h["rows"], h["run_id"])

# COMMAND ----------
oldest, newest = history[-1]["version"], history[0]["version"]
print("rows at oldest version:", lake.read(table, version=oldest).count())
print("rows as of its timestamp:", lake.read(table, timestamp=history[-1]["timestamp"]).count())

# COMMAND ----------
d = diff_versions(lake, table, oldest, table, newest)
print({k: d[k] for k in ("old", "new", "added", "removed", "changed")})
