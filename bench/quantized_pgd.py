"""Quantization-aware PGD against today's PGD with final rounding (an experiment).

Today's PGD optimizes continuous images and rounds the last iterate to the 8-bit grid,
toward the clean image where rounding would leave the budget. The candidate keeps the
continuous iterate but takes every gradient, and judges every step, at the iterate's
quantized image (the grid points inside the budget box), keeping per image the best
quantized image seen (the first that fools the model, else the highest loss). Success
for both is judged on the 8-bit images that would be saved.

Test models: the attack tests' tiny CNNs (softmax-2, softmax-4, binary-logit,
multi-label), clean images on the 8-bit grid and, as DICOM-derived images are, off it.
Prints robust accuracy (lower is a stronger attack) and seconds per run.

Measured (2026-12-01, 2-core CPU, steps 10, 2 seeds): the candidate was weaker than
today's rounding on 7 of the 40 rows (e.g. softmax-2 at 12/255: 0.234 against 0.211;
multi-label at 8/255: 0.469 against 0.430), stronger on 4 (by at most 0.023, all with
clean images off the grid) and usually slower, so the engine keeps today's rounding.

    .venv/bin/python bench/quantized_pgd.py [--steps 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from workers.attacks import Attack, get_attack  # noqa: E402
from workers.attacks import functional as F  # noqa: E402


def grid_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The lowest and highest 8-bit levels within ``eps`` of ``x`` (and in [0, 1]); where
    none exists the clean value itself (rounding toward the clean image does the same)."""
    lo = torch.ceil((x - eps).clamp(0, 1) * 255 - 1e-6) / 255
    hi = torch.floor((x + eps).clamp(0, 1) * 255 + 1e-6) / 255
    empty = lo > hi
    return torch.where(empty, x, lo), torch.where(empty, x, hi)


def pgd_on_grid(attack: Attack, model: torch.nn.Module, x: Tensor, y: Tensor, eps: float,
                steps: int, generator: torch.Generator) -> Tensor:
    """Success ``[N]`` of the quantization-aware PGD (same step and start as ``pgd``)."""
    ctx = attack.context(model, x)
    objective = attack.objective(ctx, x, y)
    lo, hi = grid_box(x, eps)
    alpha = 2.5 * eps / steps
    x_cont = (x + F.random_init(x, eps, generator=generator)).clamp(0, 1)
    best_success = torch.zeros(x.shape[0], dtype=torch.bool)
    best_loss = torch.full((x.shape[0],), -float("inf"))
    best = x.clone()
    view = (-1, 1, 1, 1)
    for t in range(steps + 1):
        xq = torch.minimum(torch.maximum(torch.round(x_cont * 255) / 255, lo), hi)
        xq.requires_grad_(True)
        out = ctx.forward(xq)
        loss = objective.loss(out)
        (grad,) = torch.autograd.grad(loss.sum(), xq)
        with torch.no_grad():
            ok = objective.success(out)
            take = (ok & ~best_success) | (~best_success & ~ok & (loss > best_loss))
            best = torch.where(take.view(view), xq.detach(), best)
            best_loss = torch.where(take, loss.detach(), best_loss)
            best_success |= ok
            if t < steps:
                x_cont = torch.minimum(torch.maximum(x_cont + alpha * grad.sign(), x - eps),
                                       x + eps).clamp(0, 1)
    assert float((best - x).abs().max()) <= eps + 1e-6
    return best_success


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from tests.workers.attacks.conftest import train_model

    print("| model | clean | eps | today: robust acc | on grid: robust acc | today s | grid s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for kind in ("softmax-2", "softmax-4", "binary-logit", "multi-label"):
        t = train_model(kind)
        off = (t.images + (torch.rand(t.images.shape, generator=torch.Generator()
                                       .manual_seed(9)) - 0.5) / 255).clamp(0, 1)
        for clean_name, x in (("on grid", t.images), ("off grid", off)):
            for eps in (8 / 255, 12 / 255, 16 / 255, 0.05, 0.07):
                today = get_attack("pgd", eps=eps, steps=args.steps)
                s_today, s_grid, a_today, a_grid = 0.0, 0.0, 0.0, 0.0
                for r in range(args.repeat):
                    gen = torch.Generator().manual_seed(r)
                    t0 = time.perf_counter()
                    res = today(t.model, x, t.labels, generator=gen)
                    s_today += time.perf_counter() - t0
                    a_today += 1 - float(res.success.float().mean())
                    gen = torch.Generator().manual_seed(r)
                    t0 = time.perf_counter()
                    with torch.enable_grad():
                        ok = pgd_on_grid(today, t.model, x, t.labels, eps, args.steps, gen)
                    s_grid += time.perf_counter() - t0
                    a_grid += 1 - float(ok.float().mean())
                n = args.repeat
                levels = eps * 255
                label = f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-9 else f"{eps:g}"
                print(f"| {kind} | {clean_name} | {label} | {a_today / n:.3f} | "
                      f"{a_grid / n:.3f} | {s_today / n:.3f} | {s_grid / n:.3f} |")


if __name__ == "__main__":
    main()
