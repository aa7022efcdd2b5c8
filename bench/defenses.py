"""Defense benchmark: epoch cost of each method against plain training, and the clean and
robust accuracy each reaches on the chest phantoms with the demo recipe.

Base model: the demo zoo's chest model (``chest-densenet``: ``densenet_small``, 1 x 64 x 64,
five co-occurring findings, sigmoid head, per-finding Youden thresholds), loaded from the
zoo when ``make zoo`` has built it, otherwise trained here by its recipe
(:mod:`models.zoo.recipes`; ``--base-train`` images, the recipe's optimizer and epochs).
Every method then fine-tunes that same base for ``--epochs`` epochs on ``--train``
chest phantoms (train seed 1, validation seed 2), with the same seed, data order,
optimizer (Adam, ``--lr``, cosine) and batch size, as a defense job would. Each method's
parameters are its defaults (eps 4/255, 7 steps; MPAdvT: eps ~ U[0.01, 0.04], steps ~
U{1..9}, p = 0.5) except ``--eps``.

Reported per method:

- ``s / epoch``: median training time of an epoch (validation excluded), in process CPU
  time on a CPU (robust to other load on a shared machine) or synced wall time on a GPU,
  epochs 2 and later (the first includes setup); ``x clean``: its ratio to plain training,
  measured in the same run. PGD training costs about ``steps + 1`` forward/backward
  passes per batch (TRADES and MART one more, for the clean pass), MPAdvT
  ``p * (E[max steps in a batch] + 1) + (1 - p)``; the expected ratio is printed next to
  the measured one.
- on a held-out test split (seed 3), clean and under PGD-20 (L-infinity, ``--eval-eps``,
  BCE over all findings as in the paper): exact match (every finding right at the card's
  thresholds) and the mean AUROC over findings (the paper's multi-label metric).

Usage: ``python bench/defenses.py [--device cuda] [--train 4000] [--epochs 2]``; a quick
CPU run: ``--train 1000 --test 500``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from models.architectures import build_architecture
from models.device import resolve_device
from models.heads import loss as head_loss
from models.heads import probabilities
from models.phantoms import generate
from models.wrapper import DiagnosticModel
from workers.attacks.functional import pgd
from workers.defenses import DefenseResult, list_defenses, train_defense

ZOO_MODEL = "chest-densenet"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def phantoms(n: int, size: int, seed: int) -> TensorDataset:
    ps = generate("chest", n, size=size, seed=seed)
    images = torch.from_numpy(ps.images).permute(0, 3, 1, 2).float().div(255.0)
    labels = torch.from_numpy(ps.labels.astype(np.float32))
    return TensorDataset(images.contiguous(), labels)


def base_model(device: torch.device, n_train: int) -> tuple[DiagnosticModel, str]:
    """The zoo's chest model, or the same recipe trained here when the zoo is not built."""
    from models.zoo import list_zoo, load_zoo_model
    from models.zoo.evaluation import predict_probabilities, youden_thresholds
    from models.zoo.recipes import TRAIN_SEED, VAL_SEED, recipe
    from models.zoo.train import as_tensor, fit, label_tensor, make_card

    r = recipe(ZOO_MODEL)
    if any(e.name == ZOO_MODEL for e in list_zoo()):
        return load_zoo_model(ZOO_MODEL, device), f"zoo {ZOO_MODEL} (loaded)"
    r = dataclasses.replace(r, n_train=n_train)
    train = generate(r.kind, r.n_train, r.size, TRAIN_SEED)
    val = generate(r.kind, r.n_val, r.size, VAL_SEED)
    torch.manual_seed(r.torch_seed)
    card = make_card(r, train)
    head = card.resolved_head()
    net = build_architecture(r.architecture, card.input.channels, card.expected_outputs(head))
    model = DiagnosticModel(net, card, head).to(device)
    fit(model, r, as_tensor(train.images), label_tensor(train))
    thresholds = youden_thresholds(predict_probabilities(model, as_tensor(val.images)), val.labels)
    card = make_card(r, train, thresholds)
    trained = DiagnosticModel(model.net, card, head).to(device).eval()
    return (
        trained,
        f"{ZOO_MODEL} trained here by its recipe ({r.n_train} images, {r.epochs} epochs)",
    )


def test_metrics(
    model: DiagnosticModel, data: TensorDataset, eps: float, batch: int
) -> dict[str, float]:
    """Exact match and mean AUROC, clean and under PGD-20 (L-infinity, BCE)."""
    from models.zoo.evaluation import multilabel_metrics

    model.eval()
    device = model.device
    gen = torch.Generator(device=device).manual_seed(0)
    x_all, labels = data.tensors
    probs, probs_adv = [], []
    for start in range(0, len(x_all), batch):
        x = x_all[start : start + batch].to(device)
        y = labels[start : start + batch].to(device)

        def attack_loss(out: torch.Tensor, y: torch.Tensor = y) -> torch.Tensor:
            return head_loss(out, y, model.head, reduction="sum")

        adv = pgd(model, x, attack_loss, eps=eps, step_size=eps / 4, steps=20, generator=gen)
        with torch.no_grad():
            probs.append(probabilities(model(x), model.head).cpu())
            probs_adv.append(probabilities(model(adv), model.head).cpu())
    names = model.labels
    thresholds = model.card.threshold_vector()
    y_np = labels.numpy()
    clean = multilabel_metrics(torch.cat(probs).double().numpy(), y_np, names, thresholds)
    robust = multilabel_metrics(torch.cat(probs_adv).double().numpy(), y_np, names, thresholds)
    return {
        "clean_exact": float(clean["exact_match"]),  # type: ignore[arg-type]
        "robust_exact": float(robust["exact_match"]),  # type: ignore[arg-type]
        "clean_auroc": float(clean["mean_auroc"]),  # type: ignore[arg-type]
        "robust_auroc": float(robust["mean_auroc"]),  # type: ignore[arg-type]
    }


