"""Serving measured side by side: RobustDx ``/v1`` predict, RobustDx ``/v2`` infer (Open
Inference Protocol, binary tensors) and a real Triton (PyTriton, dynamic batching), on the
same model and the same images, in one run; plus the raw forward pass.

The model is a seeded resnet18 for 64x64 RGB images (2 classes). RobustDx runs as uvicorn
subprocesses (``--api-procs`` swept); Triton runs in a side venv of Debian's python3.11
(built on first use by :mod:`bench.pytriton_side`) serving a TorchScript trace of the very
computation RobustDx's lanes run. Every server uses ``--threads`` torch threads. Load comes
from ``--procs`` client processes (aiohttp, bodies built before timing): 1 client, then
``procs x connections`` clients. Where the time of a RobustDx request goes is read from its
``Server-Timing`` header; the forward pass is the raw forward at the mean batch the lane
formed (from ``/metrics``), and queue wait is what remains of the lane's time.

Targets (issue 16): at 32 clients RobustDx's throughput >= Triton's and its p99 <= Triton's.

    PYTHONPATH=. .venv/bin/python bench/inference.py --api-procs 1,2 --requests 300
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import Load, Request, drive  # noqa: E402
from bench.pytriton_side import (  # noqa: E402
    SideEnvError,
    TritonServer,
    ensure_side_venv,
    export_probabilities,
    free_port,
)
from models.architectures import build_architecture  # noqa: E402
from models.card import ModelCard  # noqa: E402
from models.imaging import decode_image, to_model_input  # noqa: E402
from models.loading import load_model  # noqa: E402

ADMIN_KEY = "bench-admin-key"
METRICS_TOKEN = "bench-metrics-token"
SIZE = 64
CARD = {
    "name": "bench-resnet18-64", "task": "single-label", "labels": ["benign", "malignant"],
    "input": {"channels": 3, "height": SIZE, "width": SIZE},
    "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "architecture": "resnet18",
}


@dataclass
class Row:
    target: str
    procs: str  # server processes
    clients: int
    load: Load

    @property
    def throughput(self) -> float:
        return len(self.load.latencies_ms) / self.load.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.load.latencies_ms, q))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, CPU"


def write_model(folder: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = build_architecture("resnet18", 3, 2)
    path = folder / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def make_images(count: int) -> tuple[list[bytes], list[torch.Tensor]]:
    """PNG files and the exact tensors RobustDx decodes them into (what OIP clients send)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    card = ModelCard.model_validate(CARD)
    pngs, tensors = [], []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "PNG")
        pngs.append(buf.getvalue())
        decoded = decode_image(buf.getvalue(), max_bytes=1 << 24, max_pixels=1 << 24)
        tensors.append(to_model_input(decoded, card))
    return pngs, tensors


