"""Tiny random-weight models for the preprocessing tests (the embedded default's CLIP)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_clip_spec(tiny_specs: dict[str, Any]) -> object:
    """The untrained tiny CLIP ``ModelSpec`` of ``conf/models/tiny.yaml``, built offline."""
    return tiny_specs["tiny-clip"]
