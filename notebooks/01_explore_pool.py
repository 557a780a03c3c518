# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the pool
# MAGIC Sources, categories and what the preprocessing agent rejected, from the lake.

# COMMAND ----------
import os

from vlsafety.config import load_config
from vlsafety.lake import Lake
from vlsafety.spark import get_spark

cfg = load_config(
    os.environ.get("VLSAFETY_CONF"),
    [f"lake.root={os.environ['VLSAFETY_LAKE']}"] if os.environ.get("VLSAFETY_LAKE") else [],
)
spark = get_spark(cfg.spark)
lake = Lake.from_config(cfg.lake, spark)
print("tables:", lake.tables())

# COMMAND ----------
pool = lake.read("pool")
print("pool rows:", pool.count())
by_cat = pool.groupBy("category").count().orderBy("category").toPandas()
print(by_cat.to_string(index=False))

# COMMAND ----------
by_source = lake.read("raw_pool").groupBy("source").count().toPandas()
print(by_source.to_string(index=False))

# COMMAND ----------
# MAGIC %md Every dropped row is in `rejects` with its stage and reason: nothing is lost.

# COMMAND ----------
rejects = (
    lake.read("rejects").groupBy("stage", "reason").count().orderBy("stage", "reason").toPandas()
)
print(rejects.to_string(index=False))
assert len(rejects) > 0
