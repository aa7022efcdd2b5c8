"""Encoders: lossless PNG bytes, and ``[0, 1]`` floats to 8-bit samples."""

from __future__ import annotations

import io

import numpy as np
import torch


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` array, or of
    a uint16 greyscale ``[H, W]`` / ``[H, W, 1]`` array (a 16-bit PNG)."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError("16-bit PNGs must be greyscale [H, W]")
        img = Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        img = Image.fromarray(np.ascontiguousarray(arr), mode="L" if arr.ndim == 2 else "RGB")
    else:
        raise ValueError(
            f"expected uint8 [H, W(, 1|3)] or uint16 [H, W], got {arr.dtype} {arr.shape}"
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def quantize(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` (a tensor or an array of any shape, e.g. ``[N, C, H, W]``) to
    uint8 of the same shape: rounded half to even (as ``torch.round``), outside clipped."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[C, H, W]`` (tensor) or ``[H, W, C]`` (array) in ``[0, 1]`` to uint8 ``[H, W, C]``."""
    if isinstance(x, torch.Tensor):
        return quantize(x.detach().to("cpu", torch.float32).permute(1, 2, 0))
    return quantize(np.asarray(x, dtype=np.float32))
