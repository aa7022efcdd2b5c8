"""Grad-CAM maps and the measures that compare them (Selvaraju et al., 2017, *Grad-CAM:
Visual explanations from deep networks via gradient-based localization*, ICCV).

Maps are ``[N, H, W]`` non-negative tensors at the input resolution; regions are boolean
masks of the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import Tensor

from models.card import Head
from workers.analyses.layer_taps import LayerReader, join_parts
from workers.analyses.layers import LayerAccessError


def target_scores(logits: Tensor, targets: Tensor, head: Head) -> Tensor:
    """``[N]`` the score each map explains: the class or finding logit (binary-logit: the
    logit for class 1, its negation for class 0)."""
    if head == Head.BINARY_LOGIT:
        z = logits.reshape(logits.shape[0])
        return torch.where(targets == 1, z, -z)
    return logits.gather(1, targets.long().view(-1, 1)).squeeze(1)


def grad_cam(
    reader: LayerReader,
    x: Tensor,
    choose: Callable[[Tensor], Tensor],
    head: Head,
) -> tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM maps of a batch.

    Args:
        reader: reads one point, the convolutional block (``[N, C, h, w]``).
        x: ``[N, C, H, W]`` images in ``[0, 1]``.
        choose: logits ``[N, K]`` -> targets ``[F, N]`` (class or finding per image).
        head: the model's head.

    Returns:
        maps ``[F, N, H, W]`` in ``[0, 1]`` (all zero when degenerate), logits ``[N, K]``,
        targets ``[F, N]``.
    """
    n, size = x.shape[0], (x.shape[2], x.shape[3])
    with torch.inference_mode(False), torch.enable_grad():
        # A leaf that needs gradients: the model's parameters may be frozen.
        xi = x.detach().clone().requires_grad_(True)
        logits, parts = reader.run(xi)
        acts = parts[0]
        if any(a.dim() != 4 for a in acts):
            raise LayerAccessError(
                f"layer {reader.points[0].path!r} gives {acts[0].dim()}-D activations; "
                "Grad-CAM needs a convolutional [N, C, h, w] block"
            )
        if not all(a.requires_grad for a in acts):
            raise LayerAccessError(f"no gradient reaches layer {reader.points[0].path!r}")
        targets = choose(logits.detach())
        maps = []
        for f in range(targets.shape[0]):
            score = target_scores(logits, targets[f], head).sum()
            grads = torch.autograd.grad(score, acts, retain_graph=f < targets.shape[0] - 1,
                                        allow_unused=True)
            cams = []
            for a, g in zip(acts, grads, strict=True):
                g = torch.zeros_like(a) if g is None else g
                weights = g.mean(dim=(2, 3), keepdim=True)
                cams.append(torch.relu((weights * a).sum(dim=1, keepdim=True)).detach())
            cam = join_parts(cams, n)
            cam = nnf.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
            peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
            maps.append(torch.where(peak > 0, cam / peak.clamp_min(1e-30), torch.zeros_like(cam)))
    return torch.stack(maps), logits.detach(), targets


def top_region(cam: Tensor, fraction: float) -> Tensor:
    """Boolean ``[N, H, W]``: the ``fraction`` of pixels with the highest (non-zero) values."""
    flat = cam.flatten(1)
    k = max(1, min(flat.shape[1], round(fraction * flat.shape[1])))
    threshold = flat.topk(k, dim=1).values[:, -1:]
    return ((flat >= threshold) & (flat > 0)).view_as(cam)


def iou(a: Tensor, b: Tensor) -> Tensor:
    """``[N]`` intersection over union of boolean maps (nan when both are empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, math.nan))


def centre_of_mass(cam: Tensor) -> Tensor:
    """``[N, 2]`` (row, column) centre of mass in pixels (nan for an all-zero map)."""
    h, w = cam.shape[1], cam.shape[2]
    ys = torch.arange(h, device=cam.device, dtype=cam.dtype).view(1, h, 1)
    xs = torch.arange(w, device=cam.device, dtype=cam.dtype).view(1, 1, w)
    mass = cam.sum(dim=(1, 2))
    cy = (cam * ys).sum(dim=(1, 2)) / mass
    cx = (cam * xs).sum(dim=(1, 2)) / mass
    com = torch.stack([cy, cx], dim=1)
    return torch.where((mass > 0).unsqueeze(1), com, torch.full_like(com, math.nan))


def mass_inside(cam: Tensor, mask: Tensor) -> Tensor:
    """``[N]`` share of the map's mass inside ``mask`` ``[N, H, W]`` (nan: empty map or mask)."""
    m = (mask > 0.5).to(cam.dtype)
    total = cam.sum(dim=(1, 2))
    inside = (cam * m).sum(dim=(1, 2))
    ok = (total > 0) & (m.sum(dim=(1, 2)) > 0)
    return torch.where(ok, inside / total.clamp_min(1e-30), torch.full_like(total, math.nan))


