"""Train the demo zoo from phantoms: ``python -m models.zoo.train`` (``make zoo``).

For every recipe in :mod:`models.zoo.recipes`: generate the phantoms, train the network
through the :class:`~models.wrapper.DiagnosticModel` wrapper (so training sees exactly
the normalization the service applies), choose per-finding thresholds on the validation
set, measure the held-out test set and the check set, fit the linear baseline
(standardized pixels, logistic regression), and write ``<name>.safetensors``,
``<name>.card.json``, ``metrics.json``, ``samples.png`` and ``README.md`` into the zoo
folder. CPU by default (``--device``), 2 threads (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.architectures import build_architecture
from models.card import ModelCard
from models.device import resolve_device
from models.hashing import sha256_file
from models.heads import loss as head_loss
from models.imaging import encode_png
from models.phantoms import PhantomSet, generate
from models.wrapper import DiagnosticModel
from models.zoo import CARD_SUFFIX, WEIGHTS_SUFFIX, ZOO_DIR
from models.zoo.evaluation import metrics, predict_probabilities, youden_thresholds
from models.zoo.recipes import (
    CHECK_SEED,
    CHECK_SIZE,
    RECIPES,
    TEST_SEED,
    TEST_SIZE,
    TRAIN_SEED,
    VAL_SEED,
    Recipe,
    recipe,
)

logger = logging.getLogger("models.zoo.train")

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` to float ``[N, C, H, W]`` in [0, 1] (what decoding gives)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def label_tensor(ps: PhantomSet) -> torch.Tensor:
    if ps.task == "multi-label":
        return torch.from_numpy(ps.labels.astype(np.float32))
    return torch.from_numpy(ps.labels.astype(np.int64))


def make_card(r: Recipe, train: PhantomSet, thresholds: list[float] | None = None) -> ModelCard:
    x = train.images.reshape(-1, train.channels).astype(np.float64) / 255.0
    mean = tuple(round(float(v), 3) for v in x.mean(axis=0))
    std = tuple(round(float(v), 3) for v in x.std(axis=0))
    return ModelCard(
        name=r.name,
        task=train.task,
        labels=train.label_names,
        input={"channels": train.channels, "height": r.size, "width": r.size},
        preprocessing={"mean": mean, "std": std, "resize": "stretch"},
        head=r.head,
        thresholds=dict(zip(train.label_names, thresholds, strict=True)) if thresholds else None,
        architecture=r.architecture,
    )


def _augment(x: torch.Tensor, flips: Sequence[str], g: torch.Generator) -> torch.Tensor:
    if "h" in flips and torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(3)
    if "v" in flips and torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(2)
    if "rot90" in flips:
        k = int(torch.randint(0, 4, (1,), generator=g).item())
        x = torch.rot90(x, k, dims=(2, 3))
    return x


def fit(model: DiagnosticModel, r: Recipe, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Train in place; returns the mean training loss of every epoch."""
    device = model.device
    g = torch.Generator().manual_seed(r.torch_seed)
    steps_per_epoch = x.shape[0] // r.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=r.lr, total_steps=r.epochs * steps_per_epoch
    )
    history = []
    for epoch in range(r.epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=g)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * r.batch_size : (step + 1) * r.batch_size]
            xb = _augment(x[idx], r.flips, g).to(device)
            yb = y[idx].to(device)
            loss = head_loss(model(xb), yb, model.head)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.item())
        history.append(total / steps_per_epoch)
        logger.info("%s epoch %d/%d loss %.4f", r.name, epoch + 1, r.epochs, history[-1])
    model.eval()
    return history


