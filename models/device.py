"""Device selection: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks ``cuda`` when available; otherwise the named device."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
