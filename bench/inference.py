"""Predict over HTTP against the raw forward pass, side by side on one machine.

Starts the real service (uvicorn in a subprocess, temporary data folder, no dispatcher),
registers a randomly initialised resnet18 for 64x64 RGB images (safetensors weights), and
measures with the same model file and the same PNG images:

- the service with 1 client (sequential requests) and with N concurrent clients (httpx);
- the raw model in this process: a single-image forward, and a batched forward of N.

Targets (issue 2): with 32 clients the service reaches >= 0.8x the raw batched forward's
throughput; one request adds <= 5 ms at p50 over the raw single forward.

    .venv/bin/python bench/inference.py --device cpu --requests 256
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.architectures import build_architecture  # noqa: E402
from models.card import ModelCard  # noqa: E402
from models.device import resolve_device  # noqa: E402
from models.imaging import decode_image, to_model_input  # noqa: E402
from models.loading import load_model  # noqa: E402

ADMIN_KEY = "bench-admin-key"
SIZE = 64
CARD = {
    "name": "bench-resnet18-64",
    "task": "single-label",
    "labels": ["benign", "malignant"],
    "input": {"channels": 3, "height": SIZE, "width": SIZE},
    "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "architecture": "resnet18",
}


@dataclass
class Result:
    name: str
    images: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.images / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return f"{text}; device {device}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def write_model(folder: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = build_architecture("resnet18", 3, 2)
    path = folder / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def start_service(
    data_dir: Path,
    port: int,
    device: str,
    threads: int,
    max_wait_ms: float | None,
    api_workers: int = 1,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ROBUSTDX_DATA_DIR": str(data_dir),
        "ROBUSTDX_RUN_DISPATCHER": "false",
        "ROBUSTDX_REGISTER_ZOO": "false",
        "ROBUSTDX_ENVIRONMENT": "test",
        "ROBUSTDX_ADMIN_KEY": ADMIN_KEY,
        "ROBUSTDX_DEVICE": device,
        "ROBUSTDX_BATCH_MAX_SIZE": "32",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if max_wait_ms is not None:
        env["ROBUSTDX_BATCH_MAX_WAIT_MS"] = str(max_wait_ms)
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.api.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--workers",
        str(api_workers),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the service did not start within 120 s")


def register(base: str, model_path: Path) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    tenant = httpx.post(f"{base}/v1/tenants", json={"name": "bench"}, headers=admin, timeout=30)
    tenant.raise_for_status()
    key = tenant.json()["api_key"]
    response = httpx.post(
        f"{base}/v1/models",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": (model_path.name, model_path.read_bytes())},
        data={"card": json.dumps(CARD)},
        timeout=300,
    )
    response.raise_for_status()
    return key, response.json()["id"]


def http_sequential(base: str, key: str, model_id: str, images: list[bytes], n: int) -> Result:
    url = f"{base}/v1/models/{model_id}/predict"
    headers = {"Authorization": f"Bearer {key}"}
    latencies = []
    with httpx.Client(headers=headers, timeout=60) as client:
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post(url, files={"file": ("x.png", images[i % len(images)])})
            latencies.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
        seconds = time.perf_counter() - start
    return Result("service, 1 client", n, seconds, latencies)


async def _http_concurrent(
    base: str, key: str, model_id: str, images: list[bytes], n: int, clients: int
) -> Result:
    url = f"{base}/v1/models/{model_id}/predict"
    latencies: list[float] = []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as client:

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                r = await client.post(url, files={"file": ("x.png", images[i % len(images)])})
                latencies.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        seconds = time.perf_counter() - start
    return Result(f"service, {clients} clients", n, seconds, latencies)


def batch_stats(base: str) -> tuple[float, float]:
    """(images, forward passes) from the service's batch-size histogram."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    values = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in values:
            if line.startswith(f"robustdx_inference_batch_size_{kind} "):
                values[kind] = float(line.split()[1])
    return values["sum"], values["count"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_forward(
    model: torch.nn.Module, batches: list[torch.Tensor], device: torch.device, name: str
) -> Result:
    latencies = []
    images = 0
    with torch.inference_mode():
        for x in batches[:3]:
            model(x.to(device))  # warm-up
        sync(device)
        start = time.perf_counter()
        for x in batches:
            t0 = time.perf_counter()
            model(x.to(device)).float().cpu()
            sync(device)
            latencies.append((time.perf_counter() - t0) * 1000)
            images += x.shape[0]
        seconds = time.perf_counter() - start
    return Result(name, images, seconds, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--requests", type=int, default=256, help="HTTP requests per run")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="torch threads, in the service and for the raw forward",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help="the service's batch_max_wait_ms (default: its setting)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="uvicorn worker processes, each with its own model copy and micro-batcher",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="robustdx-bench-") as tmp:
        folder = Path(tmp)
        model_path = write_model(folder)
        images = make_images(64)
        port = free_port()
        proc = start_service(
            folder / "data", port, str(device), args.threads, args.max_wait_ms, args.api_workers
        )
        try:
            base = f"http://127.0.0.1:{port}"
            key, model_id = register(base, model_path)
            http_sequential(base, key, model_id, images, 20)  # load the model, warm up
            single = http_sequential(base, key, model_id, images, args.requests)
            asyncio.run(
                _http_concurrent(base, key, model_id, images, 2 * args.clients, args.clients)
            )  # warm-up
            before = batch_stats(base)
            concurrent = asyncio.run(
                _http_concurrent(base, key, model_id, images, args.requests, args.clients)
            )
            after = batch_stats(base)
            mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        finally:
            proc.terminate()
            proc.wait(30)

        card = ModelCard.model_validate(CARD)
        model = load_model(model_path, card, device=device).model
        tensors = [
            to_model_input(decode_image(b, max_bytes=1 << 24, max_pixels=1 << 24), card)
            for b in images
        ]
        ones = [tensors[i % len(tensors)][None] for i in range(args.requests)]
        stacked = torch.stack(tensors[: args.clients])
        n_batches = max(4, args.requests // args.clients)
        raw_single = raw_forward(model, ones, device, "raw forward, batch 1")
        raw_batch = raw_forward(
            model, [stacked] * n_batches, device, f"raw forward, batch {args.clients}"
        )

    rows = [single, concurrent, raw_single, raw_batch]
    wait = "default" if args.max_wait_ms is None else f"{args.max_wait_ms:g} ms"
    print(
        f"\nMachine: {machine(device)}; torch threads {args.threads}; "
        f"{args.requests} requests per HTTP run; batch_max_wait_ms {wait}; "
        f"{args.api_workers} API process(es)\n"
    )
    print("| run | images | throughput (img/s) | p50 latency (ms) | p99 latency (ms) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.images} | {r.throughput:.1f} | {r.pct(50):.2f} | {r.pct(99):.2f} |")
    ratio = concurrent.throughput / raw_batch.throughput
    overhead = single.pct(50) - raw_single.pct(50)
    print()
    print("| ratio | value | target |")
    print("|---|---:|---:|")
    print(f"| service ({args.clients} clients) / raw batched throughput | {ratio:.2f}x | >= 0.8x |")
    print(f"| service (1 client) p50 - raw single p50 | {overhead:+.2f} ms | <= 5 ms |")
    print(f"| mean forward batch in the service, {args.clients} clients | {mean_batch:.1f} | |")


if __name__ == "__main__":
    main()
