"""MLflow tracking: every CLI command is one MLflow run (stages are nested runs).

A run records the config (flattened; secrets never logged), figures as metrics, and
for every Delta table read or written its path and version — as tags
(``delta.read.<table>`` / ``delta.write.<table>`` = ``path@vN``) and as MLflow dataset
inputs (a Delta dataset source with path and version, and the schema from the Delta
log: metadata only, no Spark job), context ``input`` or ``output``. Each Delta commit
made inside the run carries the run id back (``Lake.history``), so the two link both
ways. The experiment is created as a classic one (the UI opens on its runs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlsafety.config import Config, TrackingConfig, flatten
from vlsafety.lake import Lake, TableEvent, commit_context

if TYPE_CHECKING:
    import mlflow

__all__ = ["RunRecorder", "track"]

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000


class RunRecorder:
    """Handle to the active run; a no-op recorder when tracking is disabled."""

    def __init__(self, run: mlflow.ActiveRun | None, lake: Lake | None) -> None:
        self.run = run
        self.lake = lake
        self.tables: dict[str, dict[str, int]] = {"read": {}, "write": {}}
        self._logged: set[tuple[str, str, int]] = set()

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log to this recorder's run, even while a nested run is active."""
        if self.run is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if batch:
            self._client().log_batch(self.run.info.run_id, metrics=batch)

    def log_counts(
        self, stage: str, rows_in: int, rows_out: int, rejected: int, filtered: int = 0
    ) -> None:
        """Per-stage counts; ``rows_in == rows_out + rejected + filtered`` is the contract."""
        self.log_metrics(
            {
                f"{stage}.rows_in": rows_in,
                f"{stage}.rows_out": rows_out,
                f"{stage}.rejected": rejected,
                f"{stage}.filtered": filtered,
            }
        )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        client = self._client()
        for k, v in tags.items():
            client.set_tag(self.run.info.run_id, k, str(v))

    def log_dict(self, data: Any, artifact_file: str) -> None:
        if self.run is None:
            return
        self._client().log_dict(self.run.info.run_id, data, artifact_file)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        if self.run is None:
            return
        self._client().log_artifact(self.run.info.run_id, os.fspath(path), artifact_path)

    def on_table_event(self, event: TableEvent) -> None:
        """Lake listener: remember and log every Delta version read or written."""
        self.tables[event.kind][event.table] = event.version
        key = (event.kind, event.table, event.version)
        if self.run is None or key in self._logged:
            return
        self._logged.add(key)
        import mlflow

        self.set_tags({f"delta.{event.kind}.{event.table}": f"{event.path}@v{event.version}"})
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run.info.run_id:
            self._log_dataset(event)  # the innermost run records the dataset itself

    def _log_dataset(self, event: TableEvent) -> None:
        """Log the table version as an MLflow dataset input: a Delta source (path, version)
        and the schema from the Delta log. Metadata only: ``mlflow.data.from_spark``
        profiles the DataFrame (a Spark job; for map columns a collect of every key), which
        at 300K images means scanning the whole table once per event."""
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset

        lake = self.lake
        if lake is None:
            return
        try:
            dataset = MetaDataset(  # type: ignore[abstract]
                _delta_source(event.path, event.version),
                name=event.table,
                digest=f"{event.table}@v{event.version}",
                schema=mlflow_schema(lake.schema(event.table, version=event.version)),
            )
            context = "input" if event.kind == "read" else "output"
            mlflow.log_input(dataset, context=context)
        except Exception as exc:  # tracking must never break a job
            log.warning(
                "could not log %s@v%s as an MLflow dataset: %s", event.table, event.version, exc
            )


