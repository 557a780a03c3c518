"""Tiny random-weight models for the preprocessing tests (the embedded default's CLIP)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_clip_spec(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The untrained tiny CLIP ``ModelSpec`` of ``conf/models/tiny.yaml``, built offline.

    Same folder as tests/models' fixture: make_tiny reuses a complete build, so a full
    test session builds the models once.
    """
    from vlsafety.models import load_model_specs
    from vlsafety.models.tiny import make_tiny

    yaml_path: Path = make_tiny(tmp_path_factory.getbasetemp() / "tiny-models")
    return load_model_specs(yaml_path)["tiny-clip"]
