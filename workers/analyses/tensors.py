"""Tensor helpers shared by the engine and the analyses: 8-bit copies and thumbnails."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.imaging import quantize

#: Images (or maps) in ``[0, 1]`` as uint8 ``[0, 255]`` on the CPU, any shape: the one
#: 8-bit quantization of the project (:func:`models.imaging.quantize`).
to_uint8 = quantize


def thumbnail(x: torch.Tensor, side: int) -> torch.Tensor:
    """``[N, C, H, W]`` downscaled (area averaging) so that its longer side is at most
    ``side`` pixels; returned unchanged when already that small."""
    h, w = x.shape[-2], x.shape[-1]
    scale = side / max(h, w)
    if scale >= 1:
        return x
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x.float(), size=size, mode="area")
