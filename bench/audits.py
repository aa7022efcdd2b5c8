"""Audit orchestration overhead and scale-out, through the real service.

Starts the API and Celery workers as processes on a real Redis, registers a model and a
phantom dataset over HTTP, and runs the same sharded PGD audit twice in each of three
set-ups, side by side in one run:

- ``1 worker, no cache``: one worker, the dataset's tensor cache turned off
  (``ROBUSTDX_DATASET_CACHE_MAX_BYTES=0``: every shard decodes its images);
- ``1 worker``: one worker, the cache the import made (the default);
- ``2 workers``: two workers on the same broker.

The first audit of a set-up meets workers that have just started (``cold``: the worker
loads the model); the second meets them warm (the model kept loaded between jobs). Wall
time is the client's, from the POST to seeing the job succeed (polled every 50 ms).
Compute is what the shards spent inside attacks and analyses (the report's
``provenance.timings``); with W workers it runs W-wide, so orchestration is
``wall - compute / W``. The second table splits the wall along the report's
``provenance.timeline``: submission to planning, planning, planning's end to the first
shard, the shards' time outside compute, the last shard to finalizing, finalizing, and the
report to the client seeing it.

    .venv/bin/python bench/audits.py [--n 256] [--size 64] [--shard 32] [--steps 10]
                                     [--device cpu|cuda] [--arch small_cnn]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tests.support.services import Broker, Service  # noqa: E402

SETUPS = (("1 worker, no cache", 1, False), ("1 worker", 1, True), ("2 workers", 2, True))


def _model(folder: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    from safetensors.torch import save_file

    from models.architectures import build_architecture
    from models.phantoms import generate

    torch.manual_seed(0)
    labels = list(generate("derm", 2, size=args.size, seed=0).label_names)
    net = build_architecture(args.arch, 3, 2)
    path = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    card = {"name": "bench-derm", "task": "single-label", "labels": labels,
            "input": {"channels": 3, "height": args.size, "width": args.size},
            "architecture": args.arch}
    return path, card


def _wait(client: Any, job_id: str, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return dict(body)
        time.sleep(0.05)
    raise TimeoutError(job_id)


def _audit(client: Any, body: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    job = client.post("/v1/audits", json=body).json()
    done = _wait(client, job["id"])
    wall = time.perf_counter() - t0
    assert done["status"] == "succeeded", done
    report = client.get(f"/v1/audits/{job['id']}/report").json()
    return wall, report["provenance"]


def run(name: str, workers: int, cache: bool, args: argparse.Namespace, broker: Broker,
        folder: Path) -> list[dict]:
    from models.phantoms.export import write_phantom_archive

    broker.flush()
    data = folder / f"data-{len(list(folder.glob('data-*')))}"
    data.mkdir()
    env = {"ROBUSTDX_DEVICE": args.device, "ROBUSTDX_TORCH_THREADS": str(args.threads)}
    if not cache:
        env["ROBUSTDX_DATASET_CACHE_MAX_BYTES"] = "0"
    svc = Service(data_dir=data, broker_url=broker.url, extra_env=env)
    svc.start_api()
    for _ in range(workers):
        svc.start_worker()
    rows = []
    try:
        key = svc.create_tenant()
        weights, card = _model(folder, args)
        archive = folder / "derm.zip"
        if not archive.exists():
            write_phantom_archive("derm", args.n, args.size, "imagefolder", archive, seed=1)
        with svc.client(key) as c:
            with weights.open("rb") as fh:
                model_id = c.post("/v1/models", files={"file": ("m.safetensors", fh)},
                                  data={"card": json.dumps(card)}).json()["id"]
            t0 = time.perf_counter()
            with archive.open("rb") as fh:
                dataset_id = c.post("/v1/datasets", files={"file": ("d.zip", fh)},
                                    data={"format": "imagefolder"}).json()["id"]
            imported = time.perf_counter() - t0
            time.sleep(8)  # let every worker finish starting before the clock runs
            body = {"model_id": model_id, "dataset_id": dataset_id,
                    "attacks": [{"name": "pgd", "params": {"eps": "4/255",
                                                           "steps": args.steps}}],
                    "analyses": ["quantitative"],
                    "options": {"shard_size": args.shard, "batch_size": args.batch,
                                "min_eps": False, "samples": 4}}
            for state in ("cold", "warm"):
                wall, provenance = _audit(c, body)
                rows.append({"setup": name, "state": state, "workers": workers,
                             "wall": wall, "import": imported, **_split(wall, provenance)})
    finally:
        svc.stop()
    return rows


def _split(wall: float, provenance: dict) -> dict[str, float]:
    timings, line = provenance["timings"], provenance["timeline"]
    compute = sum(v for k, v in timings.items()
                  if k.startswith(("attack:", "analysis:")) or k == "min_eps")
    shards = line["shards"]
    first = min(s["start"] for s in shards)
    last = max(s["end"] for s in shards)
    in_shards = sum(s["end"] - s["start"] for s in shards)
    return {
        "compute": compute,
        "to_plan": line["plan"]["start"],
        "planning": line["plan"]["end"] - line["plan"]["start"],
        "to_first_shard": first - line["plan"]["end"],
        "shard_overhead": in_shards - compute,
        "to_finalize": line["finalize"]["start"] - last,
        "finalizing": line["finalize"]["report"] - line["finalize"]["start"],
        "to_client": wall - line["finalize"]["report"],
        "load_inputs": timings.get("load_inputs", 0.0),
        "artifacts_wait": timings.get("artifacts_wait", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    broker = Broker()
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, workers, cache in SETUPS:
                rows += run(name, workers, cache, args, broker, Path(tmp))
    finally:
        broker.stop()
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        device = platform.processor() or platform.machine()
    print(f"machine: {device}, {args.device}, torch {torch.__version__}, "
          f"{args.threads} torch thread(s) per worker, broker: {broker.kind} Redis")
    print(f"audit: PGD-{args.steps} eps 4/255 on {args.n} images {args.size}x{args.size}, "
          f"shards of {args.shard}, batch {args.batch}, {args.arch}\n")
    print("| set-up | audit | dataset import s | wall s | compute s | orchestration s | "
          "orchestration / wall |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        orchestration = max(r["wall"] - r["compute"] / r["workers"], 0.0)
        print(f"| {r['setup']} | {r['state']} | {r['import']:.2f} | {r['wall']:.2f} | "
              f"{r['compute']:.2f} | {orchestration:.2f} | {orchestration / r['wall']:.1%} |")
    for setup in ("1 worker", "2 workers"):
        base = next(r for r in rows if r["setup"] == "1 worker" and r["state"] == "warm")
        other = next(r for r in rows if r["setup"] == setup and r["state"] == "warm")
        if other is not base:
            print(f"\nspeed-up of {setup} over 1 worker (warm): "
                  f"{base['wall'] / other['wall']:.2f}x")
    print("\nwhere the wall goes (seconds; shard columns summed over shards):\n")
    print("| set-up | audit | submit to plan | planning | plan to first shard | "
          "in shards, not compute | of which inputs | of which artifacts | "
          "last shard to finalize | finalizing | report to client |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['state']} | {r['to_plan']:.2f} | {r['planning']:.2f} | "
              f"{r['to_first_shard']:.2f} | {r['shard_overhead']:.2f} | "
              f"{r['load_inputs']:.2f} | {r['artifacts_wait']:.2f} | "
              f"{r['to_finalize']:.2f} | {r['finalizing']:.2f} | {r['to_client']:.2f} |")


if __name__ == "__main__":
    main()
