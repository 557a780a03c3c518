# Databricks notebook source
# MAGIC %md
# MAGIC # Leaderboard and plots
# MAGIC Per-category and overall (micro-average) ASR of the evaluated models on a pinned
# MAGIC benchmark version, and the HTML report with the paper's figures.

# COMMAND ----------
import os

from vlsafety.config import load_config
from vlsafety.lake import Lake
from vlsafety.pipeline import write_report
from vlsafety.spark import get_spark

cfg = load_config(
    os.environ.get("VLSAFETY_CONF"),
    [f"lake.root={os.environ['VLSAFETY_LAKE']}"] if os.environ.get("VLSAFETY_LAKE") else [],
)
spark = get_spark(cfg.spark)
lake = Lake.from_config(cfg.lake, spark)
table = cfg.build.benchmark_table

# COMMAND ----------
board = lake.read("leaderboard").toPandas()
latest = board["benchmark_version"].max()
board = board[(board["benchmark"] == table) & (board["benchmark_version"] == latest)]
print(
    board[board["category"] == "overall"][
        ["model_id", "n", "n_refused", "n_unjudged", "asr", "sr", "n_elite", "e_asr", "elite_mean"]
    ].to_string(index=False)
)
print(board.pivot_table(index="model_id", columns="category", values="asr").round(3).to_string())

# COMMAND ----------
out = os.environ.get("VLSAFETY_REPORT", "reports/notebook-report.html")
path = write_report(cfg, lake, f"{table}@{latest}", out)
print("report:", path)
