"""Attack engine benchmark: our PGD/FGSM against a bare torch loop and torchattacks.

One run, one model (torchvision resnet18 with 2 outputs in a DiagnosticModel, 3 x 64 x 64
inputs), one batch of random images and labels, every contender timed in turn within each
repeat (the best of the repeats is reported, in process CPU time on a CPU), so the
ratios compare like with like:

- ``bare``: the floor, a loop that does only forward, backward and the signed update with
  projection (frozen eval-mode model, ``torch.autograd.grad``), nothing else;
- ``ours``: ``get_attack(...)(model, x, y)``, the full engine call: input checks, model
  freezing, the PGD loop (:func:`workers.attacks.functional.pgd`), 8-bit quantization and
  the extra forward that judges success on the quantized images;
- ``ours (loop only)``: :func:`workers.attacks.functional.pgd` alone;
- ``torchattacks``: its ``PGD`` / ``FGSM`` (the ``bench`` extra).

Also Square's model queries per second, and GAP's generation throughput against PGD-10's.
Usage: ``python bench/attacks.py [--device cuda] [--batch 64] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from models.architectures import build_architecture
from models.card import ModelCard
from models.device import resolve_device
from models.wrapper import DiagnosticModel
from workers.attacks import FittedAttack, get_attack
from workers.attacks import functional as F
from workers.attacks.context import frozen


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build_model(size: int, device: torch.device) -> DiagnosticModel:
    torch.manual_seed(0)
    card = ModelCard(
        name="bench-resnet18",
        task="single-label",
        labels=("benign", "malignant"),
        input={"channels": 3, "height": size, "width": size},
        preprocessing={"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
        architecture="resnet18",
        # The registry fills this in; fitted attacks (GAP) key their state on it.
        sha256="0" * 64,
    )
    net = build_architecture("resnet18", 3, 2)
    model = DiagnosticModel(net, card, card.resolved_head(2)).to(device)
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, start: bool
) -> Tensor:
    """The floor: forward, backward, signed step and projection; nothing else."""
    x_adv = x + torch.empty_like(x).uniform_(-eps, eps) if start else x.clone()
    x_adv = x_adv.clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = TF.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def timed(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds ``fn`` takes: wall time (GPU work synchronized), or this process's CPU time,
    which a CPU shared with other jobs does not inflate."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    sync(device)
    start = now()
    fn()
    sync(device)
    return now() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--square-queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--autocast", action="store_true", help="CUDA autocast for ours")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=None,
        help="wall time, or process CPU time (default: cpu on a CPU device, wall on a GPU)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    model = build_model(args.size, device)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, args.size, args.size, generator=g) * 255).round() / 255
    y = torch.randint(0, 2, (args.batch,), generator=g)
    x, y = x.to(device), y.to(device)
    eps, steps = 4 / 255, args.steps
    alpha = 2.5 * eps / steps

    ours_pgd = get_attack("pgd", eps=eps, steps=steps, step_size=alpha, autocast=args.autocast)
    ours_fgsm = get_attack("fgsm", eps=eps, autocast=args.autocast)

    def loss_fn(out: Tensor) -> Tensor:
        return TF.cross_entropy(out, y, reduction="sum")

    def loop_only() -> Tensor:
        with frozen(model):
            return F.pgd(model, x, loss_fn, eps=eps, step_size=alpha, steps=steps)

    def bare(n: int, start: bool, a: float) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with frozen(model):
                return bare_pgd(model, x, y, eps, a, n, start)

        return run

    contenders: dict[str, Callable[[], object]] = {
        "PGD bare loop (floor)": bare(steps, True, alpha),
        "PGD ours": lambda: ours_pgd(model, x, y),
        "PGD ours (loop only)": loop_only,
        "FGSM bare loop (floor)": bare(1, False, eps),
        "FGSM ours": lambda: ours_fgsm(model, x, y),
    }
    try:
        import torchattacks

        ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        ta_fgsm = torchattacks.FGSM(model, eps=eps)
        contenders["PGD torchattacks"] = lambda: ta_pgd(x, y)
        contenders["FGSM torchattacks"] = lambda: ta_fgsm(x, y)
        ta_version = torchattacks.__version__
    except ImportError:
        ta_version = "not installed (pip install -e '.[bench]')"

    for fn in contenders.values():  # warm-up (allocator, cuDNN autotuning, lazy imports)
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn, device, clock))
    # The best of the repeats: the least disturbed by anything else on the machine.
    best = {name: min(values) for name, values in times.items()}

    square = get_attack("square", eps=eps, queries=args.square_queries)
    square_times, square_queries = [], 0
    for _ in range(max(1, args.repeats)):
        square_times.append(timed(lambda: square(model, x, y), device, clock))
    square_queries = int(square(model, x, y).iterations.sum())

    gap = get_attack("gap", eps=eps, epochs=1, batch_size=args.batch, autocast=args.autocast)
    assert isinstance(gap, FittedAttack)
    fit_time = timed(lambda: gap.fit(model, x, y), device, clock)
    gap(model, x, y)
    gap_times = [timed(lambda: gap(model, x, y), device, clock) for _ in range(args.repeats)]
    best["GAP ours (generation + judging)"] = min(gap_times)

    def ratio(name: str, ref: str) -> str:
        return f"{best[name] / best[ref]:.3f}" if name in best and ref in best else "-"

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print("## Attack engine benchmark\n")
    print(f"- device: {device} | GPU: {gpu} | CPU: {cpu_model()} | threads: "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"- torch {torch.__version__}, torchattacks {ta_version}, python "
          f"{platform.python_version()}")  # fmt: skip
    print(f"- resnet18 (2 outputs), batch {args.batch} x 3 x {args.size} x {args.size}, "
          f"eps 4/255, PGD-{steps} with random start, best of {args.repeats} repeats, "
          f"{'process CPU' if clock == 'cpu' else 'wall'} time"
          f"{', autocast' if args.autocast else ''}\n")  # fmt: skip
    print("| attack | implementation | ms / batch | images / s | vs floor | vs torchattacks |")
    print("|---|---|---:|---:|---:|---:|")
    for attack in ("PGD", "FGSM"):
        floor, ta = f"{attack} bare loop (floor)", f"{attack} torchattacks"
        for name in contenders:
            if not name.startswith(attack + " "):
                continue
            impl = name.removeprefix(attack + " ")
            ms = best[name] * 1000
            ips = args.batch / best[name]
            print(f"| {attack}-{steps if attack == 'PGD' else 1} | {impl} | {ms:.1f} | "
                  f"{ips:.1f} | {ratio(name, floor)} | {ratio(name, ta)} |")  # fmt: skip
    gap_name = "GAP ours (generation + judging)"
    print(f"| GAP | ours (generation + judging) | {best[gap_name] * 1000:.1f} | "
          f"{args.batch / best[gap_name]:.1f} | - | - |")  # fmt: skip
    sq = min(square_times)
    print(f"\n- Square (L-inf, {args.square_queries} queries/image): "
          f"{square_queries} image-queries "
          f"in {sq:.2f} s = **{square_queries / sq:.0f} queries/s**")  # fmt: skip
    print(f"- GAP generation throughput vs PGD-{steps} (ours): "
          f"**{best['PGD ours'] / best[gap_name]:.1f}x** images/s "
          f"(one-off fit: 1 epoch on the batch, {fit_time:.2f} s)")  # fmt: skip
    print("- raw seconds per repeat: "
          + "; ".join(f"{k}: {', '.join(f'{v:.3f}' for v in vs)}" for k, vs in times.items()))


if __name__ == "__main__":
    main()
