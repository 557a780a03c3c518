"""Tiny random-weight models, built once per test session (make_tiny reuses a complete folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsafety.models import ModelSpec, load_model_specs


@pytest.fixture(scope="session")
def tiny_models_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlsafety.models.tiny import make_tiny

    # One folder per session shared by every test folder: the second build is a no-op.
    return make_tiny(tmp_path_factory.getbasetemp() / "tiny-models")


@pytest.fixture(scope="session")
def tiny_specs(tiny_models_yaml: Path) -> dict[str, ModelSpec]:
    return load_model_specs(tiny_models_yaml)
