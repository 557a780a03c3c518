"""Safe path handling for dataset manifests: nothing may escape the dataset root."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["PathEscapeError", "is_remote", "resolve_under", "find_under"]

_REMOTE_SCHEMES = ("http", "https", "s3")


class PathEscapeError(ValueError):
    """A path resolves outside its dataset root."""


def is_remote(ref: str) -> bool:
    """True for ``http://``, ``https://`` and ``s3://`` references."""
    scheme = urlparse(ref).scheme.lower()
    return scheme in _REMOTE_SCHEMES


def resolve_under(root: Path, ref: str | os.PathLike[str]) -> Path:
    """Resolve ``ref`` (relative to ``root``, or absolute) with symlinks followed and
    check the result lies inside ``root`` (itself resolved). Raises PathEscapeError.

    Resolving before checking matters: ``a/../../x`` and a symlink ``a -> /etc`` both look
    harmless as strings.
    """
    root_r = root.resolve()
    text = os.fspath(ref)
    if "\x00" in text:
        raise PathEscapeError(f"path {text!r} contains a NUL byte")
    candidate = (root_r / text).resolve()
    if not candidate.is_relative_to(root_r):
        raise PathEscapeError(f"{text!r} resolves to {candidate}, outside the root {root_r}")
    return candidate


def find_under(root: Path, ref: str, search_dirs: Sequence[str] = ("",)) -> Path | None:
    """First existing file ``root/<dir>/ref`` over ``search_dirs`` (each checked with
    :func:`resolve_under`, so an escaping ``ref`` raises even if the file exists);
    None when none exists."""
    for d in search_dirs:
        path = resolve_under(root, os.path.join(d, ref) if d else ref)
        if path.is_file():
            return path
    return None
