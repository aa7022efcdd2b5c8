"""Audit orchestration overhead and scale-out, through the real service.

Starts the API and Celery workers as processes on a real Redis, registers a model and a
phantom dataset, and runs the same sharded audit (a) with one worker and (b) with two.
From the report's provenance timings it prints the wall time against the compute inside
the shards (attacks, analyses) and the share left to orchestration (queueing, loading,
shard bookkeeping, finalizing), and the speed-up of two workers over one.

    .venv/bin/python bench/audits.py [--n 256] [--shard 32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tests.support.services import Broker, Service  # noqa: E402


def _model(folder: Path, size: int) -> tuple[Path, dict]:
    from safetensors.torch import save_file

    from models.architectures import build_architecture
    from models.phantoms import generate

    torch.manual_seed(0)
    labels = list(generate("derm", 2, size=size, seed=0).label_names)
    net = build_architecture("small_cnn", 3, 2)
    path = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    card = {"name": "bench-derm", "task": "single-label", "labels": labels,
            "input": {"channels": 3, "height": size, "width": size},
            "architecture": "small_cnn"}
    return path, card


def run(workers: int, args: argparse.Namespace, broker: Broker, folder: Path) -> dict:
    from models.phantoms.export import write_phantom_archive

    broker.flush()
    data = folder / f"data-{workers}"
    data.mkdir()
    env = {"ROBUSTDX_DEVICE": args.device, "ROBUSTDX_TORCH_THREADS": str(args.threads)}
    svc = Service(data_dir=data, broker_url=broker.url, extra_env=env)
    svc.start_api()
    for _ in range(workers):
        svc.start_worker()
    try:
        key = svc.create_tenant()
        weights, card = _model(folder, args.size)
        archive = folder / "derm.zip"
        if not archive.exists():
            write_phantom_archive("derm", args.n, args.size, "imagefolder", archive, seed=1)
        with svc.client(key) as c:
            with weights.open("rb") as fh:
                model_id = c.post("/v1/models", files={"file": ("m.safetensors", fh)},
                                  data={"card": json.dumps(card)}).json()["id"]
            with archive.open("rb") as fh:
                dataset_id = c.post("/v1/datasets", files={"file": ("d.zip", fh)},
                                    data={"format": "imagefolder"}).json()["id"]
            # Let every worker finish starting before the clock runs.
            time.sleep(8)
            body = {"model_id": model_id, "dataset_id": dataset_id,
                    "attacks": [{"name": "pgd", "params": {"eps": "4/255", "steps": args.steps}}],
                    "analyses": ["quantitative"],
                    "options": {"shard_size": args.shard, "batch_size": args.batch,
                                "min_eps": False, "samples": 4}}
            t0 = time.perf_counter()
            job = c.post("/v1/audits", json=body).json()
            done = svc.wait_job(key, job["id"], timeout=3600)
            wall = time.perf_counter() - t0
            assert done["status"] == "succeeded", done
            report = c.get(f"/v1/audits/{job['id']}/report").json()
    finally:
        svc.stop()
    timings = report["provenance"]["timings"]
    attack = sum(v for k, v in timings.items() if k.startswith("attack:"))
    analysis = sum(v for k, v in timings.items() if k.startswith("analysis:"))
    return {"workers": workers, "wall": wall, "attack": attack, "analysis": analysis,
            "shards": timings.get("shard_total", 0.0), "planning": timings.get("planning", 0.0),
            "finalizing": timings.get("finalizing", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    broker = Broker()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one = run(1, args, broker, Path(tmp))
            two = run(2, args, broker, Path(tmp))
    finally:
        broker.stop()
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        device = platform.processor() or platform.machine()
    print(f"machine: {device}, {args.device}, torch {torch.__version__}, "
          f"{args.threads} torch thread(s) per worker, broker: {broker.kind} Redis")
    print(f"audit: PGD-{args.steps} eps 4/255 on {args.n} images {args.size}x{args.size}, "
          f"shards of {args.shard}, batch {args.batch}, small_cnn\n")
    print("| workers | wall s | attack compute s | analysis compute s | orchestration s | "
          "orchestration / wall |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in (one, two):
        compute = r["attack"] + r["analysis"]
        # With several workers the compute runs in parallel: compare with its share.
        per_worker = compute / r["workers"]
        orchestration = max(r["wall"] - per_worker, 0.0)
        print(f"| {r['workers']} | {r['wall']:.1f} | {r['attack']:.1f} | {r['analysis']:.1f} | "
              f"{orchestration:.1f} | {orchestration / r['wall']:.1%} |")
    print(f"\nspeed-up of 2 workers over 1: {one['wall'] / two['wall']:.2f}x")
    print("\nwhere the time goes (seconds, summed over shards):\n")
    print("| workers | planning | engine in shards | finalizing (report, figures, zip) |")
    print("|---:|---:|---:|---:|")
    for r in (one, two):
        print(f"| {r['workers']} | {r['planning']:.1f} | {r['shards']:.1f} | "
              f"{r['finalizing']:.1f} |")


if __name__ == "__main__":
    main()
