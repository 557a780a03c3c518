"""A remote victim behind an OpenAI-compatible endpoint, as a user would run one.

The e2e lake is copied and built again with a fourth victim served by a local
chat-completions server that, by a hash of each request, answers, refuses (the API's
``refusal`` field), fails with 429 once, fails with 500 every time (echoing the caller's
Authorization header in its error body, as a careless proxy does), returns malformed JSON,
or stalls past the client's timeout. ``build``, ``evaluate`` and ``report`` run through the
CLI in a child process that holds the API key in its environment.

Checked: refusals are answers (``finish_reason`` refusal), transient errors are retried,
persistent ones are recorded with their reason and nothing is lost (every request is an
answer or an error row); and the key reaches the server but nothing we write: not the
lake (files and decoded rows), MLflow (params, tags, metrics, dataset inputs, artifacts,
the database), the job's output or the HTML report.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.openai_server import Behaviour, FakeServer, completion, reply, stall
from vlsafety.ingest.demo_data import write_demo_data
from vlsafety.lake import Lake

from .conftest import E2E, REPO, e2e_overrides

KEY_ENV = "VLSAFETY_E2E_REMOTE_KEY"
REMOTE = "remote-victim"
#: What the server does with a request, by a hash of its messages.
KINDS = ("answer", "answer", "refusal", "429-once", "500", "malformed", "timeout", "answer")


def kind_of(body: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    return KINDS[digest[0] % len(KINDS)]


class Remote:
    """The endpoint: deterministic per request, so a rerun meets the same behaviour."""

    def __init__(self) -> None:
        self.seen_429: set[str] = set()
        self.server = FakeServer(router=self.route)

    def route(self, body: dict[str, Any]) -> Behaviour:
        kind = kind_of(body)
        digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        if kind == "refusal":
            refused = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
            return reply(200, {"choices": [{"index": 0, "message": refused}]})
        if kind == "429-once" and digest not in self.seen_429:
            self.seen_429.add(digest)
            return reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if kind == "500":
            return echo_auth_500
        if kind == "malformed":
            return reply(200, b"{not json")
        if kind == "timeout":
            return stall(3.0)
        return reply(200, completion(f"Sure, step one: {digest[:12]}"))


def echo_auth_500(h: Any, req: dict[str, Any]) -> None:
    reply(500, {"error": {"message": f"upstream failed for {h.headers.get('Authorization')}"}})(
        h, req
    )


@pytest.fixture()
def remote() -> Iterator[Remote]:
    r = Remote()
    yield r
    r.server.close()


def _models_file(root: Path, models_dir: Path, endpoint: str) -> Path:
    tiny = yaml.safe_load((REPO / "conf" / "models" / "tiny.yaml").read_text())
    tiny["root"] = str(models_dir)
    tiny["models"].append(
        {
            "id": REMOTE,
            "role": "chat",
            "backend": "openai",
            "endpoint": endpoint,
            "model_name": "gpt-remote",
            "api_key_env": KEY_ENV,
            "retries": 1,
            "timeout": 1.0,
            "concurrency": 2,
            "max_tokens": 16,
            "options": {"backoff_s": 0.01, "max_backoff_s": 0.05},
        }
    )
    path = root / "models.yaml"
    path.write_text(yaml.safe_dump(tiny), encoding="utf-8")
    return path


CHILD = r"""
import json, sys
from vlsafety.cli import main
steps = json.loads(sys.argv[1])
codes = []
for argv in steps:
    codes.append(main(argv))
    print(f"== exit {codes[-1]} for {argv[-4:]}", flush=True)
