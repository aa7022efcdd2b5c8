"""Generative adversarial perturbations (GAP), L-infinity.

Poursaeed, Katsman, Gao, Belongie, "Generative Adversarial Perturbations", CVPR 2018, as
used by Xu et al. 2021. A small ResNet-style image-to-image generator (two
strided convolutions down, residual blocks, two transposed convolutions up) is trained
against the frozen classifier on a dataset; its output passes through ``tanh`` and is
scaled by ``eps``, so every perturbation lies in the L-infinity ball of radius ``eps``
(pixel units of ``[0, 1]`` images), restricted to the mask when one is given.

Training pushes single-label models toward the class each image finds least likely on
the clean image (for a binary model, the other class) and multi-label models toward every
finding flipped (or the chosen ``finding`` flipped). Attack success is judged untargeted:
the prediction left the true label (multi-label: at least one finding flipped).

Fit once with :meth:`GAP.fit` (its own audit stage), :meth:`GAP.save` the generator as
safetensors, and :meth:`GAP.load` it on every shard; attacking costs one generator and
no gradient per batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from app.core.catalogue.attacks import GAPParams
from models.card import Head
from models.errors import ConflictError, InvalidModelFileError
from workers.attacks.context import AttackContext, frozen, model_device, model_fingerprint
from workers.attacks.fitted import FitSource, FittedAttack
from workers.attacks.functional import ShouldStop
from workers.attacks.objectives import Objective, resolve_finding
from workers.attacks.registry import register
from workers.attacks.result import Outcome

logger = logging.getLogger(__name__)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image ``[N, C, H, W]`` in ``[0, 1]`` -> perturbation direction in ``(-1, 1)``, same
    shape (the ResNet generator of GAP / Johnson et al. 2016, any H and W)."""

    def __init__(self, channels: int, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        w = width

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.net = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, w, 7, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            *down(w, 2 * w),
            *down(2 * w, 4 * w),
            *[_ResidualBlock(4 * w) for _ in range(blocks)],
            *up(4 * w, 2 * w),
            *up(2 * w, w),
            nn.ReflectionPad2d(3),
            nn.Conv2d(w, channels, 7),
        )

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # Strided layers round odd sizes up; crop back to the input's size.
        return torch.tanh(self.net(x * 2.0 - 1.0)[..., :h, :w])


@register
class GAP(FittedAttack[GAPParams]):
    """GAP: a trained generator makes each image's perturbation in one forward pass."""

    name: ClassVar[str] = "gap"
    params_model: ClassVar[type[GAPParams]] = GAPParams

    def __init__(self, params: GAPParams) -> None:
        super().__init__(params)
        self.net: ResnetGenerator | None = None
        self.channels: int | None = None

    def perturbation(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The perturbation ``[N, C, H, W]`` for images ``x`` (L-infinity <= eps)."""
        assert self.net is not None
        delta = self.net(x) * self.params.eps
        return delta if mask is None else delta * mask

    def fit(
        self,
        model: nn.Module,
        images: Tensor | FitSource,
        labels: Tensor | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        head: Head | str | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Self:
        p = self.params
        run = self.setup_fit(model, images, labels, epochs=epochs, batch_size=batch_size,
                             generator=generator, mask=mask, head=head,
                             should_stop=should_stop)
        ctx = run.ctx
        channels = int(run.source.take(np.arange(1))[0].shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = ResnetGenerator(channels, p.width, p.blocks).to(ctx.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=p.lr, betas=(0.5, 0.999))
        net.train()
        with frozen(model), torch.enable_grad():
            for epoch in range(run.epochs):
                total, count = 0.0, 0
                for xb, yb, mb in run.batches():
                    objective = self._training_objective(ctx, xb, yb)
                    delta = net(xb) * p.eps
                    if mb is not None:
                        delta = delta * mb
                    outputs = ctx.forward((xb + delta).clamp(0.0, 1.0))
                    loss = -objective.loss(outputs).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * xb.shape[0]
                    count += xb.shape[0]
                logger.info("gap epoch %d/%d: target loss %.4f", epoch + 1, run.epochs,
                            total / count)
        net.eval()
        self.net, self.channels = net, channels
        self.fitted_for = model_fingerprint(model)
        return self

    def _training_objective(self, ctx: AttackContext, x: Tensor, labels: Tensor) -> Objective:
        """Toward the least-likely class (single-label) or every finding flipped."""
        untargeted = Objective(
            head=ctx.head, labels=labels, num_classes=ctx.num_classes,
            thresholds=ctx.thresholds,
            finding=self._finding(ctx),
        )  # fmt: skip
        if ctx.head == Head.SIGMOID:
            return untargeted.with_target(1.0 - labels)
        if ctx.head == Head.BINARY_LOGIT:
            return untargeted.with_target(1 - labels)
        with torch.no_grad():
            probs = ctx.forward(x).softmax(dim=1)
        least = probs.scatter(1, labels.view(-1, 1), float("inf")).argmin(dim=1)
        return untargeted.with_target(least)

    def _finding(self, ctx: AttackContext) -> int | None:
        return resolve_finding(
            self.params.finding, head=ctx.head, label_names=ctx.label_names,
            num_classes=ctx.num_classes,
        )  # fmt: skip

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        self._require_fitted(ctx.model)
        assert self.net is not None
        self.net = self.net.to(x.device)
        with torch.no_grad(), ctx.amp():
            delta = self.perturbation(x, mask).float()
        x_adv = (x + delta).clamp_(0.0, 1.0)
        zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return Outcome(x_adv, zeros, budget=self.params.eps, norm="linf")

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        self._require_state()
        assert self.net is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        metadata = {**self._metadata(), "channels": str(self.channels)}
        save_file(state, str(path), metadata=metadata)

    def load(self, path: str | Path, model: nn.Module | None = None) -> Self:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InvalidModelFileError("cannot read the fitted GAP state") from exc
        self._check_metadata(metadata, model)
        channels = int(metadata.get("channels", "0"))
        net = ResnetGenerator(channels, self.params.width, self.params.blocks)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidModelFileError("the fitted GAP state does not fit the generator") from exc
        net.eval()
        if model is not None:
            net.to(model_device(model))
        self.net, self.channels = net, channels
        self.fitted_for = metadata["model"]
        return self

    def _require_state(self) -> None:
        if self.net is None or self.fitted_for is None:
            raise ConflictError("attack 'gap' has no fitted generator to save: call fit() first")

