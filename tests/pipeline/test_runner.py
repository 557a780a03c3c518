"""run_stage: counts must balance (in = out + rejected + filtered), in MLflow and on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vlsafety.config import load_config
from vlsafety.lake import Lake
from vlsafety.pipeline._runner import CountsMismatchError, run_stage
from vlsafety.tracking import track

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path) -> Any:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return load_config(
        REPO / "conf" / "demo.yaml", [f"tracking.uri={uri}", "tracking.experiment=runner"]
    )


def test_filtered_rows_balance_and_are_logged_apart_from_rejects(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    cfg = _cfg(tmp_path)
    lake = Lake(tmp_path / "lake", spark)
    with track(cfg, "vlsafety build", lake=lake) as parent:
        result = run_stage(
            "select",
            lambda rec: {"rows_in": 10, "rows_out": 3, "rejected": 2, "filtered": 5, "k": 1.5},
            cfg=cfg,
            lake=lake,
            parent=parent,
        )
    assert (result.rows_in, result.rows_out, result.rejected, result.filtered) == (10, 3, 2, 5)
    assert result.as_dict()["filtered"] == 5 and result.extra == {"k": 1.5}
    line = capsys.readouterr().err
    assert "[select    ] in=10" in line and "rejected=2" in line and "filtered=5" in line
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(parent.run_id).data.metrics
    assert (metrics["select.rejected"], metrics["select.filtered"]) == (2, 5)


def test_a_stage_without_filtered_rows_prints_none(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(tmp_path)
    lake = Lake(tmp_path / "lake", spark)
    result = run_stage(
        "judge", lambda rec: {"rows_in": 4, "rows_out": 4, "rejected": 0}, cfg=cfg, lake=lake
    )
    assert result.filtered == 0
    assert "filtered" not in capsys.readouterr().err


@pytest.mark.parametrize("counts", [(10, 3, 2, 4), (10, 3, 2, 6), (5, 6, 0, 0)])
def test_counts_that_do_not_balance_fail(
    spark: Any, tmp_path: Path, counts: tuple[int, int, int, int]
) -> None:
    cfg = _cfg(tmp_path)
    lake = Lake(tmp_path / "lake", spark)
    n_in, n_out, n_bad, n_filtered = counts
    with pytest.raises(CountsMismatchError, match="filtered"):
        run_stage(
            "select",
            lambda rec: {
                "rows_in": n_in,
                "rows_out": n_out,
                "rejected": n_bad,
                "filtered": n_filtered,
            },
            cfg=cfg,
            lake=lake,
        )