sys.exit(max(codes))
"""


def test_remote_victim_errors_refusals_and_no_leaked_key(
    e2e: E2E, remote: Remote, tmp_path: Path, tiny_models_dir: Path
) -> None:
    key = "sk-vlsafety-" + secrets.token_hex(16)
    write_demo_data(tmp_path / "data", n=24, seed=3)  # the e2e pool: its stages are cached
    shutil.copytree(e2e.root / "lake", tmp_path / "lake")
    models = _models_file(tmp_path, tiny_models_dir, remote.server.url)
    sets = [
        *e2e_overrides(tmp_path, tiny_models_dir),
        f"models.file={models}",
        f"models.victims=[tiny-llava,tiny-qwen2-vl,tiny-llama,{REMOTE}]",
    ]
    base = [a for s in sets for a in ("--set", s)]
    report = tmp_path / "report.html"
    steps = [
        [*base, "build"],
        [*base, "evaluate", "--benchmark", "benchmark", "--models", f"{REMOTE},tiny-llama"],
        [*base, "report", "benchmark", "--out", str(report)],
    ]
    env = {**os.environ, KEY_ENV: key, "HF_HUB_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(steps)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    (tmp_path / "job.log").write_text(output)
    assert done.returncode == 0, output[-4000:]

    # -- the endpoint was used, with the key, and met every behaviour
    auth = {h.get("Authorization") for h in remote.server.headers}
    assert auth == {f"Bearer {key}"}
    kinds = {kind_of(b) for b in remote.server.requests}
    assert set(KINDS) <= kinds, kinds

    # -- nothing lost: each remote request is an answer or a recorded error
    lake = Lake(tmp_path / "lake")
    answers = lake.read_arrow("responses").to_pylist()
    remote_answers = {r["request_key"]: r for r in answers if r["model_id"] == REMOTE}
    errors = [r for r in lake.read_arrow("responses_errors").to_pylist() if REMOTE in json.dumps(r)]
    by_kind: dict[str, int] = {}
    for r in remote_answers.values():
        by_kind[r["finish_reason"]] = by_kind.get(r["finish_reason"], 0) + 1
    assert by_kind.get("refusal", 0) > 0 and by_kind.get("stop", 0) > 0, by_kind
    error_keys = {r["request_key"] for r in errors}
    assert error_keys and not error_keys & set(remote_answers)
    texts = " ".join(str(r.get("error")) for r in errors)
    for reason in ("HTTP 500", "timed out", "malformed JSON"):
        assert reason in texts, (reason, texts[:2000])
    assert "HTTP 429" not in texts  # retried, then answered
    assert "Bearer ***" in texts  # the echoed header, scrubbed
    # every distinct request sent is behind an answer or a recorded failure (candidates
    # with the same image and question send the same messages under their own keys)
    sent = {json.dumps(b["messages"], sort_keys=True) for b in remote.server.requests}
    assert len(set(remote_answers) | error_keys) >= len(sent) > 0

    # -- the key is nowhere we write
    hits = _find(key, tmp_path, lake, tmp_path / "mlflow.db")
    assert hits == [], hits[:20]


def _find(key: str, root: Path, lake: Lake, db: Path) -> list[str]:
    """Every place under ``root`` (raw bytes), in the lake's decoded rows and in MLflow's
    records where ``key`` appears."""
    hits = []
    needle = key.encode()
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(str(path))
    for table in lake.tables():
        rows = lake.read_arrow(table, track=False).to_pylist()
        if key in json.dumps(rows, default=str):
            hits.append(f"lake table {table}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            record = {
                "params": run.data.params,
                "tags": run.data.tags,
                "metrics": list(run.data.metrics),
                "inputs": [
                    (d.dataset.name, d.dataset.source, d.dataset.schema, d.dataset.profile)
                    for d in (run.inputs.dataset_inputs if run.inputs else [])
                ],
            }
            if key in json.dumps(record, default=str):
                hits.append(f"mlflow run {run.info.run_id}")
            # the run's artifacts where the local artifact store keeps them
            uri = run.info.artifact_uri
            local = Path(urlparse(uri).path) if uri.startswith("file:") else Path(uri)
            for path in local.rglob("*") if local.is_dir() else []:
                if path.is_file() and needle in path.read_bytes():
                    hits.append(f"artifact {path}")
    return hits
