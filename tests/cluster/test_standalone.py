"""A real Spark cluster: a standalone master and one worker from pyspark's own jars.

``spark-submit --master spark://127.0.0.1:PORT jobs/build_benchmark.py`` builds the
benchmark on the cluster with the lake on a shared local path (``lake.shared: true``),
while ``vlsafety build`` builds the same config on ``local[*]`` in another process (the
suite's own SparkSession is left alone). The job must run on the master spark-submit
named, not on the config's ``local[*]``; both builds must select the same samples in the
same order; and without ``lake.shared`` the cluster job is refused with one line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
APP_NAME = "vlsafety-cluster-test"
#: A safety cap per process (a hung job fails the test instead of the CI run).
PROCESS_TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_"))}
    env.update(
        SPARK_HOME=str(_spark_home()),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a daemon and everything it started (its own process group)."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Standalone:
    url: str
    ui: str
    logs: Path

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.ui}/json", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
            for p in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """Master + one worker (2 cores, 2 GB) on 127.0.0.1; both stopped in a finalizer."""
    tmp = tmp_path_factory.mktemp("standalone")
    logs, work = tmp / "logs", tmp / "work"
    logs.mkdir()
    work.mkdir()
    spark_class = str(_spark_home() / "bin" / "spark-class")
    port, ui_port, worker_ui = _free_port(), _free_port(), _free_port()
    env = _env(SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false", SPARK_WORKER_DIR=str(work))
    cluster = Standalone(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", logs)
    commands = {
        "master": [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        "worker": [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            cluster.url,
            "--host",
            "127.0.0.1",
            "--cores",
            "2",
            "--memory",
            "2g",
            "--webui-port",
            str(worker_ui),
            "--work-dir",
            str(work),
        ],
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, cmd in commands.items():
            with (logs / f"{name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                    )
                )
        deadline = time.monotonic() + 180
        while True:
            if any(p.poll() is not None for p in procs):
                pytest.fail(f"a Spark daemon exited early:\n{cluster.tail()}")
            try:
                if any(w.get("state") == "ALIVE" for w in cluster.status().get("workers", [])):
                    break
            except OSError:
                pass  # the master's web UI is not up yet
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not register with the master:\n{cluster.tail()}")
            time.sleep(0.5)
        yield cluster
    finally:
        for proc in reversed(procs):
            _stop(proc)


@dataclass
class Builds:
    cluster: subprocess.CompletedProcess[str]
    local: subprocess.CompletedProcess[str]
    refused: subprocess.CompletedProcess[str]
    cluster_lake: Path
    local_lake: Path
    status: dict[str, Any]


def _write_config(root: Path, models_dir: Path) -> Path:
    """The smallest config that still runs every stage (as tests/e2e, fewer strategies)."""
    conf = {
        "spark": {
            "master": "local[*]",  # what spark-submit --master must override
            "app_name": APP_NAME,
            "driver_memory": "2g",
            "shuffle_partitions": 2,
            "progress_bar": False,
        },
        "tracking": {"experiment": "cluster"},
        "models": {
            "file": str(REPO / "conf" / "models" / "tiny.yaml"),
            "root": str(models_dir),
            "embedder": "tiny-clip",
            "generator": "tiny-qwen2-vl",
            "verifier": "tiny-llava",
            "victims": ["tiny-llava", "tiny-qwen2-vl", "tiny-llama"],
            "judges": ["tiny-llama-guard", "tiny-classifier", "tiny-refusal"],
            "evaluator": "tiny-llama",
        },
        "judges": {"elite": {"min_token_mass": 0.0}},  # as conf/demo.yaml: untrained judge
        "build": {"sources": [f"manifest:{root / 'data' / 'manifest.jsonl'}"]},
        "generate": {
            "strategies": ["modality_dependence"],
            "methods": ["flowchart"],
            "questions_per_strategy": 1,
        },
        "augment": {"origins": ["original"], "text_variants": 1, "image_variants": 1},
        "select": {"n_max": 6},
        "seed": 0,
    }
    path = root / "cluster.yaml"
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    return path


def _lake_args(root: Path, name: str, *extra: str) -> list[str]:
    args = [
        "--set",
        f"lake.root={root / name}",
        "--set",
        f"tracking.uri=sqlite:///{root / (name + '.db')}",
    ]
    for e in extra:
        args += ["--set", e]
    return args


@pytest.fixture(scope="module")
def builds(
    standalone: Standalone, tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path
) -> Builds:
    from vlsafety.cli import main

    root = tmp_path_factory.mktemp("cluster-build")
    models_dir = tiny_models_dir
    assert main(["demo-data", str(root / "data"), "--n", "24", "--seed", "3"]) == 0
    conf = _write_config(root, models_dir)

    # local[*], in its own process while the cluster builds
    local_cmd = [sys.executable, "-m", "vlsafety", "--conf", str(conf)]
    local_cmd += [*_lake_args(root, "local-lake"), "build"]
    with (root / "local.out").open("w+") as out, (root / "local.err").open("w+") as err:
        local = subprocess.Popen(
            local_cmd, cwd=REPO, env=_env(), stdout=out, stderr=err, start_new_session=True
        )
        try:
            submit = [
                str(_spark_home() / "bin" / "spark-submit"),
                "--master",
                standalone.url,
                "--driver-memory",
                "2g",
                "--executor-memory",
                "1g",
                "--conf",
                "spark.ui.enabled=false",
                "--conf",
                "spark.driver.host=127.0.0.1",
                str(REPO / "jobs" / "build_benchmark.py"),
                "--conf",
                str(conf),
            ]

            def run(*args: str) -> subprocess.CompletedProcess[str]:
                proc = subprocess.Popen(
                    [*submit, *args],
                    cwd=REPO,
                    env=_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # a timeout stops the driver and its workers too
                )
                try:
                    stdout, stderr = proc.communicate(timeout=PROCESS_TIMEOUT_S)
                finally:
                    _stop(proc)
                return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

            # a local lake root not declared shared: refused before any stage runs
            refused = run(*_lake_args(root, "refused-lake", "lake.shared=false"))
            cluster = run(*_lake_args(root, "cluster-lake", "lake.shared=true"))
            local.wait(timeout=PROCESS_TIMEOUT_S)
        finally:
            _stop(local)
        out.seek(0)
        err.seek(0)
        local_done = subprocess.CompletedProcess(
            local_cmd, local.returncode, out.read(), err.read()
        )

    # the master lists an application once its driver has stopped
    deadline = time.monotonic() + 60
    status = standalone.status()
    while len(status.get("completedapps", [])) < 2 and time.monotonic() < deadline:
        time.sleep(1)
        status = standalone.status()
    return Builds(cluster, local_done, refused, root / "cluster-lake", root / "local-lake", status)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    """What the job printed: spark-submit relays the Python driver's stderr to its stdout."""
    return f"{proc.stdout}\n{proc.stderr}"


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def test_job_ran_on_the_standalone_master(builds: Builds, standalone: Standalone) -> None:
    assert builds.cluster.returncode == 0, _explain(builds.cluster) + standalone.tail()
    # spark-submit's master won over the config's local[*]
    assert f"Spark master: {standalone.url} (from the launcher" in _output(builds.cluster)
    finished = [a for a in builds.status.get("completedapps", []) if a.get("name") == APP_NAME]
    assert finished, json.dumps(builds.status, indent=1)[:3000]
    assert all(a.get("state") == "FINISHED" for a in finished)
    assert not [a for a in builds.status.get("activeapps", []) if a.get("name") == APP_NAME]


