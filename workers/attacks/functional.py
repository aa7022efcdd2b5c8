"""Functional attack primitives shared by the attack engine and adversarial training.

Everything here works on batches of images ``[N, C, H, W]`` in ``[0, 1]`` pixel space, so
budgets are in real pixel units (``eps=4/255`` is four grey levels of an 8-bit image).
Budgets, step sizes and step counts may be one number for the batch or one per image
(a tensor of shape ``[N]``), which is what multi-perturbation adversarial training
(MPAdvT, Xu et al. 2021) and the per-image minimum-eps search need.

None of these functions touches the model's train/eval mode or its parameters'
``requires_grad`` flags: the caller decides (the attack engine freezes the model in
:class:`workers.attacks.base.Attack`; adversarial training keeps it in train mode on
purpose). Gradients are taken with :func:`torch.autograd.grad` with respect to the images
only, so no parameter ``.grad`` is ever written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from models.errors import JobCancelledError
from models.imaging import quantize

Norm = Literal["linf", "l2"]
#: Polled inside attack loops; ``True`` stops the attack (see :func:`check_stop`).
ShouldStop = Callable[[], bool]


class AttackStoppedError(JobCancelledError):
    """An attack stopped inside its loop because its ``should_stop`` callback said so
    (a job's cancel, typically); the batch's work is abandoned."""


def check_stop(should_stop: ShouldStop | None) -> None:
    """Raise :class:`AttackStoppedError` when ``should_stop()`` is true.

    Attack loops call this once per iteration (per gradient step, query round or fitting
    batch), so a cancel takes effect within one iteration instead of after the batch; the
    callback is expected to be cheap (the job's one reads the database at most once a
    second).
    """
    if should_stop is not None and should_stop():
        raise AttackStoppedError("the attack was stopped on request")

#: Added to norms before dividing by them.
_TINY = 1e-12


def per_sample(value: float | Tensor, x: Tensor) -> Tensor:
    """``value`` as a tensor that broadcasts against ``x`` ``[N, ...]`` per sample.

    A float becomes a 0-d tensor; a ``[N]`` tensor becomes ``[N, 1, 1, 1]`` (for 4-D ``x``).
    """
    if not isinstance(value, Tensor):
        return torch.tensor(float(value), dtype=x.dtype, device=x.device)
    value = value.to(device=x.device, dtype=x.dtype)
    if value.dim() == 0:
        return value
    if value.dim() == x.dim() and value.shape[0] == x.shape[0] and value[0].numel() == 1:
        return value
    if value.shape != (x.shape[0],):
        raise ValueError(
            f"per-sample values must have shape [{x.shape[0]}], got {tuple(value.shape)}"
        )
    return value.view(-1, *([1] * (x.dim() - 1)))


def l2_norms(delta: Tensor) -> Tensor:
    """Per-sample L2 norms ``[N]`` of a batch ``[N, ...]``."""
    return delta.flatten(1).norm(p=2, dim=1)


def linf_norms(delta: Tensor) -> Tensor:
    """Per-sample L-infinity norms ``[N]`` of a batch ``[N, ...]``."""
    return delta.flatten(1).abs().amax(dim=1)


def project_linf(delta: Tensor, eps: float | Tensor) -> Tensor:
    """Project perturbations ``[N, ...]`` onto the L-infinity ball of radius ``eps``.

    ``eps`` is a float or a ``[N]`` tensor. Returns a new tensor.
    """
    e = per_sample(eps, delta)
    return torch.maximum(torch.minimum(delta, e), -e)


def project_l2(delta: Tensor, eps: float | Tensor) -> Tensor:
    """Project perturbations ``[N, ...]`` onto the L2 ball of radius ``eps`` (per sample).

    Perturbations already inside the ball are unchanged. Returns a new tensor.
    """
    e = per_sample(eps, delta)
    norms = l2_norms(delta).view(-1, *([1] * (delta.dim() - 1)))
    factor = torch.clamp(e / (norms + _TINY), max=1.0)
    return delta * factor


def project(delta: Tensor, eps: float | Tensor, norm: Norm) -> Tensor:
    """:func:`project_linf` or :func:`project_l2`."""
    return project_linf(delta, eps) if norm == "linf" else project_l2(delta, eps)


def draw_noise(
    shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None, normal: bool = False
) -> Tensor:
    """Uniform ``[0, 1)`` (or standard normal) noise on ``like``'s device.

    A generator on another device (a CPU generator for CUDA data) draws there and the
    noise is moved, so one seed gives the same start everywhere.
    """
    device = generator.device if generator is not None else like.device
    draw = torch.randn if normal else torch.rand
    noise = draw(shape, generator=generator, device=device, dtype=like.dtype)
    return noise.to(like.device)


def random_init(
    x: Tensor,
    eps: float | Tensor,
    norm: Norm = "linf",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A random perturbation drawn uniformly from the ``eps`` ball (not yet clipped to [0, 1]).

    L-infinity: independent uniform noise in ``[-eps, eps]``. L2: uniform in the ball
    (Gaussian direction, radius ``eps * u^(1/d)``).
    """
    e = per_sample(eps, x)
    if norm == "linf":
        return (draw_noise(tuple(x.shape), x, generator) * 2.0 - 1.0) * e
    direction = draw_noise(tuple(x.shape), x, generator, normal=True)
    direction = direction / (l2_norms(direction).view(-1, *([1] * (x.dim() - 1))) + _TINY)
    d = x[0].numel()
    radius = draw_noise((x.shape[0],), x, generator).pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1))) * e


