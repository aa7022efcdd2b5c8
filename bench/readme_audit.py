"""The README's audit, timed on this machine: the zoo's chest model on 200 chest phantoms
at 64 px, PGD-10 at 1, 2 and 4/255 plus GAP at 4/255, the default analyses.

Runs the engine in-process (``workers.audit.run_audit``, the code every shard runs) once
with today's defaults and, with ``--min-eps``, once more with the per-image minimum-eps
search that used to be on by default; prints CPU and wall time and where the wall time
went. On a shared machine the CPU time is the figure to compare.

    .venv/bin/python bench/readme_audit.py [--n 200] [--size 64] [--min-eps] [--threads 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ATTACKS = [
    {"name": "pgd", "params": {"eps": [1 / 255, 2 / 255, 4 / 255], "steps": 10}},
    {"name": "gap", "params": {"eps": 4 / 255}},
]


def _run(n: int, size: int, min_eps: bool) -> tuple[float, float, dict[str, float]]:
    from models.phantoms import generate
    from models.zoo import load_zoo_model
    from workers.audit import run_audit

    model = load_zoo_model("chest-densenet", device="cpu")
    data = generate("chest", n, size=size, seed=2026)
    images = torch.from_numpy(np.asarray(data.images)).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.as_tensor(np.asarray(data.labels)).float()
    start, cpu = time.perf_counter(), time.process_time()
    report, _ = run_audit(model, images, labels, ATTACKS, min_eps=min_eps)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, dict(report["provenance"]["timings"])


def _groups(timings: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in timings.items():
        group = key.split(":", 1)[0] if ":" in key else key
        out[group] = out.get(group, 0.0) + value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--min-eps", action="store_true", help="also time the old default")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [("defaults (min_eps off)", False)] + ([("min_eps on", True)] if args.min_eps else [])
    print(f"README audit: chest-densenet, {args.n} chest phantoms at {args.size} px, "
          f"PGD-10 1/2/4 of 255 + GAP 4/255, default analyses; "
          f"{torch.get_num_threads()} torch threads")
    print("CPU s is the process's CPU time (all threads); the other columns are wall time.")
    print("| run | CPU s | wall s | attack s | fit s | min_eps s | analysis s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, flag in runs:
        wall, cpu, timings = _run(args.n, args.size, flag)
        g = _groups(timings)
        print(f"| {name} | {cpu:.1f} | {wall:.1f} | {g.get('attack', 0.0):.1f} "
              f"| {g.get('fit', 0.0):.1f} | {g.get('min_eps', 0.0):.1f} "
              f"| {g.get('analysis', 0.0):.1f} |", flush=True)


if __name__ == "__main__":
    main()