def test_cluster_benchmark_equals_local_benchmark(builds: Builds) -> None:
    from vlsafety.lake import Lake

    assert builds.cluster.returncode == 0, _explain(builds.cluster)
    assert builds.local.returncode == 0, _explain(builds.local)
    columns = ["rank", "candidate_id", "parent_sample_id", "image_id", "text", "category"]
    on_cluster = Lake(builds.cluster_lake).read_arrow("benchmark", columns=columns)
    on_local = Lake(builds.local_lake).read_arrow("benchmark", columns=columns)
    assert on_cluster.num_rows == on_local.num_rows > 0
    cluster_rows = on_cluster.sort_by("rank").to_pylist()
    local_rows = on_local.sort_by("rank").to_pylist()
    assert [r["candidate_id"] for r in cluster_rows] == [r["candidate_id"] for r in local_rows]
    assert cluster_rows == local_rows


def test_local_lake_on_a_cluster_is_refused_with_one_line(builds: Builds) -> None:
    assert builds.refused.returncode == 2, _explain(builds.refused)
    printed = _output(builds.refused)
    ours = [line for line in printed.splitlines() if line.startswith("vlsafety:")]
    assert len(ours) == 1 and ours[0].startswith("vlsafety: error: lake.root:"), ours
    assert "lake.shared" in ours[0] and "Traceback" not in printed
    assert not (builds.cluster_lake.parent / "refused-lake").exists()
