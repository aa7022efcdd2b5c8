"""Geometry: translation, rotation, tilt (perspective), scaling and shear.

All are one batched :func:`warp` (``grid_sample``, bilinear) with a per-image ``3 x 3``
matrix in centred pixel coordinates, so rotations stay rotations on non-square images.
Outside the field of view is black (zero), as a detector or camera sees nothing there.
Directions and signs are drawn per image from the generator; a sequence keeps them fixed
and sweeps the signed amount through zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from workers.perturbations.base import Family, Perturbation, random_sign, short_side, uniform


def warp(x: torch.Tensor, matrices: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Resample ``[N, C, H, W]`` images through per-image homographies.

    ``matrices`` (``[N, 3, 3]``) map an *output* pixel position to the *input* position
    it samples, both in pixels relative to the image centre (x right, y down).
    """
    n, _, h, w = x.shape
    dev = x.device
    xs = torch.arange(w, dtype=torch.float32, device=dev) - (w - 1) / 2.0
    ys = torch.arange(h, dtype=torch.float32, device=dev) - (h - 1) / 2.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, h * w, 3)
    src = pts @ matrices.to(dev, torch.float32).transpose(1, 2)  # [N, H*W, 3]
    src = src[..., :2] / src[..., 2:].clamp_min(1e-6)
    # align_corners=False: pixel centre i sits at (2i + 1) / size - 1.
    scale = torch.tensor([2.0 / w, 2.0 / h], device=dev)
    grid = (src * scale).reshape(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).repeat(n, 1, 1)


def _translate(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = uniform(g, (n,), 0.0, 2.0 * math.pi, x.device)
    shift = fraction * short_side(x)
    m = _eye(n, x.device)
    m[:, 0, 2] = -shift * torch.cos(angle)
    m[:, 1, 2] = -shift * torch.sin(angle)
    return warp(x, m)


def _rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    theta = math.radians(degrees) * random_sign(g, n, x.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m = _eye(n, x.device)
    # Output -> input is the inverse rotation.
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, s, -s, c
    return warp(x, m)


def _scale(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    # Zoom in or out at random: factor 1 + amount or 1 / (1 + amount), symmetric in log.
    log_factor = math.log1p(abs(amount)) * math.copysign(1.0, amount)
    factor = torch.exp(log_factor * random_sign(g, n, x.device))
    m = _eye(n, x.device)
    m[:, 0, 0] = 1.0 / factor
    m[:, 1, 1] = 1.0 / factor
    return warp(x, m)


def _shear(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    k = amount * random_sign(g, n, x.device)
    horizontal = random_sign(g, n, x.device) > 0
    m = _eye(n, x.device)
    m[:, 0, 1] = torch.where(horizontal, k, torch.zeros_like(k))
    m[:, 1, 0] = torch.where(horizontal, torch.zeros_like(k), k)
    return warp(x, m)


def _tilt(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotate the image plane in 3-D about a random in-plane axis through its centre and
    re-project it with a pinhole camera at distance ``f`` (the longer side, about 53 degrees
    of field of view). Plane point ``(x, y)`` lands at ``K [r1 r2 t] (x, y, 1)`` with
    ``t = (0, 0, f)``; the warp needs the inverse of that homography."""
    n, _, h, w = x.shape
    phi = uniform(g, (n,), 0.0, math.pi, x.device)
    theta = math.radians(degrees) * random_sign(g, n, x.device)
    ux, uy = torch.cos(phi), torch.sin(phi)
    c, s = torch.cos(theta), torch.sin(theta)
    one_c = 1.0 - c
    # Rodrigues' formula for an axis (ux, uy, 0).
    r = torch.zeros(n, 3, 3, device=x.device)
    r[:, 0, 0] = c + ux * ux * one_c
    r[:, 0, 1] = ux * uy * one_c
    r[:, 0, 2] = uy * s
    r[:, 1, 0] = ux * uy * one_c
    r[:, 1, 1] = c + uy * uy * one_c
    r[:, 1, 2] = -ux * s
    r[:, 2, 0] = -uy * s
    r[:, 2, 1] = ux * s
    r[:, 2, 2] = c
    f = float(max(h, w))
    forward = torch.zeros(n, 3, 3, device=x.device)
    forward[:, :2, :2] = f * r[:, :2, :2]
    forward[:, 2, :2] = r[:, 2, :2]
    forward[:, 2, 2] = f
    return warp(x, torch.linalg.inv(forward))


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        name="translation",
        family=Family.GEOMETRY,
        fn=_translate,
        severities=(0.02, 0.04, 0.07, 0.1, 0.14),
        units="shift as a fraction of the shorter side (random direction)",
        description="Translation (patient or field positioning).",
        sweep=(-0.07, 0.07),
    ),
    Perturbation(
        name="rotation",
        family=Family.GEOMETRY,
        fn=_rotate,
        severities=(3.0, 6.0, 10.0, 15.0, 20.0),
        units="degrees (random sign)",
        description="In-plane rotation about the centre.",
        sweep=(-10.0, 10.0),
    ),
    Perturbation(
        name="tilt",
        family=Family.GEOMETRY,
        fn=_tilt,
        severities=(5.0, 10.0, 15.0, 22.0, 30.0),
        units="degrees of out-of-plane rotation (random axis and sign)",
        description="Perspective tilt of the image plane (oblique projection).",
        sweep=(-15.0, 15.0),
    ),
    Perturbation(
        name="scaling",
        family=Family.GEOMETRY,
        fn=_scale,
        severities=(0.05, 0.1, 0.15, 0.22, 0.3),
        units="zoom factor - 1 (zoom in or out at random)",
        description="Scaling about the centre (magnification, source-detector distance).",
        sweep=(-0.15, 0.15),
    ),
    Perturbation(
        name="shear",
        family=Family.GEOMETRY,
        fn=_shear,
        severities=(0.05, 0.1, 0.15, 0.22, 0.3),
        units="shear factor (random axis and sign)",
        description="Horizontal or vertical shear.",
        sweep=(-0.15, 0.15),
    ),
)
