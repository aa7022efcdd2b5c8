"""Vectorized drawing primitives shared by the phantom generators.

Every primitive works on a batch: per-image parameters are arrays ``[N]`` (broadcast to
``[N, 1, 1]``) and the result is ``[N, H, W]`` float32. Geometry is in normalized
coordinates, ``x`` and ``y`` in ``[-1, 1]`` (``y`` grows downwards, as in an image), so a
phantom drawn at 64 or 128 pixels shows the same anatomy; texture scales with it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from models.imaging.encode import quantize

F32 = np.float32


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``x, y`` of shape ``[1, size, size]`` in ``(-1, 1)``."""
    c = (np.arange(size, dtype=F32) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    return x[None], y[None]


def col(values: ArrayLike) -> np.ndarray:
    """Per-image values ``[N]`` as ``[N, 1, 1]`` float32, ready to broadcast on images."""
    return np.asarray(values, dtype=F32).reshape(-1, 1, 1)


def soft_inside(
    signed_distance: np.ndarray, size: int, blur: float | np.ndarray = 0.0
) -> np.ndarray:
    """Coverage in ``[0, 1]`` of a region given the signed distance (negative inside).

    The edge is one pixel wide (anti-aliasing) plus ``blur`` (normalized units).
    """
    width = 2.0 / size + np.asarray(blur, dtype=F32)
    return np.clip(0.5 - signed_distance / width, 0.0, 1.0).astype(F32)


def smooth_noise(rng: np.random.Generator, n: int, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise ``[n, size, size]``, zero mean and unit std per image.

    ``sigma`` is the filter width in normalized units (fraction of the half-width), so the
    texture has the same look at every image size. Periodic boundaries (FFT filtering).
    """
    white = rng.standard_normal((n, size, size), dtype=F32)
    sigma_px = max(sigma * size / 2.0, 0.3)
    f = np.fft.fftfreq(size).astype(F32)
    kernel = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    out = np.fft.irfft2(np.fft.rfft2(white) * kernel[:, : size // 2 + 1], s=(size, size))
    out = out.astype(F32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + F32(1e-6)
    return out


def blur(images: np.ndarray, sigma: np.ndarray, size: int) -> np.ndarray:
    """Gaussian blur of ``[N, H, W]`` images, one ``sigma`` (normalized units) per image."""
    sigma_px = np.asarray(sigma, dtype=F32).reshape(-1, 1, 1) * size / 2.0
    f = np.fft.fftfreq(size).astype(F32)
    f2 = (f[:, None] ** 2 + f[None, : size // 2 + 1] ** 2)[None]
    kernel = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * f2)
    return np.fft.irfft2(np.fft.rfft2(images) * kernel, s=(size, size)).astype(F32)


def disks(
    x: np.ndarray,
    y: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    active: np.ndarray,
    size: int,
    profile: str = "flat",
) -> np.ndarray:
    """The union (max) of up to K round spots per image.

    ``cx, cy, radius, active`` are ``[N, K]``; returns ``[N, H, W]`` coverage in [0, 1].
    ``profile="flat"`` gives anti-aliased disks, ``"gauss"`` a Gaussian bump of std radius/2
    (a nodule or a microaneurysm reads as a soft spot, not a coin).
    """
    n, k = cx.shape
    out = np.zeros((n, x.shape[-2], x.shape[-1]), dtype=F32)
    for j in range(k):  # K is small; each step is vectorized over the images using slot j
        idx = np.flatnonzero(active[:, j])
        if idx.size == 0:
            continue
        xs, ys = _rows(x, idx), _rows(y, idx)
        dx = xs - col(cx[idx, j])
        dy = ys - col(cy[idx, j])
        r = col(radius[idx, j])
        if profile == "gauss":
            spot = np.exp(-(dx * dx + dy * dy) / (F32(0.5) * r * r))
        else:
            spot = soft_inside(np.sqrt(dx * dx + dy * dy) - r, size)
        out[idx] = np.maximum(out[idx], spot)
    return out


def _rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a per-image array, or the shared ``[1, H, W]`` grid unchanged."""
    return a if a.shape[0] == 1 else a[idx]


def segments(
    x: np.ndarray,
    y: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    angle: np.ndarray,
    length: np.ndarray,
    curvature: np.ndarray,
    width: np.ndarray,
    active: np.ndarray,
    size: int,
) -> np.ndarray:
    """Up to K thin curved strokes per image (hairs, vessels of a tuft): coverage [N, H, W].

    A stroke starts at ``(px, py)`` with direction ``angle`` and bends as a parabola:
    the perpendicular offset at arc position ``t`` is ``curvature * t**2``.
    """
    n, k = px.shape
    out = np.zeros((n, x.shape[-2], x.shape[-1]), dtype=F32)
    for j in range(k):
        idx = np.flatnonzero(active[:, j])
        if idx.size == 0:
            continue
        ca, sa = col(np.cos(angle[idx, j])), col(np.sin(angle[idx, j]))
        dx, dy = _rows(x, idx) - col(px[idx, j]), _rows(y, idx) - col(py[idx, j])
        t = dx * ca + dy * sa
        perp = -dx * sa + dy * ca - col(curvature[idx, j]) * t * t
        inside = (t >= 0) & (t <= col(length[idx, j]))
        stroke = soft_inside(np.abs(perp) - col(width[idx, j]) / 2, size) * inside
        out[idx] = np.maximum(out[idx], stroke)
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] to uint8 with rounding (:func:`models.imaging.quantize`)."""
    return quantize(images)


def counts_to_active(counts: np.ndarray, k: int) -> np.ndarray:
    """``[N]`` integer counts to a ``[N, k]`` boolean mask of the first ``count`` slots."""
    return np.arange(k)[None, :] < np.minimum(counts, k)[:, None]
