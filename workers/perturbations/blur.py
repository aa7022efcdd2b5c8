"""Blur: Gaussian, defocus (disk), motion (line at a random angle) and zoom.

Blur lengths are fractions of the shorter image side, so a severity blurs the same anatomy
at 64 or 512 pixels. Borders are replicated (no dark rim). Per-image kernels (motion) run
as one grouped convolution over the whole batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from workers.perturbations.base import Family, Perturbation, short_side, uniform

#: Zoom blur averages the image with this many zoomed copies (fixed, so the output varies
#: smoothly with the amount).
ZOOM_SAMPLES = 8


#: Kernels at least this wide are applied by FFT (3x faster than conv2d at 128 pixels).
FFT_MIN_KERNEL = 7


def _filter_shared(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel of every image with one ``[k, k]`` kernel (replicate pad)."""
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    # One plane per (image, channel) and a single-channel kernel: faster on the CPU than a
    # depthwise (grouped) convolution.
    planes = F.pad(x.reshape(n * c, 1, h, w), (pad, pad, pad, pad), mode="replicate")
    kernel = kernel.to(x)
    if k < FFT_MIN_KERNEL:
        return F.conv2d(planes, kernel[None, None]).reshape(n, c, h, w)
    size = planes.shape[-2:]
    # FFT products are convolutions: flip the kernel to correlate like conv2d, and keep
    # the part of the circular result that no wrap-around reaches.
    spectrum = torch.fft.rfft2(planes[:, 0]) * torch.fft.rfft2(kernel.flip(0, 1), s=size)
    out = torch.fft.irfft2(spectrum, s=size)[:, k - 1 : k - 1 + h, k - 1 : k - 1 + w]
    return out.reshape(n, c, h, w)


def _filter_per_image(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve image ``i`` with ``kernels[i]`` (``[N, k, k]``) as one grouped convolution."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    pad = k // 2
    weight = kernels.to(x).repeat_interleave(c, dim=0).unsqueeze(1)  # [N*C, 1, k, k]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate").reshape(1, n * c, h + 2 * pad, -1)
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def _separable_matrix(size: int, taps: torch.Tensor) -> torch.Tensor:
    """``[size, size]`` matrix of a 1-D convolution with ``taps`` (odd length, centred) and
    replicated borders: ``M @ column`` filters the column."""
    radius = taps.shape[0] // 2
    i = torch.arange(size, device=taps.device)
    offsets = torch.arange(-radius, radius + 1, device=taps.device)
    cols = (i.view(-1, 1) + offsets.view(1, -1)).clamp(0, size - 1)
    m = torch.zeros(size, size, device=taps.device)
    m.index_put_((i.view(-1, 1).expand_as(cols), cols), taps.expand_as(cols), accumulate=True)
    return m


def _gaussian_blur(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    sigma = fraction * short_side(x)
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    # The Gaussian integrated over each pixel (differences of its CDF): sub-pixel sigmas
    # still blur a little instead of rounding to the identity.
    edges = torch.special.ndtr((t + 0.5) / max(sigma, 1e-6)) - torch.special.ndtr(
        (t - 0.5) / max(sigma, 1e-6)
    )
    taps = (edges / edges.sum()).float()
    # Separable filtering as two matrix products: on the CPU this is 10-20x faster than
    # thin (1 x k) convolutions, and the kernel grows with the image anyway.
    return _separable_matrix(h, taps) @ x @ _separable_matrix(w, taps).T


def _defocus(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    radius = fraction * short_side(x)
    half = math.ceil(radius + 0.5)
    t = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device)
    d = torch.sqrt(t.view(-1, 1) ** 2 + t.view(1, -1) ** 2)
    # A disk with a one-pixel linear edge: coverage of each pixel by the aperture.
    kernel = (radius + 0.5 - d).clamp(0.0, 1.0)
    return _filter_shared(x, kernel / kernel.sum())


def _motion(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    half_len = 0.5 * fraction * short_side(x)
    angle = uniform(g, (n,), 0.0, math.pi, x.device)
    half = math.ceil(half_len) + 1
    t = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device)
    py, px = t.view(1, -1, 1), t.view(1, 1, -1)
    ux, uy = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    # Distance from each kernel pixel to the centred segment of the blur path; a centred
    # path blurs without shifting the image.
    along = (px * ux + py * uy).clamp(-half_len, half_len)
    dist = torch.sqrt((px - along * ux) ** 2 + (py - along * uy) ** 2)
    kernels = (1.0 - dist).clamp_min(0.0)
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    return _filter_per_image(x, kernels)


def _zoom_matrix(size: int, zoom: float, device: torch.device) -> torch.Tensor:
    """``[size, size]`` linear-interpolation matrix of a centred zoom along one axis, with
    border clamping (``grid_sample``'s ``border`` mode, ``align_corners=False``)."""
    centre = (size - 1) / 2.0
    i = torch.arange(size, dtype=torch.float32, device=device)
    src = ((i - centre) / zoom + centre).clamp(0.0, size - 1.0)
    lo = src.floor().long()
    hi = (lo + 1).clamp_max(size - 1)
    frac = src - lo.float()
    m = torch.zeros(size, size, device=device)
    m[i.long(), lo] += 1.0 - frac
    m[i.long(), hi] += frac
    return m


def _zoom(x: torch.Tensor, max_zoom: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    acc = x.clone()
    # A centred zoom is separable: rows and columns are resampled by two small matrix
    # products, much faster than a 2-D grid_sample per zoom.
    for i in range(1, ZOOM_SAMPLES + 1):
        z = 1.0 + max_zoom * i / ZOOM_SAMPLES
        my, mx = _zoom_matrix(h, z, x.device), _zoom_matrix(w, z, x.device)
        acc += my @ x @ mx.T
    return acc / (ZOOM_SAMPLES + 1)


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        name="gaussian_blur",
        family=Family.BLUR,
        fn=_gaussian_blur,
        severities=(0.004, 0.008, 0.013, 0.019, 0.027),
        units="Gaussian sigma as a fraction of the shorter side",
        description="Gaussian blur (soft focus, detector scatter).",
        sweep=(0.0, 0.019),
    ),
    Perturbation(
        name="defocus_blur",
        family=Family.BLUR,
        fn=_defocus,
        severities=(0.01, 0.018, 0.027, 0.038, 0.05),
        units="disk radius as a fraction of the shorter side",
        description="Out-of-focus disk blur.",
        sweep=(0.0, 0.038),
    ),
    Perturbation(
        name="motion_blur",
        family=Family.BLUR,
        fn=_motion,
        severities=(0.015, 0.03, 0.05, 0.075, 0.1),
        units="blur path length as a fraction of the shorter side",
        description="Linear motion blur at a random angle per image (patient or camera motion).",
        sweep=(0.0, 0.075),
    ),
    Perturbation(
        name="zoom_blur",
        family=Family.BLUR,
        fn=_zoom,
        severities=(0.03, 0.06, 0.1, 0.15, 0.2),
        units="maximum zoom - 1",
        description="Zoom blur: the image averaged with zoomed-in copies of itself.",
        sweep=(0.0, 0.15),
    ),
)
