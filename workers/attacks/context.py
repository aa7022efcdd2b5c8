"""What an attack algorithm runs against: the resolved model (:class:`AttackContext`), the
model freezing, input checks, and the per-image best-so-far bookkeeping (:class:`Best`,
:func:`run_on_robust`) that restarts and cascades share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.card import Head
from models.errors import InvalidParametersError
from workers.attacks import functional as F
from workers.attacks.objectives import Objective
from workers.attacks.params import Norm
from workers.attacks.result import Outcome


@dataclass
class AttackContext:
    """The resolved model and settings an algorithm runs against.

    Attributes:
        model: the model, in eval mode with frozen parameters while the attack runs.
        head: its output head.
        num_classes: number of labels (2 for a binary-logit head).
        thresholds: ``[K]`` multi-label thresholds (or ``None``).
        label_names: the card's labels when known.
        device: where the model lives; every tensor handed to the algorithm is there.
        autocast: run forwards under CUDA autocast.
        quantize: quantize final images to 8 bits.
        should_stop: polled by the algorithm's loop (:meth:`check_stop`); ``True`` stops
            the attack with :class:`~workers.attacks.functional.AttackStoppedError`.
    """

    model: nn.Module
    head: Head
    num_classes: int
    thresholds: Tensor | None
    label_names: tuple[str, ...] | None
    device: torch.device
    autocast: bool = False
    quantize: bool = True
    should_stop: F.ShouldStop | None = None

    def check_stop(self) -> None:
        """Raise :class:`~workers.attacks.functional.AttackStoppedError` if asked to stop."""
        F.check_stop(self.should_stop)

    def amp(self) -> AbstractContextManager[Any]:
        """CUDA autocast (float16) when enabled and on a GPU, else nothing."""
        if self.autocast and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def forward(self, x: Tensor) -> Tensor:
        """Model outputs ``[N, K]`` (``[N, 1]`` binary-logit) as float32 logits."""
        if self.autocast and x.device.type == "cuda":
            with self.amp():
                out = self.model(x)
            return as_2d(out).float()
        return as_2d(self.model(x))

    def finish(
        self, x_adv: Tensor, x: Tensor, budget: float | Tensor | None, norm: Norm = "linf"
    ) -> Tensor:
        """Clip to ``[0, 1]`` and, when enabled, quantize to 8 bits within ``budget``."""
        x_adv = x_adv.clamp(0.0, 1.0)
        if self.quantize:
            x_adv = F.quantize_8bit(x_adv, x, budget, norm)
        return x_adv

    def evaluate(
        self, x_adv: Tensor, x: Tensor, budget: float | Tensor | None, norm: Norm = "linf"
    ) -> tuple[Tensor, Tensor]:
        """:meth:`finish` the images and run the model on them (no grad)."""
        final = self.finish(x_adv, x, budget, norm)
        with torch.no_grad():
            return final, self.forward(final)

    def finish_ste(
        self, x_adv: Tensor, x: Tensor, budget: float | Tensor | None, norm: Norm = "linf"
    ) -> Tensor:
        """:meth:`finish` in the forward pass, identity in the backward pass (straight-through),
        so an optimizer can judge success on the images it will really return."""
        final = self.finish(x_adv.detach(), x, budget, norm)
        return x_adv + (final - x_adv).detach()


@dataclass
class Best:
    """Per-image best adversarial images found so far (final, i.e. quantized, images).

    Attributes:
        images: ``[N, C, H, W]`` final images.
        outputs: model outputs on them.
        success: bool ``[N]``.
        loss: ``[N]`` objective loss on them (ties between failures go to the higher loss).
        iterations: long ``[N]`` gradient steps or queries spent so far.
    """

    images: Tensor
    outputs: Tensor
    success: Tensor
    loss: Tensor
    iterations: Tensor

    @classmethod
    def evaluate(
        cls,
        ctx: AttackContext,
        x: Tensor,
        x_adv: Tensor,
        objective: Objective,
        iterations: Tensor,
        budget: float | Tensor | None,
        norm: Norm = "linf",
    ) -> Best:
        final, outputs = ctx.evaluate(x_adv, x, budget, norm)
        return cls(
            final, outputs, objective.success(outputs), objective.loss(outputs), iterations
        )

    def robust(self) -> Tensor:
        """Indices of the images not yet fooled."""
        return (~self.success).nonzero().flatten()

    def merge(self, index: Tensor, other: Best, *, by_loss: bool = True) -> None:
        """Take ``other`` (results for the images at ``index``) where it is better: a success
        over a failure, or (``by_loss``) a higher loss between failures."""
        better = other.success & ~self.success[index]
        if by_loss:
            better |= ~self.success[index] & ~other.success & (other.loss > self.loss[index])
        keep = index[better]
        self.images[keep] = other.images[better]
        self.outputs[keep] = other.outputs[better]
        self.success[keep] = other.success[better]
        self.loss[keep] = other.loss[better]
        self.iterations[index] += other.iterations

    def outcome(self, budget: float | Tensor | None, norm: Norm = "linf") -> Outcome:
        return Outcome(
            self.images, self.iterations, budget=budget, norm=norm, outputs=self.outputs
        )


#: ``(index, x_sub, objective_sub, mask_sub) -> (x_adv_sub, iterations_sub)``, where
#: ``index`` holds the positions of the sub-batch in the full batch.
AttackFn = Callable[[Tensor, Tensor, "Objective", Tensor | None], tuple[Tensor, Tensor]]


def run_on_robust(
    ctx: AttackContext,
    x: Tensor,
    objective: Objective,
    mask: Tensor | None,
    best: Best,
    attack: AttackFn,
    budget: float | Tensor | None,
    norm: Norm = "linf",
    *,
    by_loss: bool = True,
) -> int:
    """Run ``attack`` (an :data:`AttackFn`) on the images ``best`` has not fooled yet and
    merge the results; returns how many it ran on.

    This is how restarts and the AutoAttack cascade spend effort only where it is needed.
    """
    todo = best.robust()
    if todo.numel() == 0:
        return 0
    n = x.shape[0]
    sub_mask = mask[todo] if mask is not None and mask.shape[0] == n else mask
    sub_budget = budget[todo] if isinstance(budget, Tensor) and budget.dim() else budget
    sub = objective.subset(todo)
    x_sub = x[todo]
    adv, iterations = attack(todo, x_sub, sub, sub_mask)
    best.merge(
        todo,
        Best.evaluate(ctx, x_sub, adv, sub, iterations, sub_budget, norm),
        by_loss=by_loss,
    )
    return int(todo.numel())


def as_2d(out: Tensor) -> Tensor:
    return out.reshape(out.shape[0], -1) if out.dim() != 2 else out


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` for the duration; each module's mode and each
    parameter's flag are restored afterwards, also when the body raises."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def model_fingerprint(model: nn.Module) -> str:
    """The card's sha256 when the model has one, else a sha256 of its weights."""
    card = getattr(model, "card", None)
    sha = getattr(card, "sha256", None)
    if isinstance(sha, str) and sha:
        return sha
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_images(images: Tensor, device: torch.device) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InvalidParametersError(
            f"images must be a float tensor [N, C, H, W] in [0, 1], got {shape}"
        )
    x = images.detach().to(device=device, dtype=torch.float32)
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise InvalidParametersError("images must be in [0, 1] (normalization is the model's job)")
    return x


def check_mask(mask: Tensor | None, x: Tensor) -> Tensor | None:
    if mask is None:
        return None
    n, _, h, w = x.shape
    if mask.dim() != 4 or mask.shape[0] not in (1, n) or mask.shape[1] != 1:
        raise InvalidParametersError(
            f"mask must have shape [{n}, 1, {h}, {w}] (or [1, 1, {h}, {w}]), "
            f"got {tuple(mask.shape)}"
        )
    if tuple(mask.shape[2:]) != (h, w):
        raise InvalidParametersError(f"mask must be {h}x{w}, got {tuple(mask.shape[2:])}")
    return (mask.to(device=x.device) > 0).to(x.dtype)
