"""Shared fixtures: one local SparkSession for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist the workers share the machine's cores: each worker, and the Spark
# workers and child builds it starts (they inherit this environment), gets its share of
# OpenMP threads, and idle threads sleep instead of spinning on a core another worker
# needs (torch's OpenMP spins by default: a tiny-model build ran 6x slower beside a
# Spark build). Speed only: no test result depends on thread counts (set
# OMP_NUM_THREADS yourself to run the suite with others).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from vlsafety.lake import Lake
    from vlsafety.models import ModelSpec


#: Test folders that share one expensive fixture (a whole build, a Spark cluster) and run
#: longest: under pytest-xdist each is one unit of work, handed out first so that they run
#: side by side on different workers instead of one after the other.
HEAVY = ("tests/e2e/", "tests/cluster/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heavy folders first (stable: the order inside a folder is kept)."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, h in enumerate(HEAVY) if path.startswith(h)), len(HEAVY))

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Like ``--dist loadscope`` (a module's tests share its fixtures on one worker), with
    each HEAVY folder one scope and the scopes handed out in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class HeavyFirst(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((h for h in HEAVY if path.startswith(h)), path)

    config.option.loadscopereorder = False
    return HeavyFirst(config, log)


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run shares (the run's base temp otherwise)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_models_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight models, built once per run and shared by every worker.

    make_tiny reuses a complete folder; the lock makes parallel workers wait for the one
    that builds it instead of each building its own.
    """
    from filelock import FileLock

    from vlsafety.models.tiny import make_tiny

    root = shared_tmp(tmp_path_factory)
    with FileLock(str(root / "tiny-models.lock")):
        return make_tiny(root / "tiny-models")


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_models_yaml: Path) -> Path:
    """The folder of ``tiny_models_yaml`` (``models.root`` of the tiny configs)."""
    return tiny_models_yaml.parent


@pytest.fixture(scope="session")
def tiny_specs(tiny_models_yaml: Path) -> dict[str, ModelSpec]:
    from vlsafety.models import load_model_specs

    return load_model_specs(tiny_models_yaml)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """local[2] Spark shared by every test (starting a JVM per test would cost minutes)."""
    from vlsafety.config import SparkConfig
    from vlsafety.spark import get_spark

    session = get_spark(
        SparkConfig(
            master="local[2]",
            app_name="vlsafety-tests",
            driver_memory="2g",
            shuffle_partitions=2,
            progress_bar=False,
        )
    )
    yield session
    session.stop()


@pytest.fixture()
def lake(spark: SparkSession, tmp_path: Path) -> Lake:
    """A fresh lake under the test's tmp dir, on the shared Spark session."""
    from vlsafety.lake import Lake

    return Lake(tmp_path / "lake", spark)
