"""Stage-level GPU scheduling on a local-cluster with a fake GPU.

The cluster runs in a separate Python process (its own SparkSession) so the shared
``local[2]`` test session is untouched. The discovery script reports one GPU at address
"0"; only the stage's ResourceProfile asks for it (no default task GPU amount), so a task
that sees address "0" proves the profile was applied. The stage's default task count is
two per GPU slot: one executor with one GPU gives two tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from vlsafety.config import SparkConfig
    from vlsafety.executor import task_count
    from vlsafety.inference import run_inference
    from vlsafety.models import ModelSpec, Resources
    from vlsafety.spark import get_spark

    discovery = sys.argv[1]
    spark = get_spark(SparkConfig(
        master="local-cluster[1,2,1024]",
        app_name="vlsafety-gpu-test",
        driver_memory="1g",
        shuffle_partitions=2,
        progress_bar=False,
        conf={
            "spark.worker.resource.gpu.amount": "1",
            "spark.worker.resource.gpu.discoveryScript": discovery,
            "spark.executor.resource.gpu.amount": "1",
            "spark.executor.memory": "512m",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
        },
    ))
    spec = ModelSpec(id="refusal-on-gpu", role="guard", backend="refusal", device="cuda",
                     resources=Resources(cpus=1, gpus=1))
    df = spark.createDataFrame(
        [("a", "p", "I'm sorry"), ("b", "p", "Sure, here"), ("c", "p", "ok")],
        "request_id string, prompt string, response string",
    ).repartition(2)
    rows = [r.asDict() for r in run_inference(df, spec, "guard").collect()]
    print("RESULT " + json.dumps({"rows": rows, "tasks": task_count(spark, spec)}))
    spark.stop()
    """
)


def test_task_sees_the_gpu_its_profile_requested(tmp_path: Path) -> None:
    discovery = tmp_path / "gpus.sh"
    discovery.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0"]}\'\n')
    discovery.chmod(0o755)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(discovery)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["tasks"] == 2
    rows = {r["request_id"]: r for r in result["rows"]}
    assert {r["gpu"] for r in rows.values()} == {"0"}
    assert (rows["a"]["p_unsafe"], rows["b"]["p_unsafe"]) == (0.0, 1.0)
    assert rows["a"]["judge_id"] == "refusal-on-gpu"
