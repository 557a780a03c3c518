from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from vlsafety.config import load_config
from vlsafety.lake import Lake
from vlsafety.tracking import track

REPO = Path(__file__).resolve().parents[2]


def test_run_records_config_tables_and_links_back(spark, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(
        REPO / "conf" / "demo.yaml",
        [
            f"tracking.uri={uri}",
            "tracking.experiment=t",
            "lake.storage_options.AWS_SECRET_ACCESS_KEY=hush",
        ],
    )
    lake = Lake(tmp_path / "lake", spark)
    lake.write(pa.table({"id": ["a"]}), "src", "append")
    with track(cfg, "vlsafety test --x", lake=lake) as rec:
        lake.read("src").count()
        version = lake.write(pa.table({"id": ["b", "c"]}), "out", "append")
        rec.log_counts("stage", rows_in=3, rows_out=2, rejected=1)
        with track(cfg, "stage-a", lake=lake, nested=True) as child:
            lake.write(pa.table({"id": ["d"]}), "out", "append")
            child.log_metrics({"n": 1})
        run_id = rec.run_id
    assert run_id is not None
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["select.n_max"] == str(cfg.select.n_max)
    assert run.data.params["lake.root"] == "lake"
    assert not any("hush" in v for v in run.data.params.values())
    assert not any("storage_options" in k for k in run.data.params)
    assert run.data.tags["delta.read.src"].endswith("src@v0")
    # the tag names the last version written during the run, nested stages included
    assert run.data.tags["delta.write.out"].endswith(f"out@v{version + 1}")
    assert run.data.metrics["stage.rows_in"] == 3
    assert run.data.metrics["stage.rows_out"] + run.data.metrics["stage.rejected"] == 3
    contexts = {
        (d.dataset.name, inp.value)
        for d in run.inputs.dataset_inputs
        for inp in d.tags
        if inp.key == "mlflow.data.context"
    }
    assert ("src", "input") in contexts and ("out", "output") in contexts
    # the Delta commit carries the run id back
    hist = lake.history("out")
    assert hist[-1]["run_id"] == run_id
    assert hist[-1]["command"] == "vlsafety test --x"
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert len(children) == 1
    assert hist[0]["run_id"] == children[0].info.run_id
    assert hist[0]["command"] == "vlsafety test --x"  # the job's command, on a stage's commit
    assert hist[0]["metadata"]["stage"] == "stage-a"
    assert mlflow.active_run() is None


def test_disabled_tracking_still_stamps_commands(spark, tmp_path: Path) -> None:
    cfg = load_config(REPO / "conf" / "demo.yaml", ["tracking.enabled=false"])
    lake = Lake(tmp_path / "lake", spark)
    with track(cfg, "vlsafety offline", lake=lake) as rec:
        lake.write(pa.table({"id": ["a"]}), "t", "append")
        rec.log_metrics({"ignored": 1.0})
    assert rec.run_id is None
    assert rec.tables["write"] == {"t": 0}
    assert lake.history("t")[0]["command"] == "vlsafety offline"


def test_delta_inputs_are_logged_by_path_and_version_without_a_spark_job(
    spark, tmp_path: Path
) -> None:
    """Tracking reads the Delta log only: no Spark job (mlflow.data.from_spark profiled the
    DataFrame, and collected every key of a map column), and the experiment is classic."""
    import json

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(REPO / "conf" / "demo.yaml", [f"tracking.uri={uri}", "tracking.experiment=e"])
    lake = Lake(tmp_path / "lake", spark)
    labels = pa.array([[("k", "v")], [("a", "b")]], pa.map_(pa.string(), pa.string()))
    lake.write(
        pa.table({"id": ["a", "b"], "labels": labels, "vec": [[1.0], [2.0]]}), "src", "append"
    )
    group = f"tracking-{tmp_path.name}"
    sc = spark.sparkContext
    sc.setJobGroup(group, "jobs the tracking might start")
    try:
        with track(cfg, "vlsafety test", lake=lake) as rec:
            lake.read("src")  # a lazy read: only tracking could start a job here
            lake.write(pa.table({"id": ["c"]}), "out", "append")
            run_id = rec.run_id
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert list(sc.statusTracker().getJobIdsForGroup(group)) == []
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"src", "out"}
    src = inputs["src"]
    assert src.source_type == "delta_table"
    assert json.loads(src.source) == {"path": lake.path("src"), "delta_table_version": 0}
    assert src.digest == "src@v0"
    cols = {c["name"]: c["type"] for c in json.loads(src.schema)["mlflow_colspec"]}
    assert cols == {"id": "string", "labels": "map", "vec": "array"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
