"""The one executor-side path for model work (DESIGN.md, "Scale-out rules").

Every stage that calls a model — preprocessing's embedder and verifier, generation,
augmentation, responses, judgments — maps its requests with :func:`map_with_model`, and
its worker code gets the model with :func:`worker_model`. Between them they:

1. **Repartition to a chosen task count** (:func:`task_count`): ``resources.tasks`` of
   the spec, else two tasks per GPU slot on a GPU cluster, else one per ``resources.cpus``
   cores. The count is set explicitly, not left to ``spark.sql.shuffle.partitions`` and
   AQE (which coalesces shuffles by bytes, so a stage of small requests would run on
   one GPU).
2. **Join image bytes once, right before the model.** Requests carry image *ids* (and
   text) through keying, resume anti-joins and filtering; the bytes are joined only in
   the last step, and that join *is* the repartition: requests and ``images`` are both
   hash-partitioned by image id into exactly ``tasks`` partitions, so Spark joins them
   without another exchange and the joined rows go straight into ``mapInPandas``. Bytes
   cross the network once per stage and never travel through an earlier shuffle.
   Requests without an image get a key no image has, so they spread over the tasks
   instead of piling into the null key's partition.

   Why not read bytes by id inside the task (pyarrow over the Delta files)? Image ids
   are sha256 digests, so parquet min/max statistics cannot prune row groups: each task
   would scan (nearly) the whole ``images`` table, and it would need the lake's
   filesystem in every executor (``dbfs:/``, native Delta with deletion vectors). A
   broadcast join would put every byte on the driver first. The co-partitioned join
   works for every lake engine and reads each image once per stage.
3. **Attach the GPU** :class:`~pyspark.resource.ResourceProfile` when the model declares
   ``resources.gpus`` (stage-level scheduling); plain ``local`` masters cannot schedule
   resources, so there it is skipped with a warning.
4. **Keep at most one model per device in a Python worker** (:func:`cached_model`):
   loading a model evicts the one on the same device (``del``, ``gc.collect()``,
   ``torch.cuda.empty_cache()``), any other copy of the same model, and models on GPUs
   the running task no longer holds. The CPU is one device too, so a CPU worker also
   keeps one model: model weights dominate a worker's memory, and the stages load one
   model each, so a bound above one would only pay off when stages alternate models.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.resource import ResourceProfile
    from pyspark.sql import Column, DataFrame, SparkSession

    from vlsafety.models import ModelSpec

__all__ = [
    "cached_model",
    "clear_model_cache",
    "default_task_count",
    "device_slot",
    "map_with_model",
    "resolve_task_device",
    "resource_profile",
    "task_count",
    "task_gpu_addresses",
    "with_images",
    "worker_model",
]

log = logging.getLogger(__name__)

#: The join key column while image bytes are joined (dropped before the model sees rows).
_KEY = "_vls_image_key"


# ------------------------------------------------------------------- task count
def default_task_count(
    *,
    local: bool,
    cores: int,
    cluster_gpus: float,
    gpus_per_task: float,
    cpus_per_task: int = 1,
) -> int:
    """Tasks for a model stage when the spec does not set ``resources.tasks``.

    On a cluster with GPUs (``cluster_gpus`` > 0) and tasks that take GPUs
    (``gpus_per_task`` > 0): two tasks per concurrent GPU slot, so a slot starts its next
    task while results of the last one are written, and a slow task does not leave half
    the GPUs idle. Otherwise (local masters, CPU models): one task per ``cpus_per_task``
    cores.
    """
    if not local and cluster_gpus > 0 and gpus_per_task > 0:
        return max(1, math.floor(cluster_gpus / gpus_per_task + 1e-9)) * 2
    return max(1, cores // max(1, cpus_per_task))


def _live_executors(spark: SparkSession) -> int:
    """Executors registered now (the status tracker lists the driver too)."""
    try:
        infos = spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()  # type: ignore[union-attr]
        return max(0, len(infos) - 1)
    except Exception:  # Spark Connect and other sessions without a JVM handle
        return 0


def task_count(spark: SparkSession, spec: ModelSpec | None) -> int:
    """How many tasks a stage running ``spec`` (None: no model) uses.

    ``spec.resources.tasks`` when set; else :func:`default_task_count` with the
    cluster's GPUs = ``spark.executor.resource.gpu.amount`` × executors
    (``spark.executor.instances`` or those registered now, whichever is larger) and
    GPUs per task = the spec's ``resources.gpus`` (what its profile requests), or
    ``spark.task.resource.gpu.amount`` when the cluster gives every task GPUs.
    """
    from vlsafety.spark import is_local_master

    if spec is not None and spec.resources.tasks is not None:
        return spec.resources.tasks
    sc = spark.sparkContext
    conf = sc.getConf()
    local = is_local_master(sc.master or "local")
    per_executor = float(conf.get("spark.executor.resource.gpu.amount", "0") or 0)
    cluster_gpus = 0.0
    if not local and per_executor > 0:
        executors = max(int(conf.get("spark.executor.instances", "0") or 0), _live_executors(spark))
        cluster_gpus = per_executor * executors
    per_task = spec.resources.gpus if spec is not None else 0.0
    if per_task <= 0:
        per_task = float(conf.get("spark.task.resource.gpu.amount", "0") or 0)
    return default_task_count(
        local=local,
        cores=sc.defaultParallelism,
        cluster_gpus=cluster_gpus,
        gpus_per_task=per_task,
        cpus_per_task=spec.resources.cpus if spec is not None else 1,
    )


# ------------------------------------------------------------------ GPU placement
def task_gpu_addresses() -> tuple[str, ...]:
    """The GPU addresses Spark assigned to the running task (empty outside a task/GPU)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return ()
    info = ctx.resources().get("gpu")
    return tuple(info.addresses) if info is not None else ()


