"""Common-perturbation benchmark: images per second of every perturbation.

One run, one batch of random 3-channel images per size (64 and 128 pixels by default),
every perturbation applied at severity 3 with a fixed seed, timed in turn within each
repeat (the median over repeats is reported), so the columns compare like with like. The
last column puts each perturbation's cost at 64 pixels next to one forward pass of the
``small_cnn`` architecture (width 32) on the same batch: what a perturbation adds to an
audit relative to the model it audits.

``--audit`` also times the whole ``perturbations`` analysis (default parameters) on 200
images of 64 x 64 with a tiny CNN (``small_cnn`` of width 8), the budget its defaults are
chosen for.

Usage: ``python bench/perturbations.py [--device cpu] [--batch 64] [--sizes 64 128]
[--repeats 5] [--threads 1] [--audit]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from models.architectures import SmallCNN
from models.card import Head, ModelCard
from models.device import resolve_device
from models.wrapper import DiagnosticModel
from workers.perturbations import get_perturbation, list_perturbations


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[..., object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def tiny_model(channels: int, size: int, width: int, device: torch.device) -> DiagnosticModel:
    torch.manual_seed(0)
    card = ModelCard(
        name="bench-small-cnn",
        task="single-label",
        labels=("normal", "abnormal"),
        input={"channels": channels, "height": size, "width": size},
    )
    return DiagnosticModel(SmallCNN(channels, 2, width=width), card, Head.SOFTMAX).to(device).eval()


def bench_perturbations(args: argparse.Namespace, device: torch.device) -> None:
    names = list_perturbations()
    gen = torch.Generator().manual_seed(0)
    batches = {s: torch.rand(args.batch, 3, s, s, generator=gen).to(device) for s in args.sizes}
    model = tiny_model(3, args.sizes[0], 32, device)
    times: dict[tuple[str, int], list[float]] = {}
    with torch.inference_mode():
        for name in names:  # warm-up (kernels, caches, lazy imports)
            for x in batches.values():
                get_perturbation(name)(x, 3, generator=torch.Generator(device).manual_seed(0))
        model(batches[args.sizes[0]])
        for _ in range(args.repeats):
            for name in names:
                p = get_perturbation(name)
                for s, x in batches.items():
                    g = torch.Generator(device).manual_seed(0)
                    times.setdefault((name, s), []).append(
                        timed(lambda p=p, x=x, g=g: p(x, 3, generator=g), device)
                    )
            x0 = batches[args.sizes[0]]
            times.setdefault(("model", args.sizes[0]), []).append(
                timed(lambda x0=x0: model(x0), device)
            )
    model_time = statistics.median(times[("model", args.sizes[0])])
    size_cols = " | ".join(f"img/s at {s} px" for s in args.sizes)
    print(
        f"| perturbation | family | {size_cols} | cost vs small_cnn forward ({args.sizes[0]} px) |"
    )
    print("|---|---|" + "---:|" * len(args.sizes) + "---:|")
    for name in names:
        family = get_perturbation(name).family.value
        rates = [args.batch / statistics.median(times[(name, s)]) for s in args.sizes]
        ratio = statistics.median(times[(name, args.sizes[0])]) / model_time
        cells = " | ".join(f"{r:,.0f}" for r in rates)
        print(f"| {name} | {family} | {cells} | {ratio:.2f}x |")
    print(
        f"\nsmall_cnn (width 32) forward at {args.sizes[0]} px: "
        f"{args.batch / model_time:,.0f} img/s"
    )


def bench_audit(device: torch.device) -> None:
    from workers.analyses.perturbations import perturbation_section

    model = tiny_model(3, 64, 8, device)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(200, 3, 64, 64, generator=gen)
    labels = torch.randint(0, 2, (200,), generator=gen)
    start = time.perf_counter()
    section = perturbation_section(model, images, labels, batch_size=32)
    elapsed = time.perf_counter() - start
    params = section.data["parameters"]
    print(
        f"\nperturbations analysis, default parameters ({len(params['corruptions'])} "
        f"perturbations x {len(params['severities'])} severities, "
        f"{len(params['sequences'])} sequences x {params['frames']} frames), 200 images "
        f"3 x 64 x 64, small_cnn width 8: {elapsed:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--audit", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"Machine: {cpu_model()}, {args.threads} torch thread(s), device {device}, "
        f"torch {torch.__version__}; batch {args.batch} x 3 channels, severity 3, "
        f"median of {args.repeats} repeats\n"
    )
    bench_perturbations(args, device)
    if args.audit:
        bench_audit(device)


if __name__ == "__main__":
    main()