class EpochClock:
    """Training time per epoch from the ``progress`` callback (called after every batch):
    the time between the last validation batch of epoch ``e - 1`` and the last training
    batch of epoch ``e``; the first epoch (which includes setup) is skipped."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[tuple[float, str]] = []

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()

    def __call__(self, fraction: float, stage: str) -> None:
        self.marks.append((self.now(), stage))

    def epoch_seconds(self) -> list[float]:
        out: list[float] = []
        start: float | None = None  # end of the previous epoch's validation
        last_val: float | None = None
        last_train = 0.0
        in_train = False
        for t, stage in self.marks:
            if stage.endswith("training"):
                if not in_train:
                    start, in_train = last_val, True
                last_train = t
            else:
                if in_train and start is not None:
                    out.append(last_train - start)
                in_train = False
                last_val = t
        return out


def expected_ratio(method: str, params: dict[str, Any], batch: int) -> float:
    steps = params.get("steps", 7)
    if method == "clean":
        return 1.0
    if method == "pgd_at":
        return steps + 1
    if method in ("trades", "maadvt"):
        return steps + 2
    # MPAdvT, per-sample draws: the batch runs max(steps) iterations.
    lo, hi, p = params.get("steps_min", 1), params.get("steps_max", 9), params.get("p", 0.5)
    k = np.arange(lo, hi + 1)
    cdf = (k - lo + 1) / (hi - lo + 1)
    e_max = float(np.sum(k * (cdf**batch - np.concatenate([[0.0], cdf[:-1]]) ** batch)))
    return p * (e_max + 1) + (1 - p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--base-train",
        type=int,
        default=4000,
        help="images to train the base by the zoo recipe if the zoo is not built",
    )
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=600)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eps", type=float, default=4 / 255, help="training eps (pixel units)")
    parser.add_argument("--eval-eps", type=float, default=4 / 255)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(list_defenses()))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    base, base_note = base_model(device, args.base_train)
    base_s = time.perf_counter() - t0
    size = base.card.input.height
    train = phantoms(args.train, size, seed=1)
    val = phantoms(args.val, size, seed=2)
    test = phantoms(args.test, size, seed=3)
    common: dict[str, Any] = {
        "batch_size": args.batch,
        "lr": args.lr,
        "optimizer": "adam",
        "eval_eps": args.eval_eps,
        "epochs": args.epochs,
    }

    rows: list[tuple[str, DefenseResult, list[float], dict[str, float], float]] = []
    before = test_metrics(base, test, args.eval_eps, args.batch)
    for method in args.methods.split(","):
        params = dict(common)
        if method in ("pgd_at", "trades", "maadvt"):
            params["eps"] = args.eps
        clock = EpochClock(device)
        result = train_defense(
            base, train, val, method, params, seed=0, progress=clock, device=device
        )
        seconds = clock.epoch_seconds() or [r.seconds for r in result.history]
        metrics = test_metrics(result.model, test, args.eval_eps, args.batch)
        rows.append(
            (method, result, seconds, metrics, expected_ratio(method, result.params, args.batch))
        )

    clean_rows = [statistics.median(s) for m, _, s, _, _ in rows if m == "clean"]
    clean_s = clean_rows[0] if clean_rows else float("nan")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    clock_name = "synced wall" if device.type == "cuda" else "process CPU"
    print("## Defense benchmark\n")
    print(
        f"- device: {device} | GPU: {gpu} | CPU: {cpu_model()} | threads: "
        f"{torch.get_num_threads()} | torch {torch.__version__} | python "
        f"{platform.python_version()}"
    )
    print(
        f"- base: {base_note} ({base_s:.0f} s wall); each method fine-tunes it for "
        f"{args.epochs} epochs on {args.train} chest phantoms {size} x {size} (val "
        f"{args.val}), Adam lr {args.lr:g} cosine, batch {args.batch}, seed 0"
    )
    print(
        f"- training eps {args.eps * 255:.1f}/255 (MPAdvT: U[0.01, 0.04]); test: {args.test} "
        f"images, PGD-20 L-inf eps {args.eval_eps * 255:.1f}/255; exact match = all 5 "
        f"findings right at the card's thresholds; epoch time in {clock_name} seconds\n"
    )
    print(
        "| method | s / epoch | x clean | expected | clean exact | robust exact | "
        "clean AUROC | robust AUROC | best epoch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| (base, before) | | | | {before['clean_exact']:.3f} | {before['robust_exact']:.3f} "
        f"| {before['clean_auroc']:.3f} | {before['robust_auroc']:.3f} | |"
    )
    for method, result, seconds, m, expected in rows:
        s = statistics.median(seconds)
        print(
            f"| {method} | {s:.2f} | {s / clean_s:.2f} | {expected:.1f} | "
            f"{m['clean_exact']:.3f} | {m['robust_exact']:.3f} | {m['clean_auroc']:.3f} | "
            f"{m['robust_auroc']:.3f} | {result.best_epoch} |"
        )


if __name__ == "__main__":
    main()
