"""Compression: JPEG at decreasing quality (lossy archives, teleradiology, phone photos).

The batch is quantized to 8 bits and each image encoded and decoded in memory with Pillow's
libjpeg (4:2:0 chroma subsampling for colour, Pillow's default) on the CPU; the result is
moved back to the images' device. torchvision's batched codec would do the same but is
deprecated since torchvision 0.29. Images with a channel count other than 1 or 3 are coded
channel by channel as greyscale.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from workers.perturbations.base import Family, Perturbation


def quality_of(amount: float) -> int:
    """JPEG quality (1..100) of an amount ``100 - quality``."""
    return int(min(100, max(1, round(100.0 - amount))))


def _roundtrip(plane: np.ndarray, quality: int) -> np.ndarray:
    """One ``[H, W]`` or ``[H, W, 3]`` uint8 image through a JPEG encode and decode."""
    buf = io.BytesIO()
    Image.fromarray(plane).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB" if plane.ndim == 3 else "L"))


def _jpeg(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    planes = x if c in (1, 3) else x.reshape(n * c, 1, h, w)
    u8 = (planes.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
    hwc = u8[:, 0] if u8.shape[1] == 1 else u8.transpose(0, 2, 3, 1)
    quality = quality_of(amount)
    out = np.stack([_roundtrip(np.ascontiguousarray(img), quality) for img in hwc])
    if out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)
    return torch.from_numpy(out).to(x.device, torch.float32).div_(255.0).reshape(n, c, h, w)


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        name="jpeg",
        family=Family.COMPRESSION,
        fn=_jpeg,
        severities=(15.0, 30.0, 50.0, 70.0, 85.0),
        units="100 - JPEG quality (severity 1 is quality 85, severity 5 quality 15)",
        description="JPEG compression at decreasing quality.",
        sweep=(5.0, 85.0),
    ),
)
