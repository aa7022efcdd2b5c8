"""Tiny trained models (:mod:`tests.support.blobs`) and an engine stand-in for the analyses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from models import heads
from models.card import ModelCard
from models.wrapper import DiagnosticModel
from tests.support.blobs import (
    Trained,
    blob_images,
    card_for,
    train_net,
    trained_model,
)
from workers.analyses.base import Analysis, BatchContext, Section, SummaryContext, merge_arrays


@pytest.fixture(scope="session")
def softmax_model() -> Trained:
    return trained_model("softmax")


@pytest.fixture(scope="session", params=["softmax", "binary-logit", "multi-label"])
def any_head(request: pytest.FixtureRequest) -> Trained:
    """Each of: a 3-class softmax, a single-logit and a 3-finding multi-label model."""
    return trained_model(request.param)


def pgd(model: DiagnosticModel, x: Tensor, y: Tensor, eps: float, steps: int = 10,
        seed: int = 0) -> Tensor:
    """L-infinity PGD (Madry et al. 2018) with the head's loss: random start, signed steps of
    ``2.5 * eps / steps``, projection to the eps ball and [0, 1], 8-bit quantization.

    Inline on purpose: these tests check the analyses, not the attack engine.
    """
    if eps == 0:
        return x.clone()
    g = torch.Generator().manual_seed(seed)
    step = 2.5 * eps / steps
    adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        loss = heads.loss(model(adv), y, model.head)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    quantized = (adv * 255).round() / 255
    # Rounding may cross the ball's surface by half a grey level: stay inside.
    return torch.min(torch.max(quantized, x - eps), x + eps).detach()


def run_analysis(
    analysis: Analysis,
    model: DiagnosticModel,
    images: Tensor,
    labels: Tensor,
    adversarial: dict[str, Tensor],
    *,
    masks: Tensor | None = None,
    params: dict[str, Any] | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[Section, dict[str, np.ndarray]]:
    """What the audit engine does: ``collect`` per batch, merge, ``summarize``."""
    params = dict(params or {})
    parts = []
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        ctx = BatchContext(
            model=model,
            clean=images[start:stop],
            labels=labels[start:stop],
            adversarial={k: v[start:stop] for k, v in adversarial.items()},
            indices=np.arange(start, stop),
            seed=seed + start,
            masks=None if masks is None else masks[start:stop],
            params=dict(params),
        )
        parts.append(analysis.collect(ctx))
    arrays = merge_arrays(parts)
    card = model.card
    summary = SummaryContext(
        labels=card.labels,
        task=card.task,
        head=model.head.value,
        attack_keys=list(adversarial),
        params={**params, "seed": seed},
        thresholds=card.threshold_vector() if card.task == "multi-label" else None,
    )
    return analysis.summarize(arrays, summary), arrays


def scripted(net: torch.nn.Module) -> torch.jit.ScriptModule:
    """``net`` scripted, saved and loaded back, as an uploaded TorchScript file is."""
    import io
    import warnings

    with warnings.catch_warnings():
        # torch 2.14 marks torch.jit deprecated (FutureWarning); it still works.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(net), buf)
        buf.seek(0)
        return torch.jit.load(buf)


def exported(net: torch.nn.Module, example: Tensor) -> torch.nn.Module:
    """``net`` as a ``torch.export`` program with a dynamic batch, unlifted to a module."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    return program.module()


@dataclass(frozen=True)
class Kit:
    """The helpers above, handed to tests as a fixture (test modules cannot import a
    conftest reliably)."""

    run: Callable[..., tuple[Section, dict[str, np.ndarray]]] = run_analysis
    pgd: Callable[..., Tensor] = pgd
    scripted: Callable[[torch.nn.Module], torch.jit.ScriptModule] = scripted
    exported: Callable[[torch.nn.Module, Tensor], torch.nn.Module] = exported
    train_net: Callable[..., Trained] = train_net
    card_for: Callable[..., tuple[ModelCard, int]] = card_for
    blob_images: Callable[..., tuple[Tensor, Tensor]] = blob_images
    trained: Callable[[str], Trained] = trained_model


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit()
