"""Our versioned generation prompts and pattern files (``vlsafety/prompts/generation/``).

Text prompts load as :class:`~vlsafety.prompts.PromptTemplate` (``string.Template``
placeholders); YAML files (strategy definitions and few-shot examples, template-backend
patterns, ELITE method texts) load as :class:`PromptData`. Either way the version is the
file's name plus a hash of its text, so editing a prompt changes every candidate id built
on it and a rerun regenerates instead of reusing stale rows.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from vlsafety.prompts import PromptTemplate

__all__ = ["PromptData", "generation_prompt", "generation_data", "combined_version"]

_FOLDER = "generation"


def _read(filename: str) -> str:
    if not filename.replace("_", "").replace(".", "").isalnum() or "/" in filename:
        raise ValueError(f"bad generation prompt file name {filename!r}")
    path = resources.files("vlsafety.prompts").joinpath(_FOLDER, filename)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no generation prompt file {_FOLDER}/{filename}") from None


@dataclass(frozen=True)
class PromptData:
    """A parsed YAML prompt file and its version (``generation/<name>@<sha256[:12]>``)."""

    name: str
    data: dict[str, Any]
    version: str


@functools.cache
def generation_prompt(name: str) -> PromptTemplate:
    """``vlsafety/prompts/generation/<name>.txt`` as a template."""
    return PromptTemplate(f"{_FOLDER}/{name}", _read(f"{name}.txt"))


@functools.cache
def generation_data(name: str) -> PromptData:
    """``vlsafety/prompts/generation/<name>.yaml`` parsed; a non-mapping top level raises."""
    text = _read(f"{name}.yaml")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{_FOLDER}/{name}.yaml: top level must be a mapping")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return PromptData(name, data, f"{_FOLDER}/{name}@{digest}")


def combined_version(*versions: str) -> str:
    """One version string for a candidate made with several prompt files."""
    return "+".join(versions)