def resolve_task_device(device: str, addresses: Sequence[str]) -> str:
    """The torch device a task should use: its assigned GPU (``cuda:<address>``) when the
    spec runs on CUDA (``cuda``, ``cuda:N`` or ``auto``) and Spark assigned one; the spec's
    own device otherwise (a ``cpu`` spec stays on CPU even in a GPU slot)."""
    if not addresses or device == "cpu" or device == "mps":
        return device
    return f"cuda:{addresses[0]}"


def resource_profile(spark: SparkSession, spec: ModelSpec | None) -> ResourceProfile | None:
    """Stage-level scheduling for ``spec``: each task needs ``resources.cpus`` CPUs and
    ``resources.gpus`` GPUs. None without a spec, without GPUs, or on a plain ``local``
    master, which cannot schedule resources (logged)."""
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    from vlsafety.spark import is_local_master

    if spec is None or spec.resources.gpus <= 0:
        return None
    if is_local_master(spark.sparkContext.master or "local"):
        log.warning(
            "%s asks for %s GPU(s) per task, but local masters cannot schedule resources; "
            "running without a resource profile",
            spec.id,
            spec.resources.gpus,
        )
        return None
    task = TaskResourceRequests().cpus(spec.resources.cpus).resource("gpu", spec.resources.gpus)
    return ResourceProfileBuilder().require(task).build


# ------------------------------------------------------------------ worker cache
@dataclass
class _Loaded:
    key: str  # ModelSpec.instance_key(): the exact spec, device included
    fingerprint: str  # ModelSpec.fingerprint(): the model, wherever it runs
    model: Any


#: The models loaded in this Python worker, by device slot (see :func:`device_slot`).
_SLOTS: dict[str, _Loaded] = {}


def device_slot(spec: ModelSpec) -> str:
    """The device whose memory ``spec``'s model occupies: ``cuda:N``, ``mps`` or ``cpu``
    (``cuda`` is ``cuda:0``; ``auto`` is ``cuda:0`` when CUDA is available; remote and
    rule-based backends hold host memory only)."""
    if spec.backend in ("openai", "refusal"):
        return "cpu"
    device = spec.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if device == "cuda" else device


def _free_device_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")  # a worker that never imported torch has no CUDA cache
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _evict(slots: Sequence[str]) -> None:
    for slot in slots:
        loaded = _SLOTS.pop(slot)
        log.info("evicting model %s from %s in worker pid %d", loaded.key[:12], slot, os.getpid())
        del loaded
    if slots:
        _free_device_memory()


def clear_model_cache() -> None:
    """Drop every model loaded in this process and free their device memory."""
    _evict(list(_SLOTS))


def cached_model(
    spec: ModelSpec,
    *,
    holds: Sequence[str] = (),
    loader: Callable[[ModelSpec], Any] | None = None,
) -> Any:
    """``spec``'s model from this worker's cache, loaded on a miss with ``loader``
    (default :func:`vlsafety.models.load_model`).

    Before loading, evicts (so at most one model stays per device): the model on the same
    device slot, other copies of the same model (a reused worker handed another GPU),
    and, when ``holds`` names the GPU addresses of the running task, models on GPUs the
    task does not hold (another worker may own them now).
    """
    slot = device_slot(spec)
    key = spec.instance_key()
    hit = _SLOTS.get(slot)
    if hit is not None and hit.key == key:
        return hit.model
    fingerprint = spec.fingerprint()
    held = {f"cuda:{a}" for a in holds}
    stale = [
        s
        for s, loaded in _SLOTS.items()
        if s == slot
        or loaded.fingerprint == fingerprint
        or (held and s.startswith("cuda:") and s not in held)
    ]
    del hit
    _evict(stale)
    if loader is None:
        from vlsafety.models import load_model

        loader = load_model
    log.info(
        "loading model %s (%s) on %s in worker pid %d", spec.id, spec.backend, slot, os.getpid()
    )
    model = loader(spec)
    _SLOTS[slot] = _Loaded(key, fingerprint, model)
    return model


