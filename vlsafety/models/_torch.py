"""Small torch helpers shared by the local backends (device and dtype from a spec)."""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_torch_device", "torch_dtype"]


def resolve_torch_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; a CUDA device asked
    for on a machine without one is a clear error rather than a late crash."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def torch_dtype(name: str) -> Any:
    """torch dtype for a spec's ``dtype`` (``auto`` keeps the checkpoint's own dtype)."""
    import torch

    return {
        "auto": "auto",
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[name]
