"""Compression: JPEG at decreasing quality (lossy archives, teleradiology, phone photos).

The batch is quantized to 8 bits and encoded and decoded with libjpeg through torchvision's
batched list API, on the CPU (the result is moved back to the images' device). Images with
a channel count other than 1 or 3 are coded channel by channel as greyscale.
"""

from __future__ import annotations

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from workers.perturbations.base import Family, Perturbation


def quality_of(amount: float) -> int:
    """JPEG quality (1..100) of an amount ``100 - quality``."""
    return int(min(100, max(1, round(100.0 - amount))))


def _jpeg(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    planes = x if c in (1, 3) else x.reshape(n * c, 1, h, w)
    u8 = (planes.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
    encoded = encode_jpeg(list(u8), quality=quality_of(amount))
    decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED)
    out = torch.stack(decoded).to(x.device, torch.float32) / 255.0
    return out.reshape(n, c, h, w)


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
