"""The attack contract: a small typed base class and the result every attack returns.

An :class:`Attack` is built from validated parameters (``get_attack(name, **params)``) and
called on a model and a batch::

    attack = get_attack("pgd", eps=4 / 255, steps=10)
    result = attack(model, images, labels)

``__call__`` does everything attacks share, so a subclass writes only its algorithm
(:meth:`Attack._attack`):

1. resolves the head (``model.head``, or ``head=`` for a plain module), the number of
   classes, the multi-label thresholds and label names;
2. validates images (``[N, C, H, W]`` float in ``[0, 1]``), labels (class indices
   ``[N]``, or 0/1 findings ``[N, K]``) and the optional mask, and moves them to the
   model's device;
3. puts the model in eval mode and turns off ``requires_grad`` on its parameters, and
   restores every module's mode and every parameter's flag in ``finally``, also on error;
4. after the algorithm, clips to ``[0, 1]``, quantizes to 8 bits within the budget
   (``quantize=True``), runs the model once more and reports success on those images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from models.card import Head
from models.errors import ConflictError, InvalidParametersError
from workers.attacks import functional as F
from workers.attacks.objectives import Objective, check_labels, resolve_finding, resolve_target
from workers.attacks.params import AttackParams, Norm, TargetedParams

logger = logging.getLogger(__name__)

ALL_HEADS: frozenset[Head] = frozenset(Head)

P = TypeVar("P", bound=AttackParams)


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns for a batch of N images (tensors on the model's device).

    Attributes:
        images: ``[N, C, H, W]`` adversarial images in ``[0, 1]`` (8-bit values when the
            attack quantizes).
        success: bool ``[N]``, judged on ``images`` (see :class:`Objective.success`):
            untargeted, the prediction left the true label (multi-label: at least one
            finding flipped); targeted, the prediction reached the target.
        linf: ``[N]`` L-infinity size of ``images - clean`` in pixel units.
        l2: ``[N]`` L2 size of ``images - clean`` in pixel units.
        iterations: long ``[N]``: gradient steps spent on the image (white-box), or model
            queries (black-box); 0 for attacks fitted beforehand (GAP, UAP).
        loss: ``[N]`` head loss of the *true* labels on ``images`` (cross-entropy, BCE over
            the findings or the chosen finding, or BCE of the single logit).
        flipped: long ``[N]``: findings whose prediction differs from the label
            (multi-label), or 1/0 (single-label).
        predictions: adversarial predictions in the label convention of the head.
        outputs: ``[N, K]`` (``[N, 1]`` binary-logit) float logits of the model on
            ``images``, from the forward that judged success; reuse them instead of
            running the model again.
        norm_found: ``[N]`` for minimum-norm attacks: the norm of the smallest successful
            perturbation found (``inf`` where none was found); ``None`` otherwise.
        attack: the attack's registry name.
        params: its parameters.
    """

    images: Tensor
    success: Tensor
    linf: Tensor
    l2: Tensor
    iterations: Tensor
    loss: Tensor
    flipped: Tensor
    predictions: Tensor
    outputs: Tensor
    norm_found: Tensor | None = None
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else 0.0

    def to_numpy(self, *, images: bool = False) -> dict[str, np.ndarray]:
        """Per-image arrays (on the CPU); the images too when ``images=True``."""
        out: dict[str, np.ndarray] = {
            "success": self.success.cpu().numpy(),
            "linf": self.linf.float().cpu().numpy(),
            "l2": self.l2.float().cpu().numpy(),
            "iterations": self.iterations.cpu().numpy(),
            "loss": self.loss.float().cpu().numpy(),
            "flipped": self.flipped.cpu().numpy(),
            "predictions": self.predictions.cpu().numpy(),
            "outputs": self.outputs.float().cpu().numpy(),
        }
        if self.norm_found is not None:
            out["norm_found"] = self.norm_found.float().cpu().numpy()
        if images:
            out["images"] = self.images.float().cpu().numpy()
        return out

    def summary(self) -> dict[str, float]:
        """Batch means, JSON-able: success rate, perturbation sizes, iterations, loss."""
        n = len(self)
        if n == 0:
            return {"n": 0.0}
        out = {
            "n": float(n),
            "success_rate": self.success_rate,
            "linf_mean": float(self.linf.float().mean()),
            "linf_max": float(self.linf.float().max()),
            "l2_mean": float(self.l2.float().mean()),
            "iterations_mean": float(self.iterations.float().mean()),
            "loss_mean": float(self.loss.float().mean()),
            "flipped_mean": float(self.flipped.float().mean()),
        }
        if self.norm_found is not None:
            finite = self.norm_found[torch.isfinite(self.norm_found)]
            out["norm_found_median"] = float(finite.median()) if finite.numel() else float("inf")
        return out