def _delta_source(path: str, version: int) -> Any:
    """MLflow's Delta dataset source, with the version always recorded (its ``to_dict``
    drops a version 0 as falsy)."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    class _Source(DeltaDatasetSource):
        def to_dict(self) -> dict[Any, Any]:
            return {**super().to_dict(), "delta_table_version": version}

    return _Source(path=path, delta_table_version=version)


def _mlflow_type(t: pa.DataType) -> Any:
    """An Arrow type (the Delta log's schema) as an MLflow schema type."""
    from mlflow.types.schema import Array, DataType, Map, Object, Property

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return Array(_mlflow_type(t.value_type))
    if pa.types.is_map(t):
        return Map(_mlflow_type(t.item_type))
    if pa.types.is_struct(t):
        return Object([Property(f.name, _mlflow_type(f.type)) for f in t])
    for check, dtype in (
        (pa.types.is_boolean, DataType.boolean),
        (pa.types.is_int64, DataType.long),
        (pa.types.is_integer, DataType.integer),
        (pa.types.is_float32, DataType.float),
        (pa.types.is_floating, DataType.double),
        (pa.types.is_string, DataType.string),
        (pa.types.is_large_string, DataType.string),
        (pa.types.is_binary, DataType.binary),
        (pa.types.is_large_binary, DataType.binary),
        (pa.types.is_timestamp, DataType.datetime),
        (pa.types.is_date, DataType.datetime),
    ):
        if check(t):
            return dtype
    return DataType.string  # decimals and the like: recorded by name only


def mlflow_schema(schema: pa.Schema) -> Any:
    """The MLflow ColSpec schema of a table, from its Arrow schema (no data read)."""
    from mlflow.types.schema import ColSpec, Schema

    return Schema([ColSpec(_mlflow_type(f.type), f.name) for f in schema])


#: The MLflow UI opens an experiment tagged this way on its runs list (not GenAI traces).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _setup(cfg: TrackingConfig) -> None:
    import mlflow

    uri = cfg.uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if str(db.parent) not in ("", "."):
            db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(cfg.experiment)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)


def _log_params(cfg: Config, extra: Mapping[str, Any] | None) -> None:
    import mlflow

    params = flatten(cfg.to_dict())
    params.update(flatten(dict(extra or {})))
    clean = {}
    for k, v in params.items():
        text = json.dumps(v) if isinstance(v, list | dict) else str(v)
        clean[k] = text[:_MAX_PARAM_LEN]
    mlflow.log_params(clean)


@contextlib.contextmanager
def track(
    cfg: Config,
    command: str,
    *,
    lake: Lake | None = None,
    nested: bool = False,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
) -> Iterator[RunRecorder]:
    """Run the block inside one MLflow run (nested under the active run when ``nested``).

    Every Delta commit made on ``lake`` inside the block carries the run id and command.
    """
    if not cfg.tracking.enabled:
        recorder = RunRecorder(None, lake)
        if lake is not None:
            lake.add_listener(recorder.on_table_event)
        try:
            with commit_context(command=command):
                yield recorder
        finally:
            if lake is not None:
                lake.remove_listener(recorder.on_table_event)
        return

    import mlflow

    if not nested:
        _setup(cfg.tracking)
    started = time.perf_counter()
    with mlflow.start_run(run_name=run_name or command.split()[0], nested=nested) as run:
        recorder = RunRecorder(run, lake)
        mlflow.set_tag("vlsafety.command", command)
        if not nested:
            _log_params(cfg, params)
        elif params:
            mlflow.log_params(
                {k: str(v)[:_MAX_PARAM_LEN] for k, v in flatten(dict(params)).items()}
            )
        if lake is not None:
            lake.add_listener(recorder.on_table_event)
        try:
            # a nested stage keeps the job's command and run on its commits and adds its
            # own name; run_id is the run that made the commit (the stage's, when nested)
            context = (
                {"stage": command}
                if nested
                else {"command": command, "job_run_id": run.info.run_id}
            )
            with commit_context(run_id=run.info.run_id, **context):
                yield recorder
        finally:
            if lake is not None:
                lake.remove_listener(recorder.on_table_event)
            mlflow.log_metric("duration_s", time.perf_counter() - started)
