"""The pictures of the report's image grid: 8-bit PNGs of images and perturbations.

Images are ``[C, H, W]`` (or ``[H, W]``) arrays or tensors in [0, 1] pixel space, C = 1
(grey) or 3 (RGB), the convention of :class:`models.wrapper.DiagnosticModel`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from models.errors import InvalidParametersError


def _as_chw(image: Any, what: str = "image") -> np.ndarray:
    if hasattr(image, "detach"):  # a torch tensor, without importing torch here
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise InvalidParametersError(
            f"{what} must be [C, H, W] with C = 1 or 3 (or [H, W]), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InvalidParametersError(f"{what} has NaN or infinite pixels")
    return arr


def _encode(hwc: np.ndarray) -> bytes:
    mode = "L" if hwc.shape[2] == 1 else "RGB"
    img = Image.fromarray(hwc[:, :, 0] if mode == "L" else hwc, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def to_uint8(image: Any) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] -> ``[H, W, C]`` uint8 (rounded, values outside clipped)."""
    arr = _as_chw(image)
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def to_png(image: Any) -> bytes:
    """An 8-bit grey (C = 1) or RGB (C = 3) PNG of a [0, 1] image."""
    return _encode(to_uint8(image))


def amplification(clean: Any, adv: Any) -> float:
    """The factor :func:`perturbation_heatmap` multiplies ``|adv - clean|`` by (inf if 0)."""
    delta = np.abs(_as_chw(adv, "adversarial image") - _as_chw(clean, "clean image"))
    peak = float(delta.max()) if delta.size else 0.0
    return 1.0 / peak if peak > 0 else float("inf")


def perturbation_heatmap(clean: Any, adv: Any, *, colormap: str = "magma") -> bytes:
    """A PNG of the perturbation, amplified to the full range.

    The per-pixel size is ``max over channels |adv - clean|``, divided by its maximum over
    the image (so the largest change is full intensity), and coloured with ``colormap``
    (RGB PNG; ``colormap="gray"`` gives a grey PNG). A zero perturbation is a black image.
    """
    c = _as_chw(clean, "clean image")
    a = _as_chw(adv, "adversarial image")
    if c.shape[1:] != a.shape[1:]:
        raise InvalidParametersError(
            f"clean and adversarial images differ in size: {c.shape} vs {a.shape}"
        )
    delta = np.abs(a - c).max(axis=0)
    peak = float(delta.max()) if delta.size else 0.0
    scaled = delta / peak if peak > 0 else np.zeros_like(delta)
    if colormap == "gray":
        return _encode(np.round(scaled * 255.0).astype(np.uint8)[:, :, None])
    from matplotlib import colormaps

    try:
        cmap = colormaps[colormap]
    except KeyError as exc:
        raise InvalidParametersError(f"unknown colormap {colormap!r}") from exc
    rgb = cmap(scaled)[:, :, :3]
    return _encode(np.round(rgb * 255.0).astype(np.uint8))