def quantize_8bit(
    x_adv: Tensor,
    x_clean: Tensor,
    eps: float | Tensor | None = None,
    norm: Norm = "linf",
) -> Tensor:
    """Round adversarial images ``[N, C, H, W]`` in ``[0, 1]`` to the 8-bit grid (k/255).

    An adversarial example only matters if it survives being saved as a PNG. Each pixel is
    rounded to the nearest grey level; where that would leave the budget (L-infinity:
    per pixel; L2: per image) it is rounded *toward the clean image* instead, which never
    moves a pixel farther from a clean image that is itself on the 8-bit grid (decoded
    PNG/JPEG/DICOM-windowed images are), so the budget still holds after quantization.
    Without ``eps`` (minimum-norm attacks) every pixel is rounded to the nearest level.

    Args:
        x_adv: adversarial images in ``[0, 1]``.
        x_clean: the clean images they came from, same shape.
        eps: the budget in pixel units, a float or per-image ``[N]``; ``None`` for none.
        norm: the norm of the budget.
    """
    scaled = x_adv * 255.0
    nearest = torch.round(scaled).div_(255.0)
    if eps is None:
        return nearest.clamp_(0.0, 1.0)
    # Toward the clean image: floor above it, ceil below it.
    toward = torch.where(x_adv >= x_clean, torch.floor(scaled), torch.ceil(scaled)).div_(255.0)
    e = per_sample(eps, x_adv)
    # A clean pixel off the grid can make even "toward" overshoot; keep the clean value then.
    toward = torch.where((toward - x_clean).abs() > e + 1e-7, x_clean, toward)
    if norm == "linf":
        out = torch.where((nearest - x_clean).abs() > e + 1e-7, toward, nearest)
    else:
        over = l2_norms(nearest - x_clean) > e.flatten() + 1e-6
        out = torch.where(over.view(-1, *([1] * (x_adv.dim() - 1))), toward, nearest)
    return out.clamp_(0.0, 1.0)


def to_uint8(x: Tensor) -> np.ndarray:
    """Images in ``[0, 1]`` (any shape, e.g. ``[N, C, H, W]``) as uint8 grey levels
    ``round(255 * x)`` on the CPU, same shape (values outside ``[0, 1]`` clipped)."""
    return quantize(x)


def _step_rows(steps: int | Tensor, x: Tensor) -> tuple[int, Tensor | None]:
    """Iterations to run, and for per-image step counts a ``[iterations, N]`` 0/1 factor on
    each image's step (images with fewer steps stop moving early)."""
    if not isinstance(steps, Tensor):
        return int(steps), None
    steps_t = steps.to(x.device)
    n_iter = int(steps_t.max()) if steps_t.numel() else 0
    rows = torch.arange(n_iter, device=x.device).view(-1, 1) < steps_t.view(1, -1)
    return n_iter, rows.to(x.dtype)


def pgd(
    model_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int | Tensor,
    norm: Norm = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """Projected gradient ascent (Madry et al. 2018, "Towards deep learning models
    resistant to adversarial attacks"); with ``random_start=False`` it is BIM
    (Kurakin et al. 2017), with one step of size ``eps`` FGSM (Goodfellow et al. 2015).

    Maximizes ``loss_fn(model_fn(x_adv))`` over the ``eps`` ball around ``x`` intersected
    with ``[0, 1]``. L-infinity steps follow the gradient's sign; L2 steps follow the
    gradient normalized per image.

    Args:
        model_fn: images ``[N, C, H, W]`` in ``[0, 1]`` -> model outputs.
        x: clean images ``[N, C, H, W]`` in ``[0, 1]``.
        loss_fn: model outputs -> scalar loss to **maximize**. It must be a sum (or mean)
            of per-image terms so that each image's gradient is its own.
        eps: budget in pixel units, a float or per-image ``[N]``.
        step_size: step in pixel units (L-infinity) or L2 length, float or ``[N]``.
        steps: number of steps, an int or per-image ``[N]`` integer tensor (images with
            fewer steps stop moving early; the batch runs ``max(steps)`` iterations).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start uniformly inside the ball instead of at ``x``.
        generator: random source for the start (seed it for reproducible results).
        mask: optional ``[N, 1, H, W]`` (or broadcastable) 0/1 region the perturbation
            may touch.
        should_stop: polled before every step; ``True`` raises :class:`AttackStoppedError`.

    Returns:
        Adversarial images ``[N, C, H, W]`` in ``[0, 1]``, within ``eps`` of ``x``,
        not quantized and not requiring grad.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    x = x.detach()
    e = per_sample(eps, x)
    alpha = per_sample(step_size, x)
    if mask is not None:
        mask = mask.to(device=x.device, dtype=x.dtype)

    n_iter, active = _step_rows(steps, x)

    if random_start:
        delta = random_init(x, eps, norm, generator=generator)
        if mask is not None:
            delta.mul_(mask)
        x_adv = (x + delta).clamp_(0.0, 1.0)
    else:
        x_adv = x.clone()

    view = (-1, *([1] * (x.dim() - 1)))
    if norm == "linf":
        # The ball and the pixel range are both boxes: intersect them once.
        lower = (x - e).clamp_(min=0.0)
        upper = (x + e).clamp_(max=1.0)

    for t in range(n_iter):
        check_stop(should_stop)
        x_adv.requires_grad_(True)
        loss = loss_fn(model_fn(x_adv))
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv.requires_grad_(False)
        if mask is not None:
            grad.mul_(mask)
        step = alpha if active is None else alpha * active[t].view(view)
        if norm == "linf":
            x_adv.addcmul_(grad.sign_(), step)
            torch.minimum(x_adv, upper, out=x_adv)
            torch.maximum(x_adv, lower, out=x_adv)
        else:
            grad.div_(l2_norms(grad).add_(_TINY).view(view))
            x_adv.addcmul_(grad, step)
            x_adv = (x + project_l2(x_adv - x, e)).clamp_(0.0, 1.0)
    return x_adv.detach()
