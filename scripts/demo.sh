#!/usr/bin/env bash
# The main job on the embedded default: tiny models, synthetic demo pool, local Spark,
# Delta tables under ./lake, MLflow in ./mlflow.db. Run again to refresh the benchmark:
# each run augments with a new seed and writes the next benchmark version.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vlsafety
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1

$V models make-tiny .cache/tiny-models
[ -f .cache/demo-data/manifest.jsonl ] || $V demo-data .cache/demo-data --n 300

# the n-th run (n = versions so far) augments with seed n: a refreshed candidate pool
RUN=$($V history benchmark --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
$V --set augment.seed="$RUN" build
$V evaluate --benchmark "benchmark@$RUN"
mkdir -p reports
$V report "benchmark@$RUN" --out "reports/benchmark-v$RUN.html"
$V history benchmark
if [ "$RUN" -gt 0 ]; then
  $V diff "benchmark@$((RUN - 1))" "benchmark@$RUN"
fi
echo
echo "report: reports/benchmark-v$RUN.html   MLflow: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"