@dataclass
class Outcome:
    """What an algorithm hands back to :meth:`Attack.__call__`.

    Attributes:
        images: adversarial images in ``[0, 1]``. If ``outputs`` is given they are final
            (already quantized by :meth:`AttackContext.finish`), else the base finishes them.
        iterations: long ``[N]`` gradient steps or queries.
        budget: the budget used for quantization (float or ``[N]``), ``None`` for none.
        norm: the norm of that budget and of ``norm_found``.
        outputs: model outputs on the final ``images``, when the algorithm has them.
        norm_found: override of the minimum-norm result (e.g. the bisected eps).
    """

    images: Tensor
    iterations: Tensor
    budget: float | Tensor | None = None
    norm: Norm = "linf"
    outputs: Tensor | None = None
    norm_found: Tensor | None = None


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
    """

    model: nn.Module
    head: Head
    num_classes: int
    thresholds: Tensor | None
    label_names: tuple[str, ...] | None
    device: torch.device
    autocast: bool = False
    quantize: bool = True

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
            return _as_2d(out).float()
        return _as_2d(self.model(x))

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


def _as_2d(out: Tensor) -> Tensor:
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


class Attack(ABC, Generic[P]):
    """Base class of every attack.

    Class attributes:
        name: registry name.
        params_model: the frozen pydantic parameter model.
        heads: heads the attack supports (others raise :class:`InvalidParametersError`).
        requires_fit: the attack must be fitted on a dataset (``fit``/``load``) first.
        minimum_norm: the attack searches for the smallest perturbation and reports
            ``norm_found``.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[AttackParams]]
    heads: ClassVar[frozenset[Head]] = ALL_HEADS
    requires_fit: ClassVar[bool] = False
    minimum_norm: ClassVar[bool] = False

    def __init__(self, params: P) -> None:
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        *,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        head: Head | str | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Args:
            model: a :class:`models.wrapper.DiagnosticModel`, or any module taking
                ``[N, C, H, W]`` images in ``[0, 1]`` (then pass ``head``).
            images: ``[N, C, H, W]`` float images in ``[0, 1]``.
            labels: ``[N]`` class indices, or ``[N, K]`` 0/1 findings (multi-label).
            mask: optional ``[N, 1, H, W]`` (or ``[1, 1, H, W]``) 0/1 region the
                perturbation may touch.
            generator: random source; defaults to one seeded with ``params.seed``.
            head: the output head, overriding ``model.head``.
        """
        with frozen(model):
            ctx = self.context(model, images, head)
            x = _check_images(images, ctx.device)
            n = x.shape[0]
            y = check_labels(labels.to(ctx.device), ctx.head, ctx.num_classes, n)
            m = _check_mask(mask, x)
            if generator is None:
                generator = torch.Generator(device=ctx.device).manual_seed(self.params.seed)
            objective = self.objective(ctx, x, y)
            with torch.enable_grad():
                outcome = self._attack(ctx, x, objective, m, generator)
            if outcome.outputs is None:
                final, outputs = ctx.evaluate(outcome.images, x, outcome.budget, outcome.norm)
            else:
                final, outputs = outcome.images, outcome.outputs
            return self._result(x, final, outputs, objective, outcome)

    # -- hooks for subclasses ---------------------------------------------------------------

    @abstractmethod
    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        """The algorithm: adversarial images for ``x`` ``[N, C, H, W]`` in ``[0, 1]``."""

    def check_support(self, ctx: AttackContext, objective: Objective) -> None:
        """Raise :class:`InvalidParametersError` for settings the model cannot support."""

    # -- shared machinery -------------------------------------------------------------------

    def context(
        self, model: nn.Module, images: Tensor | None = None, head: Head | str | None = None
    ) -> AttackContext:
        """Resolve head, class count, thresholds and device of ``model``."""
        resolved = _resolve_head(model, head)
        if resolved not in self.heads:
            supported = ", ".join(sorted(h.value for h in self.heads))
            raise InvalidParametersError(
                f"attack {self.name!r} does not support head {resolved.value!r}; "
                f"supported: {supported}"
            )
        device = model_device(model)
        label_names = getattr(model, "labels", None)
        label_names = tuple(label_names) if isinstance(label_names, (tuple, list)) else None
        if resolved == Head.BINARY_LOGIT:
            num_classes = 2
        elif label_names is not None:
            num_classes = len(label_names)
        else:
            if images is None:
                raise InvalidParametersError("cannot infer the number of classes without images")
            with torch.no_grad():
                num_classes = int(_as_2d(model(images[:1].to(device).float())).shape[1])
        thresholds = getattr(model, "thresholds", None)
        if not isinstance(thresholds, Tensor) or resolved != Head.SIGMOID:
            thresholds = None
        return AttackContext(
            model=model,
            head=resolved,
            num_classes=num_classes,
            thresholds=thresholds,
            label_names=label_names,
            device=device,
            autocast=self.params.autocast,
            quantize=self.params.quantize,
        )

    def objective(self, ctx: AttackContext, x: Tensor, labels: Tensor) -> Objective:
        """The head-aware objective, with ``target`` and ``finding`` resolved."""
        target_spec = getattr(self.params, "target", None)
        finding_spec = getattr(self.params, "finding", None)
        finding = resolve_finding(
            finding_spec, head=ctx.head, label_names=ctx.label_names, num_classes=ctx.num_classes
        )
        clean = None
        if target_spec == "least-likely" and ctx.head != Head.SIGMOID:
            with torch.no_grad():
                clean = ctx.forward(x)
        target = resolve_target(
            target_spec,
            head=ctx.head,
            labels=labels,
            label_names=ctx.label_names,
            num_classes=ctx.num_classes,
            clean_outputs=clean,
        )
        objective = Objective(
            head=ctx.head,
            labels=labels,
            num_classes=ctx.num_classes,
            thresholds=ctx.thresholds,
            target=target,
            finding=finding,
        )
        self.check_support(ctx, objective)
        return objective

    def _result(
        self, x: Tensor, final: Tensor, outputs: Tensor, objective: Objective, outcome: Outcome
    ) -> AttackResult:
        with torch.no_grad():
            delta = final - x
            linf = F.linf_norms(delta)
            l2 = F.l2_norms(delta)
            success = objective.success(outputs)
            norm_found = outcome.norm_found
            if norm_found is None and self.minimum_norm:
                size = linf if outcome.norm == "linf" else l2
                norm_found = torch.where(success, size, torch.full_like(size, float("inf")))
            return AttackResult(
                images=final,
                success=success,
                linf=linf,
                l2=l2,
                iterations=outcome.iterations.long(),
                loss=objective.true_loss(outputs),
                flipped=objective.flipped(outputs),
                predictions=objective.predict(outputs),
                outputs=outputs,
                norm_found=norm_found,
                attack=self.name,
                params=self.params.model_dump(),
            )


def _resolve_head(model: nn.Module, head: Head | str | None) -> Head:
    value = head if head is not None else getattr(model, "head", None)
    if value is None:
        raise InvalidParametersError(
            "the model has no head; pass head= (one of: "
            + ", ".join(h.value for h in Head)
            + ")"
        )
    try:
        return Head(value)
    except ValueError:
        valid = ", ".join(h.value for h in Head)
        raise InvalidParametersError(f"unknown head {value!r}; valid: {valid}") from None


def _check_images(images: Tensor, device: torch.device) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InvalidParametersError(
            f"images must be a float tensor [N, C, H, W] in [0, 1], got {shape}"
        )
    x = images.detach().to(device=device, dtype=torch.float32)
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise InvalidParametersError("images must be in [0, 1] (normalization is the model's job)")
    return x


def _check_mask(mask: Tensor | None, x: Tensor) -> Tensor | None:
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


def iterate_batches(
    images: Tensor,
    labels: Tensor,
    mask: Tensor | None,
    *,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None,
    shuffle: bool = True,
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Mini-batches of a dataset held in tensors (any device), moved to ``device``; the
    order is a permutation drawn from ``generator`` when ``shuffle``."""
    n = images.shape[0]
    if shuffle:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=gen_device).to(images.device)
    else:
        order = torch.arange(n, device=images.device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        xb = _check_images(images[index], device)
        yb = labels[index.to(labels.device)].to(device)
        mb = None
        if mask is not None:
            mb = mask[index.to(mask.device)] if mask.shape[0] == n else mask
            mb = _check_mask(mb, xb)
        yield xb, yb, mb


def params_key(params: AttackParams, exclude: frozenset[str] = frozenset()) -> str:
    """A stable JSON rendering of the parameters that shape fitted state."""
    data = params.model_dump(exclude=set(exclude))
    return json.dumps(data, sort_keys=True, default=str)


class FittedAttack(Attack[P]):
    """An attack that is first fitted on a dataset (GAP, UAP).

    The fitted state depends on the model and on the parameters. :meth:`save` stores it as
    safetensors with the model fingerprint (the card's sha256) and the parameters in the
    metadata; :meth:`load` refuses state fitted with other parameters, and attacking a
    model other than the one it was fitted for raises. :meth:`state_key` and
    :meth:`cache_name` name the (model, parameters, data) triple so an audit can fit once
    as its own stage and reuse the state on every shard.
    """

    requires_fit: ClassVar[bool] = True
    #: Parameters that do not change the fitted state (they only matter at attack time).
    runtime_params: ClassVar[frozenset[str]] = frozenset({"quantize", "autocast"})

    def __init__(self, params: P) -> None:
        super().__init__(params)
        #: Fingerprint of the model the state was fitted for (``None`` before a fit).
        self.fitted_for: str | None = None

    @property
    def fitted(self) -> bool:
        return self.fitted_for is not None

    def settings_key(self) -> str:
        """JSON of the parameters that shape the fitted state."""
        return params_key(self.params, self.runtime_params)

    def state_key(self, model: nn.Module, data: str = "") -> str:
        """sha256 of (model fingerprint, attack name, state parameters, ``data``), where
        ``data`` names the fitting set (e.g. the dataset's sha256) when it matters."""
        text = "\n".join([model_fingerprint(model), self.name, self.settings_key(), data])
        return hashlib.sha256(text.encode()).hexdigest()

    def cache_name(self, model: nn.Module, data: str = "") -> str:
        """A file name for the fitted state of this attack on ``model``."""
        return f"{self.name}-{self.state_key(model, data)[:24]}.safetensors"

    def _require_fitted(self, model: nn.Module) -> None:
        if self.fitted_for is None:
            raise ConflictError(
                f"attack {self.name!r} must be fitted first: call fit(...) or load(...)"
            )
        if self.fitted_for != model_fingerprint(model):
            raise InvalidParametersError(
                f"attack {self.name!r} was fitted for another model; fit or load it for this one"
            )

    def _metadata(self) -> dict[str, str]:
        assert self.fitted_for is not None
        return {
            "attack": self.name,
            "model": self.fitted_for,
            "settings": self.settings_key(),
        }

    def _check_metadata(self, metadata: dict[str, str], model: nn.Module | None) -> None:
        if metadata.get("attack") != self.name:
            raise InvalidParametersError(
                f"state file is for attack {metadata.get('attack')!r}, not {self.name!r}"
            )
        if metadata.get("settings") != self.settings_key():
            raise InvalidParametersError(
                f"state file was fitted with other parameters: {metadata.get('settings')}"
            )
        if model is not None and metadata.get("model") != model_fingerprint(model):
            raise InvalidParametersError("state file was fitted for another model")

    @abstractmethod
    def fit(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        head: Head | str | None = None,
    ) -> Self:
        """Fit the state on a dataset: ``images`` ``[N, C, H, W]`` in ``[0, 1]`` and labels
        on any device (batches are moved to the model's); ``epochs``/``batch_size``
        override the parameters. Returns ``self``."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the fitted state (safetensors; model, attack and parameters in metadata)."""

    @abstractmethod
    def load(self, path: str | Path, model: nn.Module | None = None) -> Self:
        """Read state written by :meth:`save`; with ``model``, check it was fitted for it."""


__all__ = [
    "ALL_HEADS",
    "Attack",
    "AttackContext",
    "AttackResult",
    "Best",
    "FittedAttack",
    "Outcome",
    "TargetedParams",
    "frozen",
    "model_fingerprint",
    "run_on_robust",
]
