"""The defense training loop, a plain library function: :func:`train_defense`.

It fine-tunes (or trains from scratch) a :class:`~models.wrapper.DiagnosticModel` with one
of the registered defenses, validates every epoch on clean images and under an L-infinity
PGD attack (budget in [0, 1] pixel units), keeps the best epoch by the chosen validation
metric, checkpoints every epoch (see :mod:`workers.defenses.checkpoint`) and resumes from
the last complete epoch when a checkpoint exists.

Determinism: every random stream (data order, PGD random starts, MPAdvT draws, dropout)
is derived from ``(seed, epoch)``, so a run resumed after epoch ``k`` continues exactly as
an uninterrupted run would; two runs with the same seed give identical weights on the
CPU (GPU kernels may add their own nondeterminism).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.architectures import ARCHITECTURES, build_architecture
from models.device import resolve_device
from models.errors import (
    ConflictError,
    InvalidParametersError,
    JobCancelledError,
)
from models.heads import correct
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import Defense, DefenseRandom, TrainingParams
from workers.defenses.checkpoint import load_checkpoint, save_checkpoint
from workers.defenses.registry import get_defense
from workers.defenses.seeding import GlobalRng, derive_seed, generator
from workers.defenses.splits import IndexedDataset, Split, batches

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]

# Stream identifiers mixed into the seed (see _derive_seed).
_DATA, _ATTACK, _GLOBAL, _EVAL, _INIT = range(5)
_NO_EPOCH = 2**31 - 1


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training (``epoch`` counts from 1).

    Attributes:
        loss: mean training objective over the epoch's batches.
        clean_acc: validation accuracy on clean images (multi-label: every finding right).
        robust_acc: share of validation images classified right both clean and under the
            validation PGD (so ``robust_acc <= clean_acc``).
        lr: learning rate of the epoch's last batch.
        seconds: wall time of the training pass; ``eval_seconds`` of the validation.
    """

    epoch: int
    loss: float
    clean_acc: float
    robust_acc: float
    lr: float
    seconds: float
    eval_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DefenseResult:
    """What :func:`train_defense` returns.

    Attributes:
        model: the trained model with the **best epoch's** weights, in eval mode, on the
            training device (a copy: the model passed in is not modified).
        best_state_dict: those weights (``model.net.state_dict()``), on the CPU.
        best_epoch: the selected epoch (1-based), by ``params.select_by``.
        history: one :class:`EpochRecord` per epoch, resumed epochs included.
        method: the defense name; ``params``: every parameter with defaults filled in.
        seed: the run's seed; ``device``: where it trained.
        eval_attack: the validation PGD (``norm``, ``eps``, ``steps``, ``step_size``).
        resumed_from_epoch: epochs restored from a checkpoint (0 for a fresh run).
    """

    model: DiagnosticModel
    best_state_dict: dict[str, torch.Tensor]
    best_epoch: int
    history: list[EpochRecord]
    method: str
    params: dict[str, Any]
    seed: int
    device: str
    eval_attack: dict[str, Any]
    resumed_from_epoch: int = 0

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary (no tensors) for reports and job records."""
        return {
            "method": self.method,
            "params": self.params,
            "seed": self.seed,
            "device": self.device,
            "eval_attack": self.eval_attack,
            "best_epoch": self.best_epoch,
            "resumed_from_epoch": self.resumed_from_epoch,
            "history": [r.to_json() for r in self.history],
        }


# --------------------------------------------------------------------------- schedule


def learning_rate(params: TrainingParams, epoch: int, batch: int, batches: int) -> float:
    """The learning rate at ``batch`` (0-based) of ``epoch`` (1-based)."""
    if params.schedule == "constant":
        return params.lr
    if params.schedule == "step":
        done = (epoch - 1) / params.epochs
        factor = 0.1 ** ((done >= 0.5) + (done >= 0.75))
        return params.lr * factor
    t = (epoch - 1) * batches + batch
    total = params.epochs * batches
    return params.lr * 0.5 * (1.0 + math.cos(math.pi * t / total))


def _optimizer(params: TrainingParams, net: torch.nn.Module) -> torch.optim.Optimizer:
    trainable = [p for p in net.parameters() if p.requires_grad]
    if not trainable:
        raise InvalidParametersError("the model has no trainable parameters")
    if params.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.SGD(
        trainable, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay
    )


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: DiagnosticModel,
    data: IndexedDataset | Split,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    before_batch: Callable[[], None] | None = None,
    after_batch: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """``(clean accuracy, robust accuracy)`` of ``model`` on ``data`` under L-infinity PGD
    (uniform random start, head loss; ``step_size`` defaults to ``2.5 * eps / steps``),
    eps in [0, 1] pixel units. Robust counts an image only if it is right clean and
    attacked. The model is left in eval mode. ``before_batch`` may raise to stop
    (cancellation); ``after_batch`` reports progress."""
    from workers.attacks.functional import pgd

    split = data if isinstance(data, Split) else Split(data, model, "evaluation")
    if step_size is None:
        step_size = 2.5 * eps / steps
    model.eval()
    device = model.device
    head = model.head
    thresholds = model.thresholds
    n_clean = n_robust = 0
    for index in batches(len(split), batch_size, None):
        if before_batch is not None:
            before_batch()
        x, y = split.batch(index)
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            ok = correct(model(x), y, head, thresholds)

        def attack_loss(outputs: torch.Tensor, y: torch.Tensor = y) -> torch.Tensor:
            return head_loss(outputs, y, head, reduction="sum")

        with torch.enable_grad():
            adv = pgd(
                model,
                x,
                attack_loss,
                eps=eps,
                step_size=step_size,
                steps=steps,
                norm="linf",
                random_start=True,
                generator=generator,
            )
        with torch.no_grad():
            ok_adv = correct(model(adv), y, head, thresholds)
        n_clean += int(ok.sum())
        n_robust += int((ok & ok_adv).sum())
        if after_batch is not None:
            after_batch()
    return n_clean / len(split), n_robust / len(split)


# --------------------------------------------------------------------------- training


def _prepare_model(
    model: DiagnosticModel, params: TrainingParams, seed: int, device: torch.device
) -> DiagnosticModel:
    work = copy.deepcopy(model)
    if params.from_scratch:
        arch = model.card.architecture
        if arch is None or arch not in ARCHITECTURES:
            valid = ", ".join(sorted(ARCHITECTURES))
            raise InvalidParametersError(
                "from_scratch needs the card to name an allow-listed architecture; "
                f"got {arch!r}, valid: {valid}"
            )
        with GlobalRng(torch.device("cpu"), derive_seed(seed, _NO_EPOCH, _INIT)):
            net = build_architecture(
                arch, model.card.input.channels, model.card.expected_outputs(model.head)
            )
        work.net = net
    return work.to(device)


def _fingerprint(defense: Defense, seed: int, train: Split, val: Split) -> dict[str, Any]:
    return {
        "method": defense.name,
        "params": defense.params.model_dump(mode="json"),
        "seed": seed,
        "train_size": len(train),
        "val_size": len(val),
    }


@dataclass
class _Run:
    """A training run's state: what is checkpointed after every epoch, plus the progress
    bookkeeping and the stop check."""

    method: str
    history: list[EpochRecord]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    start: int
    total_units: int
    done_units: int
    progress: Progress | None
    should_stop: ShouldStop | None

    def check(self, stage: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise JobCancelledError(
                f"defense {self.method!r} cancelled during {stage}",
                {"completed_epochs": len(self.history)},
            )

    def advance(self, stage: str) -> None:
        self.done_units += 1
        if self.progress is not None:
            self.progress(min(1.0, self.done_units / self.total_units), stage)


def _resume(run: _Run, checkpoint_dir: Path | None, fingerprint: dict[str, Any],
            work: DiagnosticModel, optimizer: torch.optim.Optimizer) -> None:
    """Restore ``run``, weights and optimizer from the checkpoint of the same job."""
    if checkpoint_dir is None:
        return
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is None:
        return
    if ckpt.fingerprint != fingerprint:
        raise ConflictError("the checkpoint folder belongs to a different job",
                            {"checkpoint": ckpt.fingerprint, "job": fingerprint})
    work.net.load_state_dict(ckpt.weights)
    optimizer.load_state_dict(ckpt.optimizer)
    run.history = [EpochRecord(**r) for r in ckpt.history]
    run.best_epoch, run.best_state, run.start = ckpt.best_epoch, ckpt.best_weights, ckpt.epoch
    logger.info("resuming %s from epoch %d", run.method, run.start)


def _train_epoch(defense: Defense, work: DiagnosticModel, optimizer: torch.optim.Optimizer,
                 split: Split, epoch: int, rng: DefenseRandom, seed: int, run: _Run,
                 device: torch.device) -> tuple[float, float]:
    """One pass over ``split``; returns the mean loss and the last learning rate."""
    p = defense.params
    stage = f"epoch {epoch}/{p.epochs}: training"
    work.train()
    total_loss, lr = 0.0, p.lr
    with GlobalRng(device, derive_seed(seed, epoch, _GLOBAL)):
        order = torch.randperm(len(split), generator=rng.cpu)
        chunks = batches(len(split), p.batch_size, order)
        for i, index in enumerate(chunks):
            run.check(stage)
            lr = learning_rate(p, epoch, i, len(chunks))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = split.batch(index)
            loss = defense.loss(work, x.to(device), y.to(device), rng)
            if not torch.isfinite(loss):
                raise InvalidParametersError(
                    f"training diverged (loss {float(loss)}) at epoch {epoch}; "
                    "lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
            run.advance(stage)
    return total_loss / max(1, len(chunks)), lr


def train_defense(
    model: DiagnosticModel,
    train: IndexedDataset,
    val: IndexedDataset,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    seed: int,
    checkpoint_dir: Path | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    device: str | torch.device | None = None,
) -> DefenseResult:
    """Harden ``model`` with defense ``method`` (see :func:`list_defenses`).

    Args:
        model: the model to fine-tune; it is copied, never modified.
        train, val: datasets of ``[C, H, W]`` images in [0, 1] (float, or uint8 scaled by
            1/255) at the card's size, with labels in the head's convention (class indices
            ``[N]``, or 0/1 findings ``[N, K]`` for multi-label).
        method: a registered defense name.
        params: the method's parameters (see each ``*Params`` class); missing ones take
            the method's defaults.
        seed: seeds data order, PGD starts, MPAdvT draws, dropout and ``from_scratch``
            initialization.
        checkpoint_dir: where each epoch is checkpointed; when it holds a checkpoint of the
            same job (method, params, seed, split sizes), training resumes after its last
            complete epoch.
        progress: ``progress(fraction in [0, 1], stage)``, called after every batch.
        should_stop: polled before every batch; ``True`` raises :class:`JobCancelledError`
            (the last complete epoch stays checkpointed).
        device: ``None`` picks CUDA when present.

    Raises:
        InvalidParametersError: unknown method, bad parameters, or a negative seed.
        InvalidDatasetError: images or labels that do not fit the model's card.
        ConflictError: ``checkpoint_dir`` holds a checkpoint of a different job.
        JobCancelledError: ``should_stop()`` returned ``True``.
    """
    if seed < 0:
        raise InvalidParametersError("seed must be >= 0")
    defense = get_defense(method, **(params or {}))
    p = defense.params
    dev = resolve_device(str(device) if isinstance(device, torch.device) else device)
    train_split, val_split = Split(train, model, "train"), Split(val, model, "validation")
    work = _prepare_model(model, p, seed, dev)
    optimizer = _optimizer(p, work.net)
    fingerprint = _fingerprint(defense, seed, train_split, val_split)
    per_epoch = (len(batches(len(train_split), p.batch_size, torch.arange(len(train_split))))
                 + len(batches(len(val_split), p.batch_size, None)))
    run = _Run(method, [], 0, {}, 0, p.epochs * per_epoch, 0, progress, should_stop)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    _resume(run, ckpt_dir, fingerprint, work, optimizer)
    run.done_units = run.start * per_epoch
    eval_eps, eval_steps, eval_step = p.validation_budget()
    for epoch in range(run.start + 1, p.epochs + 1):
        rng = DefenseRandom(
            cpu=generator(torch.device("cpu"), derive_seed(seed, epoch, _DATA)),
            attack=generator(dev, derive_seed(seed, epoch, _ATTACK)),
        )
        t0 = time.perf_counter()
        loss, lr = _train_epoch(defense, work, optimizer, train_split, epoch, rng, seed, run,
                                dev)
        seconds = time.perf_counter() - t0
        val_stage = f"epoch {epoch}/{p.epochs}: validating"
        clean_acc, robust_acc = evaluate(
            work, val_split, eps=eval_eps, steps=eval_steps, step_size=eval_step,
            batch_size=p.batch_size,
            generator=generator(dev, derive_seed(seed, _NO_EPOCH, _EVAL)),
            before_batch=functools.partial(run.check, val_stage),
            after_batch=functools.partial(run.advance, val_stage),
        )
        record = EpochRecord(epoch, loss, clean_acc, robust_acc, lr, seconds,
                             time.perf_counter() - t0 - seconds)
        _record_epoch(run, record, work, p)
        if ckpt_dir is not None:
            save_checkpoint(ckpt_dir, epoch=epoch, best_epoch=run.best_epoch,
                            fingerprint=fingerprint, history=[r.to_json() for r in run.history],
                            weights=work.net.state_dict(), optimizer=optimizer.state_dict())
    work.net.load_state_dict(run.best_state)
    work.eval()
    return DefenseResult(
        model=work, best_state_dict=run.best_state, best_epoch=run.best_epoch,
        history=run.history, method=defense.name, params=p.model_dump(mode="json"), seed=seed,
        device=str(dev),
        eval_attack={"norm": "linf", "eps": eval_eps, "steps": eval_steps, "step_size": eval_step},
        resumed_from_epoch=run.start,
    )


def _record_epoch(run: _Run, record: EpochRecord, work: DiagnosticModel,
                  params: TrainingParams) -> None:
    """Append ``record``; keep the weights when it is the best epoch so far."""
    run.history.append(record)
    if run.best_epoch == 0 or _key(record, params) > _key(run.history[run.best_epoch - 1], params):
        run.best_epoch = record.epoch
        run.best_state = {k: v.detach().to("cpu").clone() for k, v in work.net.state_dict().items()}
    logger.info("%s epoch %d/%d: loss %.4f clean %.3f robust %.3f (%.1fs)", run.method,
                record.epoch, params.epochs, record.loss, record.clean_acc, record.robust_acc,
                record.seconds)


def _key(record: EpochRecord, params: TrainingParams) -> tuple[float, float]:
    if params.select_by == "clean":
        return (record.clean_acc, record.robust_acc)
    return (record.robust_acc, record.clean_acc)


__all__ = [
    "DefenseResult",
    "EpochRecord",
    "IndexedDataset",
    "evaluate",
    "learning_rate",
    "train_defense",
]
