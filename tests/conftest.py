"""Shared fixtures: one local SparkSession for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from vlsafety.lake import Lake


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