def linear_baseline(
    train: PhantomSet, val: PhantomSet, test: PhantomSet, c: float
) -> dict[str, object]:
    """Logistic regression on standardized raw pixels (one per finding for multi-label)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def flat(ps: PhantomSet) -> np.ndarray:
        return ps.images.reshape(len(ps), -1).astype(np.float32) / 255.0

    xtr, xva, xte = flat(train), flat(val), flat(test)

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300, tol=1e-3))

    if train.task == "multi-label":
        p_val, p_test = [], []
        for k in range(train.labels.shape[1]):
            clf = model().fit(xtr, train.labels[:, k])
            p_val.append(clf.predict_proba(xva)[:, 1])
            p_test.append(clf.predict_proba(xte)[:, 1])
        thresholds = youden_thresholds(np.stack(p_val, 1), val.labels)
        return metrics(
            "multi-label", np.stack(p_test, 1), test.labels, test.label_names, thresholds
        )
    clf = model().fit(xtr, train.labels)
    return metrics("single-label", clf.predict_proba(xte), test.labels, test.label_names)


def train_one(
    r: Recipe,
    out_dir: Path,
    *,
    device: torch.device | None = None,
    test_size: int = TEST_SIZE,
    check_size: int = CHECK_SIZE,
    with_baseline: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and save one zoo model; returns its metrics record."""
    from safetensors.torch import save_file

    device = device or torch.device("cpu")
    t0 = time.perf_counter()
    train = generate(r.kind, r.n_train, r.size, TRAIN_SEED)
    val = generate(r.kind, r.n_val, r.size, VAL_SEED)
    test = generate(r.kind, test_size, r.size, TEST_SEED)
    check = generate(r.kind, check_size, r.size, CHECK_SEED)
    t_data = time.perf_counter() - t0

    torch.manual_seed(r.torch_seed)
    card = make_card(r, train)
    head = card.resolved_head()
    net = build_architecture(r.architecture, card.input.channels, card.expected_outputs(head))
    model = DiagnosticModel(net, card, head).to(device)
    t1, c1 = time.perf_counter(), time.process_time()
    history = fit(model, r, as_tensor(train.images), label_tensor(train))
    t_train, c_train = time.perf_counter() - t1, time.process_time() - c1

    thresholds = None
    if train.task == "multi-label":
        thresholds = youden_thresholds(
            predict_probabilities(model, as_tensor(val.images)), val.labels
        )
    card = make_card(r, train, thresholds)
    model = DiagnosticModel(model.net, card, head).to(device).eval()
    threshold_list = card.threshold_vector() if thresholds else None
    cnn = metrics(
        train.task,
        predict_probabilities(model, as_tensor(test.images)),
        test.labels,
        test.label_names,
        threshold_list,
    )
    cnn_check = metrics(
        train.task,
        predict_probabilities(model, as_tensor(check.images)),
        check.labels,
        check.label_names,
        threshold_list,
    )
    t2 = time.perf_counter()
    linear = linear_baseline(train, val, test, r.linear_c) if with_baseline else None
    t_linear = time.perf_counter() - t2

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{r.name}{WEIGHTS_SUFFIX}"
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    save_file(state, str(weights), metadata={"architecture": r.architecture, "name": r.name})
    card = card.model_copy(update={"sha256": sha256_file(weights)})
    (out_dir / f"{r.name}{CARD_SUFFIX}").write_text(card.model_dump_json(indent=2) + "\n")
    record = {
        "kind": r.kind,
        "task": train.task,
        "architecture": r.architecture,
        "head": str(head),
        "parameters": sum(p.numel() for p in model.net.parameters()),
        "weights_bytes": weights.stat().st_size,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(r).items()},
        "seeds": {"train": TRAIN_SEED, "val": VAL_SEED, "test": TEST_SEED, "check": CHECK_SEED},
        "test_size": test_size,
        "check_size": check_size,
        "thresholds": card.thresholds,
        "train_loss": [round(v, 5) for v in history],
        "seconds": {
            "data": round(t_data, 1),
            "train": round(t_train, 1),
            # CPU time of this process (all threads): comparable on a shared machine.
            "train_cpu": round(c_train, 1),
            "linear": round(t_linear, 1),
        },
        "cnn": cnn,
        "linear": linear,
        "check": cnn_check,
    }
    logger.info("%s: %s", r.name, json.dumps(cnn))
    return record


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def sample_grid(
    per_kind: int = 6, size: int = 96, seed: int = 0
) -> tuple[bytes, dict[str, list[str]]]:
    """A PNG with one row per phantom kind, and the labels of each image by row."""
    rows, captions = [], {}
    gap = 2
    for kind in ("chest", "derm", "fundus"):
        ps = generate(kind, per_kind, size, seed)
        images = ps.images if ps.channels == 3 else np.repeat(ps.images, 3, axis=3)
        row = np.full((size, per_kind * (size + gap) - gap, 3), 255, np.uint8)
        for i in range(per_kind):
            row[:, i * (size + gap) : i * (size + gap) + size] = images[i]
        rows.append(row)
        captions[kind] = [", ".join(ps.label_names_of(i)) or "No Finding" for i in range(per_kind)]
    grid = np.full((len(rows) * (size + gap) - gap, rows[0].shape[1], 3), 255, np.uint8)
    for r, row in enumerate(rows):
        grid[r * (size + gap) : r * (size + gap) + size] = row
    return encode_png(grid), captions


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]


