"""From a decoded image to the ``[C, H, W]`` tensor a model card asks for.

Resizing happens before the float conversion where it matters: an image more than twice
the card's size in both directions is first shrunk by an integer factor with a box
filter computed in integers (:func:`box_reduce`), so an 8192 x 8192 upload to a 224 x 224
model never exists as a full-size float array; the antialiased bilinear resize then runs
on the reduced image. Images within twice the card's size take the float path unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.card import ModelCard, ResizePolicy
from models.imaging.decoded import DecodedImage, unit_float
from models.imaging.dicom_voi import apply_window

# ITU-R BT.601 luma, the weights Pillow's "L" conversion uses.
_LUMA = (0.299, 0.587, 0.114)


def to_model_input(img: DecodedImage, card: ModelCard) -> torch.Tensor:
    """The card's view of an image: float32 ``[C, H, W]`` in ``[0, 1]``.

    A greyscale DICOM is re-windowed with ``card.preprocessing.dicom_window`` when the card
    has one (it overrides the file's). Channels are converted (grey repeated to RGB, RGB to
    grey with BT.601 luma) and the image is resized by ``card.preprocessing.resize``:
    ``stretch`` (to the exact size), ``pad`` (fit inside, keep the aspect, pad with black)
    or ``center-crop`` (cover, keep the aspect, crop the centre). Same size: no resampling.
    """
    height, width = card.input.height, card.input.width
    window = card.preprocessing.dicom_window
    if window is not None and img.dicom is not None and img.dicom.modality is not None:
        pixels = apply_window(img.dicom.modality, window, img.dicom.photometric)[..., None]
    elif img.samples.dtype.kind in "ui":
        factor = reduce_factor(img.samples.shape[:2], (height, width))
        pixels = unit_float(box_reduce(img.samples, factor), img.scale)
    else:
        pixels = img.pixels
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    x = convert_channels(x, card.input.channels)
    x = resize(x[None], height, width, card.preprocessing.resize)[0]
    return x.clamp_(0.0, 1.0).contiguous()


def reduce_factor(size: tuple[int, ...], target: tuple[int, int]) -> int:
    """The largest integer ``k`` that keeps ``size / k`` at least twice ``target`` (>= 1)."""
    return max(1, min(int(size[0]) // (2 * target[0]), int(size[1]) // (2 * target[1])))


def box_reduce(samples: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` blocks of integer ``[H, W, C]`` samples, same dtype.

    The rows and columns beyond a multiple of ``factor`` (fewer than ``factor``) are
    trimmed evenly from both sides. Sums are taken in uint64, so no block overflows.
    """
    if factor <= 1:
        return samples
    h, w = samples.shape[0] // factor, samples.shape[1] // factor
    top = (samples.shape[0] - h * factor) // 2
    left = (samples.shape[1] - w * factor) // 2
    core = samples[top : top + h * factor, left : left + w * factor]
    blocks = core.reshape(h, factor, w, factor, samples.shape[2])
    total = blocks.sum(axis=(1, 3), dtype=np.uint64)
    area = np.uint64(factor * factor)
    return ((total + area // np.uint64(2)) // area).astype(samples.dtype)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``[C, H, W]`` (or ``[N, C, H, W]``) with C in {1, 3} to ``channels`` channels."""
    axis = x.dim() - 3
    have = x.shape[axis]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.repeat_interleave(3, dim=axis)
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * weights).sum(dim=axis, keepdim=True)
    raise ValueError(f"cannot convert {have} channels to {channels}")


def resize(
    x: torch.Tensor,
    height: int,
    width: int,
    policy: ResizePolicy = "stretch",
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``[N, C, height, width]`` by a card's resize policy.

    Bilinear resampling is antialiased when shrinking; ``nearest`` is for masks.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == (height, width):
        return x
    if policy == "stretch":
        return _interpolate(x, height, width, mode)
    if policy == "pad":
        scale = min(height / h, width / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = _interpolate(x, nh, nw, mode) if (nh, nw) != (h, w) else x
        top, left = (height - nh) // 2, (width - nw) // 2
        return F.pad(inner, (left, width - nw - left, top, height - nh - top))
    if policy == "center-crop":
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        outer = _interpolate(x, nh, nw, mode) if (nh, nw) != (h, w) else x
        top, left = (nh - height) // 2, (nw - width) // 2
        return outer[..., top : top + height, left : left + width]
    raise ValueError(f"unknown resize policy {policy!r}; valid: center-crop, pad, stretch")


def _interpolate(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=(height, width), mode="nearest")
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    )
