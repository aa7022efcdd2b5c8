"""Shard sizes from the audit's cost, so progress moves every few seconds.

A shard is the unit of progress, retry and cancellation: one of 200 images (the whole
README audit) left progress stuck for minutes. The cost of an image is counted in model
passes (a forward plus, for gradient attacks, a backward) from each setting's parameters;
one pass is timed on the worker's device; a shard gets the number of images that fills
``target_seconds``, in whole batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

from models.wrapper import DiagnosticModel

#: Model passes per image of the analyses that run their own forwards (a rough mean:
#: Grad-CAM and feature taps re-run the model on the clean and every adversarial batch).
ANALYSIS_PASSES = 4
#: The common-perturbation benchmark: ~20 perturbations x 5 severities plus sequences.
PERTURBATION_PASSES = 200


def attack_passes(name: str, params: Any) -> int:
    """Model passes one image costs under attack ``name`` with validated ``params``."""
    steps = int(getattr(params, "steps", 1))
    restarts = int(getattr(params, "restarts", 1))
    if name in ("pgd", "bim", "apgd"):
        return steps * restarts + 2
    if name == "square":
        return int(params.queries)
    if name == "autoattack":
        return steps * (1 + int(params.target_classes)) + int(params.queries)
    if name == "cw_l2":
        return steps * int(params.search_steps) + 1
    if name == "deepfool":
        return steps * min(int(params.candidates), 10) + 1
    if name == "min_eps":
        return steps * (int(params.search_steps) + 1) + 2
    return 2  # fgsm, and gap/uap (fitted once in the plan; one generator pass per image)


def passes_per_image(attacks: Iterable[tuple[str, Any]], analyses: Iterable[str],
                     min_eps_params: Any | None) -> int:
    """Model passes per image of a whole audit: every setting, the minimum-eps search when
    asked for, and the analyses."""
    total = 1 + sum(attack_passes(name, params) for name, params in attacks)
    if min_eps_params is not None:
        total += attack_passes("min_eps", min_eps_params)
    for name in analyses:
        total += PERTURBATION_PASSES if name == "perturbations" else ANALYSIS_PASSES
    return total


def seconds_per_pass(model: DiagnosticModel, batch_size: int) -> float:
    """Seconds of one forward and backward pass per image, timed on a batch of noise."""
    c, h, w = model.input_shape
    x = torch.rand(max(1, min(batch_size, 16)), c, h, w, device=model.device)
    timings = []
    for _ in range(2):  # the first call pays for lazy initialization
        start = time.perf_counter()
        x.requires_grad_(True)
        out = model(x)
        (grad,) = torch.autograd.grad(out.float().sum(), x)
        float(grad.flatten()[0])  # waits for the device
        timings.append(time.perf_counter() - start)
        x = x.detach()
    return min(timings) / x.shape[0]


def shard_size(count: int, batch_size: int, passes: int, per_pass: float,
               target_seconds: float) -> int:
    """Images per shard: ``target_seconds`` of work, in whole batches, at least one batch,
    at most the dataset."""
    per_image = max(passes * per_pass, 1e-9)
    batches = max(1, int(target_seconds / (per_image * batch_size)))
    return max(1, min(count, batches * batch_size))