def worker_model(spec: ModelSpec) -> Any:
    """The model for ``spec`` in the running Spark task, placed where Spark put the task.

    In a GPU task the model goes to the GPU Spark assigned (vLLM through
    ``CUDA_VISIBLE_DEVICES``); in a CPU task torch uses only the task's
    ``resources.cpus`` threads, so the concurrent tasks of an executor do not fight over
    cores. Loaded once per worker and reused across tasks (:func:`cached_model`).
    """
    addresses = task_gpu_addresses()
    device = resolve_task_device(spec.device, addresses)
    if device != spec.device:
        spec = dataclasses.replace(spec, device=device)
    if addresses and spec.backend == "vllm":
        # vLLM places its engine by CUDA_VISIBLE_DEVICES, not by a torch device string.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(addresses)
    if spec.backend in ("hf", "open_clip") and not spec.device.startswith("cuda"):
        import torch

        torch.set_num_threads(spec.resources.cpus)
    return cached_model(spec, holds=addresses)


# ------------------------------------------------------------------ the stage map
def _spread_key(df: DataFrame) -> Column:
    """A per-row key that no image id equals (image ids are hex digests): a hash of the
    row's plain columns, deterministic so a retried task sees the same partitioning."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    plain = [
        F.col(f.name)
        for f in df.schema.fields
        if not isinstance(f.dataType, MapType | ArrayType | StructType)
    ]
    if not plain:
        raise ValueError("requests need at least one plain (non-nested) column")
    return F.concat(F.lit("~"), F.xxhash64(*plain).cast("string"))


def with_images(
    requests: DataFrame,
    images: DataFrame,
    tasks: int,
    *,
    image_key: str | Column = "image_id",
    bytes_col: str = "image",
) -> DataFrame:
    """``requests`` with the bytes of ``images`` (columns ``image_id``, ``bytes``) as
    ``bytes_col`` (null where ``image_key`` is null or not in ``images``), in exactly
    ``tasks`` partitions: both sides hash-partitioned by image id, so the join itself
    adds no exchange (see the module docstring)."""
    from pyspark.sql import functions as F

    if bytes_col in requests.columns:
        raise ValueError(f"requests already have a {bytes_col!r} column")
    key = F.col(image_key) if isinstance(image_key, str) else image_key
    req = requests.withColumn(_KEY, F.coalesce(key.cast("string"), _spread_key(requests)))
    img = images.select(F.col("image_id").alias(_KEY), F.col("bytes").alias(bytes_col))
    # A sort-merge join (hint): never a broadcast of image bytes through the driver, and
    # no in-memory hash table of a task's images.
    return (
        req.repartition(tasks, _KEY)
        .join(img.repartition(tasks, _KEY).hint("merge"), on=_KEY, how="left")
        .select(*requests.columns, bytes_col)
    )


def map_with_model(
    requests: DataFrame,
    fn: Callable[[Iterator[Any]], Iterator[Any]],
    schema: Any,
    spec: ModelSpec | None,
    *,
    images: DataFrame | None = None,
    image_key: str | Column = "image_id",
    bytes_col: str = "image",
    tasks: int | None = None,
    arrow: bool = False,
) -> DataFrame:
    """Run ``fn`` over ``requests`` the way every model stage must (module docstring).

    Args:
        requests: the rows to process, with image ids but no image bytes.
        fn: the ``mapInPandas`` (``arrow=False``) or ``mapInArrow`` (``arrow=True``)
            body; it gets its model with :func:`worker_model`.
        schema: the output schema of ``fn``.
        spec: the model the stage runs (None: no model; the stage still gets its task
            count). Decides the task count and the GPU resource profile.
        images: ``image_id`` / ``bytes`` rows (the ``images`` table) to join right
            before ``fn`` as column ``bytes_col``; None: no image bytes.
        image_key: the column (or expression) naming each request's image id; rows
            where it is null get no bytes.
        tasks: task count (default :func:`task_count` of ``spec``).
        arrow: ``mapInArrow`` instead of ``mapInPandas``.

    Returns ``fn``'s output in exactly ``tasks`` tasks, with the resource profile of
    :func:`resource_profile` attached when ``spec`` declares GPUs on a cluster.
    """
    spark = requests.sparkSession
    n = tasks if tasks is not None else task_count(spark, spec)
    if n < 1:
        raise ValueError(f"tasks must be >= 1, got {n}")
    if images is not None:
        work = with_images(requests, images, n, image_key=image_key, bytes_col=bytes_col)
    else:
        work = requests.repartition(n)
    profile = resource_profile(spark, spec)
    if arrow:
        return work.mapInArrow(fn, schema, profile=profile)
    return work.mapInPandas(fn, schema, profile=profile)  # type: ignore[arg-type]