def start_service(data_dir: Path, port: int, threads: int, procs: int) -> subprocess.Popen[bytes]:
    from app.core.db import get_database

    # The schema first: several API processes creating it at once on a fresh SQLite file
    # race ("table tenants already exists") and the loser exits.
    data_dir.mkdir(parents=True, exist_ok=True)
    get_database(f"sqlite:///{(data_dir / 'robustdx.db').resolve()}").dispose()
    env = {
        **os.environ,
        "ROBUSTDX_DATA_DIR": str(data_dir),
        "ROBUSTDX_RUN_DISPATCHER": "false",
        "ROBUSTDX_REGISTER_ZOO": "false",
        "ROBUSTDX_ENVIRONMENT": "test",
        "ROBUSTDX_ADMIN_KEY": ADMIN_KEY,
        "ROBUSTDX_METRICS_TOKEN": METRICS_TOKEN,
        "ROBUSTDX_DEVICE": "cpu",
        "ROBUSTDX_BATCH_MAX_SIZE": "32",
        "ROBUSTDX_TORCH_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "uvicorn", "app.api.main:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--no-access-log", "--workers", str(procs)]
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
    response = httpx.post(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"},
                          files={"file": (model_path.name, model_path.read_bytes())},
                          data={"card": json.dumps(CARD)}, timeout=300)
    response.raise_for_status()
    return key, response.json()["id"]


def v1_requests(pngs: list[bytes], key: str) -> list[Request]:
    out = []
    for data in pngs:
        req = httpx.Request("POST", "http://x/", files={"file": ("x.png", data)})
        out.append(Request(req.read(), {"content-type": req.headers["content-type"],
                                        "authorization": f"Bearer {key}"}))
    return out


def oip_requests(tensors: list[torch.Tensor], key: str | None) -> list[Request]:
    """Binary tensor extension bodies, byte for byte what ``tritonclient`` sends."""
    out = []
    for x in tensors:
        raw = x[None].numpy().astype("<f4").tobytes()
        header = json.dumps({"inputs": [{"name": "image", "shape": [1, *x.shape],
                                         "datatype": "FP32",
                                         "parameters": {"binary_data_size": len(raw)}}],
                             "outputs": [{"name": "probabilities",
                                          "parameters": {"binary_data": True}}]}).encode()
        headers = {"content-type": "application/octet-stream",
                   "inference-header-content-length": str(len(header))}
        if key:
            headers["authorization"] = f"Bearer {key}"
        out.append(Request(header + raw, headers))
    return out


def batch_stats(base: str) -> tuple[float, float]:
    """(images, forward passes) from the batch-size histogram of the process that answers."""
    text = httpx.get(f"{base}/metrics", timeout=30,
                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    values = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in values:
            if line.startswith(f"robustdx_inference_batch_size_{kind} "):
                values[kind] = float(line.split()[1])
    return values["sum"], values["count"]


@dataclass
class Target:
    name: str
    procs: str
    url: str
    requests: list[Request]
    metrics: str | None = None  # base URL whose /metrics has the lane's batch sizes


def measure(pool: multiprocessing.pool.Pool, target: Target, args: argparse.Namespace,
            rounds: dict[tuple[str, str, int], list[Load]], batches: dict[str, list[float]]
            ) -> None:
    """One round for ``target``: 1 client, then ``procs x connections`` clients."""
    single = drive(pool, target.url, target.requests, max(50, args.requests // 3), 1, 1)
    before = batch_stats(target.metrics) if target.metrics else None
    many = drive(pool, target.url, target.requests, args.requests, args.procs, args.connections)
    if target.metrics and before is not None:
        after = batch_stats(target.metrics)
        batches.setdefault(target.name + target.procs, []).append(
            (after[0] - before[0]) / max(1.0, after[1] - before[1]))
    rounds.setdefault((target.name, target.procs, 1), []).append(single)
    rounds.setdefault((target.name, target.procs, args.procs * args.connections),
                      []).append(many)


def merge(loads: list[Load]) -> Load:
    """Rounds together: all latencies, summed time (so throughput is the rounds' mean)."""
    timed = [ld for ld in loads if ld.stages_ms]
    stages = {k: float(np.mean([ld.stages_ms.get(k, 0.0) for ld in timed]))
              for k in (timed[0].stages_ms if timed else {})}
    return Load([v for ld in loads for v in ld.latencies_ms], sum(ld.seconds for ld in loads),
                sum(ld.errors for ld in loads), stages)


def start_robustdx(folder: Path, args: argparse.Namespace, model_path: Path, pngs: list[bytes],
                   tensors: list[torch.Tensor], api_procs: int
                   ) -> tuple[subprocess.Popen[bytes], list[Target]]:
    port = free_port()
    proc = start_service(folder / f"data-{api_procs}", port, args.threads, api_procs)
    base = f"http://127.0.0.1:{port}"
    key, model_id = register(base, model_path)
    metrics = base if api_procs == 1 else None  # with several processes, /metrics is one's
    return proc, [
        Target("RobustDx /v1 predict (PNG)", str(api_procs),
               f"{base}/v1/models/{model_id}/predict", v1_requests(pngs, key), metrics),
        Target("RobustDx /v2 infer (binary tensor)", str(api_procs),
               f"{base}/v2/models/{model_id}/infer", oip_requests(tensors, key), metrics),
    ]


def start_triton(folder: Path, args: argparse.Namespace, model: torch.nn.Module,
                 tensors: list[torch.Tensor]) -> tuple[TritonServer, list[Target]] | str:
    try:
        python = ensure_side_venv(Path(args.triton_venv) if args.triton_venv else None)
        script = export_probabilities(model, folder / "model.pt", (3, SIZE, SIZE))
        server = TritonServer(python, script, (3, SIZE, SIZE), 2, threads=args.threads,
                              log=folder / "triton.log").start()
    except SideEnvError as exc:
        return f"Triton not measured: {exc}"
    return server, [Target("Triton (PyTriton) binary tensor", "1",
                           f"{server.url}/v2/models/m/infer", oip_requests(tensors, None))]


def raw_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` forward passes of the batch ``x`` (after warm-up)."""
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return times


RAW_BATCHES = (1, 4, 8, 16, 32)


def print_tables(rows: list[Row], raw: dict[int, float], batches: dict[str, float],
                 note: str | None, args: argparse.Namespace) -> None:
    clients = args.procs * args.connections
    print(f"\nMachine: {machine()}; {args.threads} torch thread(s) per server; load from "
          f"{args.procs} client processes; {args.rounds} alternating round(s) of "
          f"{args.requests} requests at {clients} clients\n")
    print("| server | server procs | clients | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.target} | {r.procs} | {r.clients} | {r.throughput:.1f} | {r.pct(50):.1f} |"
              f" {r.pct(99):.1f} | {r.load.errors} |")
    for b, ms in sorted(raw.items()):
        print(f"| raw forward, batch {b} (img/s) | | | {1000 * b / ms:.1f} | {ms:.1f} | | |")
    if note:
        print(f"\n{note}")
    print("\nWhere a RobustDx request's time goes (1 server process; mean ms per request):\n")
    print("| server | clients | mean batch | total | auth | read body | decode | queue wait |"
          " forward | encode | HTTP + framework |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.procs != "1" or not r.load.stages_ms or r.target + r.procs not in batches:
            continue
        s, total = r.load.stages_ms, float(np.mean(r.load.latencies_ms))
        batch = 1.0 if r.clients == 1 else batches[r.target + r.procs]
        forward = _interpolate(raw, batch)
        lane = s.get("infer", s.get("predict", 0.0))  # decode + queue + forward on /v1
        decode = s.get("decode", 0.0)
        encode = s.get("encode", 0.0)
        queue = max(0.0, lane - forward)
        rest = total - sum(s.values())
        print(f"| {r.target} | {r.clients} | {batch:.1f} | {total:.1f} | {s.get('auth', 0):.2f} |"
              f" {s.get('read', 0):.2f} | {decode:.2f}{'' if 'decode' in s else ' (in queue)'} |"
              f" {queue:.1f} | {forward:.1f} | {encode:.2f} | {rest:.1f} |")
    _verdict(rows, clients)


def _interpolate(raw: dict[int, float], batch: float) -> float:
    sizes = sorted(raw)
    return float(np.interp(batch, sizes, [raw[b] for b in sizes]))


def _verdict(rows: list[Row], clients: int) -> None:
    triton = [r for r in rows if r.target.startswith("Triton") and r.clients == clients]
    if not triton:
        return
    t = triton[0]
    print(f"\nTarget at {clients} clients: throughput >= Triton's ({t.throughput:.1f} req/s) "
          f"and p99 <= Triton's ({t.pct(99):.1f} ms):\n")
    for r in rows:
        if r.target.startswith("RobustDx") and r.clients == clients:
            ok = r.throughput >= t.throughput and r.pct(99) <= t.pct(99)
            print(f"- {r.target}, {r.procs} process(es): {r.throughput / t.throughput:.2f}x "
                  f"throughput, p99 {r.pct(99) / t.pct(99):.2f}x: {'met' if ok else 'not met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per multi-client run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per target")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--connections", type=int, default=8, help="clients per process")
    parser.add_argument("--api-procs", default="1,2", help="RobustDx API processes to sweep")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per server")
    parser.add_argument("--skip-triton", action="store_true")
    parser.add_argument("--triton-venv", default=None, help="side venv folder (cached)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    servers: list[subprocess.Popen[bytes] | TritonServer] = []
    with tempfile.TemporaryDirectory(prefix="robustdx-bench-") as tmp, \
            multiprocessing.get_context("spawn").Pool(args.procs) as pool:
        folder = Path(tmp)
        model_path = write_model(folder)
        pngs, tensors = make_images(64)
        model = load_model(model_path, ModelCard.model_validate(CARD), device="cpu").model
        targets: list[Target] = []
        note = None
        try:
            for n in (int(v) for v in args.api_procs.split(",")):
                proc, found = start_robustdx(folder, args, model_path, pngs, tensors, n)
                servers.append(proc)
                targets += found
            triton = None if args.skip_triton else start_triton(folder, args, model, tensors)
            if isinstance(triton, str):
                note = triton
            elif triton is not None:
                servers.append(triton[0])
                targets += triton[1]
            for target in targets:  # warm-up: models loaded, connections open
                drive(pool, target.url, target.requests, 40, 1, 1)
                drive(pool, target.url, target.requests, 2 * args.procs * args.connections,
                      args.procs, args.connections)
            rounds: dict[tuple[str, str, int], list[Load]] = {}
            batches: dict[str, list[float]] = {}
            raw_times: dict[int, list[float]] = {b: [] for b in RAW_BATCHES}
            stacked = torch.stack(tensors[:32])
            for i in range(args.rounds):  # alternating order: drift on a shared machine
                for target in targets if i % 2 == 0 else targets[::-1]:
                    measure(pool, target, args, rounds, batches)
                for b in RAW_BATCHES:  # in every round too, so it sees the same machine
                    raw_times[b] += raw_forward(model, stacked[:b], max(3, 48 // b))
        finally:
            for server in servers:
                if isinstance(server, TritonServer):
                    server.stop()
                else:
                    server.terminate()
                    server.wait(30)
        raw = {b: float(np.median(v)) for b, v in raw_times.items()}
    rows = [Row(name, procs, clients, merge(loads))
            for (name, procs, clients), loads in rounds.items()]
    mean_batches = {k: float(np.mean(v)) for k, v in batches.items()}
    print_tables(rows, raw, mean_batches, note, args)


if __name__ == "__main__":
    main()