def render_readme(record: dict[str, Any], captions: dict[str, list[str]]) -> str:
    models = record["models"]
    lines = [
        "# Demo model zoo",
        "",
        "Three small diagnostic models trained on the phantoms (`models/phantoms`), shipped as",
        "safetensors weights of allow-listed architectures with their model cards. They are",
        "registered for the development tenant at `make run`. Rebuild them with `make zoo`",
        "(`python -m models.zoo.train`); the recipes are in `models/zoo/recipes.py`.",
        "",
        "## Sample phantoms",
        "",
        f"![phantom samples]({SAMPLES_FILE})",
        "",
        "Rows: chest radiograph, dermoscopy, fundus (seed 0, drawn at 96 x 96; the zoo models",
        "see the same anatomy at 64 x 64). Labels, left to right:",
        "",
    ]
    for kind, caps in captions.items():
        lines.append(f"- **{kind}**: " + "; ".join(caps))
    lines += [
        "",
        "## Models",
        "",
        "| model | phantom | task | architecture | head | parameters | weights | train images "
        "x epochs | train time (CPU time) |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        r = m["recipe"]
        lines.append(
            f"| `{name}` | {m['kind']} | {m['task']} | `{m['architecture']}` | {m['head']} | "
            f"{m['parameters']:,} | {m['weights_bytes'] / 1024:.0f} KiB | "
            f"{r['n_train']} x {r['epochs']} | {m['seconds']['train']:.0f} s"
            f" ({m['seconds'].get('train_cpu', float('nan')):.0f} s) |"
        )
    lines += [
        "",
        f"## Clean metrics on held-out phantoms ({TEST_SIZE} test images, seed {TEST_SEED})",
        "",
        "CNN against the linear baseline (logistic regression on standardized pixels,"
        " C = 0.01). Multi-label accuracy and balanced accuracy are per finding at the"
        " card's thresholds (Youden's J on the validation set), averaged over findings.",
        "",
        "| model | metric | CNN | linear on pixels |",
        "|---|---|---:|---:|",
    ]
    for name, m in models.items():
        cnn, lin = m["cnn"], m["linear"] or {}
        keys = (
            ["mean_auroc", "accuracy", "balanced_accuracy", "exact_match"]
            if m["task"] == "multi-label"
            else ["auroc", "accuracy", "balanced_accuracy"]
            + (["quadratic_kappa"] if "quadratic_kappa" in cnn else [])
        )
        for key in keys:
            lines.append(f"| `{name}` | {key} | {_fmt(cnn.get(key))} | {_fmt(lin.get(key))} |")
    for name, m in models.items():
        if m["task"] != "multi-label":
            continue
        lines += [
            "",
            f"Per-finding AUROC of `{name}`:",
            "",
            "| finding | CNN | linear on pixels | threshold |",
            "|---|---:|---:|---:|",
        ]
        lin = (m["linear"] or {}).get("per_finding_auroc", {})
        for finding, value in m["cnn"]["per_finding_auroc"].items():
            t = (m["thresholds"] or {}).get(finding)
            lines.append(f"| {finding} | {_fmt(value)} | {_fmt(lin.get(finding))} | {_fmt(t)} |")
    mach = record["machine"]
    lines += [
        "",
        "## Reproducing",
        "",
        f"`tests/models/zoo` regenerates the {CHECK_SIZE}-image check set (seed {CHECK_SEED})"
        " and requires the recorded check metrics within 0.02, and a fresh"
        f" {CHECK_SIZE}-image set within 0.08 of the test metrics above.",
        "",
        f"Trained on {mach['cpu']} ({mach['threads']} threads, device {record['device']}),"
        f" torch {mach['torch']}, numpy {mach['numpy']}; {record['total_seconds']:.0f} s in"
        " all, on a machine shared with other jobs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.zoo.train", description=__doc__)
    parser.add_argument("--only", action="append", help="train only this model (repeatable)")
    parser.add_argument("--out", type=Path, default=ZOO_DIR, help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--no-baseline", action="store_true", help="skip the linear baseline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    selected = [recipe(n) for n in args.only] if args.only else list(RECIPES)
    out: Path = args.out
    metrics_path = out / METRICS_FILE
    record: dict[str, Any] = (
        json.loads(metrics_path.read_text()) if metrics_path.exists() else {"models": {}}
    )
    t0 = time.perf_counter()
    for r in selected:
        record["models"][r.name] = train_one(
            r, out, device=device, with_baseline=not args.no_baseline
        )
    order = [r.name for r in RECIPES]
    record["models"] = {k: record["models"][k] for k in order if k in record["models"]}
    record["machine"] = machine()
    record["device"] = str(device)
    elapsed = time.perf_counter() - t0
    if args.only:
        record["total_seconds"] = sum(
            m["seconds"]["data"] + m["seconds"]["train"] + m["seconds"]["linear"]
            for m in record["models"].values()
        )
    else:
        record["total_seconds"] = round(elapsed, 1)
    metrics_path.write_text(json.dumps(record, indent=2) + "\n")
    png, captions = sample_grid()
    (out / SAMPLES_FILE).write_bytes(png)
    (out / "README.md").write_text(render_readme(record, captions))
    logger.info("zoo written to %s in %.0f s", out, elapsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
