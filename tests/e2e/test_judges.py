"""`vlsafety judges` on the e2e lake: the current judgments of the build's panel, human
labels from a side file, the judge_agreement table and the report's judge section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsafety.cli import main

from .conftest import E2E

PANEL = "tiny-llava,tiny-qwen2-vl,tiny-llama"


def test_judges_command_on_the_e2e_lake(
    e2e: E2E, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "human" labels: the refusal judge's own decisions, keyed by (candidate, model) —
    # that judge must then align perfectly, which only holds if the join is right
    judg = e2e.lake.read_arrow(
        "judgments", columns=["candidate_id", "model_id", "judge_id", "p_unsafe"]
    ).to_pandas()
    ref = judg[(judg["judge_id"] == "tiny-refusal") & judg["p_unsafe"].notna()]
    ref = ref.drop_duplicates(["candidate_id", "model_id"])
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "\n".join(
            json.dumps({"candidate_id": c, "model": m, "label": int(p >= 0.5)})
            for c, m, p in zip(ref["candidate_id"], ref["model_id"], ref["p_unsafe"], strict=True)
        )
    )
    args = ["judges", "--benchmark", "benchmark@0", "--models", PANEL, "--labels", str(labels)]
    assert main(e2e.cli(*args, "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    fig = {(f["group"], f["metric"], f["rater"]): f["value"] for f in result["figures"]}
    print(json.dumps({"/".join(k): v for k, v in fig.items() if k[0] == "overall"}, indent=1))
    n_items = fig[("overall", "n_items", "")]
    assert 0 < n_items <= 12 * 3  # one item per current response of the 3 models
    assert 0 < fig[("overall", "n_complete", "")] <= n_items
    kappa = fig[("overall", "fleiss_kappa", "")]
    assert kappa != kappa or -1.0 <= kappa <= 1.0  # NaN when every judge gives one class
    assert ("overall", "cohen_kappa", "tiny-llama-guard|tiny-refusal") in fig
    assert fig[("overall", "n_labelled", "tiny-refusal")] > 0
    assert fig[("overall", "n_labels_unmatched", "")] > 0  # labels of non-benchmark samples
    # both classes among the benchmark's labelled items: the refusal judge is the labeller
    assert fig[("overall", "auc", "tiny-refusal")] == 1.0
    assert fig[("overall", "f1", "tiny-refusal")] == 1.0
    rows = e2e.lake.read_arrow("judge_agreement").to_pandas()
    assert len(rows[rows["run_id"] == result["run_id"]]) == len(result["figures"])

    from vlsafety.pipeline._report import _judge_report
    from vlsafety.report import ReportData

    data = ReportData(title="b")
    _judge_report(e2e.lake, "benchmark", 0, data)
    assert data.judges is not None and len(data.judges) == len(result["figures"])
    assert "tiny-refusal" in data.judges_caption
