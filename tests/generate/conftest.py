"""Fixtures for the generation tests: a tiny pool lake and the tiny chat models."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsafety.models import ModelSpec, load_model_specs


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    """The project's tiny random-weight models (built offline, once per session)."""
    from vlsafety.models.tiny import make_tiny

    folder = Path(tmp_path_factory.getbasetemp()) / "tiny-models"
    return load_model_specs(make_tiny(folder))
