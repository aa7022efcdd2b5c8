"""Instances received per second by C-STORE and by STOW-RS (1 and 8 parallel associations
or clients), and the round trip from an Orthanc push to the SR stored back in Orthanc
(p50, p99), on the CPU.

Starts the real service: the API (uvicorn), one worker, the DIMSE SCP as its own
process, a Redis broker, and Orthanc with a generated configuration. Instances are
256x256 16-bit CT images (128 KiB of pixels), de-identified on ingest (the default);
each sender is its own process, so the senders' GIL is not what is measured.

    .venv/bin/python bench/dicom.py --instances 200 --round-trips 30
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli.embedded_broker import free_port  # noqa: E402
from app.core.dicom.send import multipart_related  # noqa: E402
from tests.dicom.orthanc import AE_TITLE, Orthanc  # noqa: E402
from tests.dicom.support import make_dicom  # noqa: E402
from tests.dicom.tools import orthanc_plugin  # noqa: E402
from tests.models.model_files import card_dict, tiny_net, write_torchscript  # noqa: E402
from tests.support.services import Broker, Service  # noqa: E402

SIZE = 256
STOW_BATCH = 10


def _instances(n: int, seed: int) -> list[bytes]:
    return [make_dicom(seed=seed * 100_000 + i, size=SIZE) for i in range(n)]


def _wait(barrier: Any) -> None:
    barrier.wait(timeout=300)


def _c_store(port: int, n: int, seed: int, barrier: Any) -> tuple[int, float]:
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(io.BytesIO(d)) for d in _instances(n, seed)]
    ae = AE(ae_title="BENCH")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    _wait(barrier)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROBUSTDX")
    assert assoc.is_established
    ok = sum(assoc.send_c_store(ds).Status == 0 for ds in datasets)
    assoc.release()
    return ok, time.time()


def _stow(url: str, key: str, n: int, seed: int, barrier: Any) -> tuple[int, float]:
    parts = _instances(n, seed)
    ok = 0
    _wait(barrier)
    with httpx.Client(timeout=120) as client:
        for start in range(0, n, STOW_BATCH):
            body, ctype = multipart_related(parts[start:start + STOW_BATCH])
            r = client.post(f"{url}/dicomweb/studies", content=body, headers={
                "Authorization": f"Bearer {key}", "Content-Type": ctype})
            assert r.status_code == 200, r.text
            ok += len(r.json()["00081199"]["Value"])
    return ok, time.time()


def _rate(fn: Callable[..., tuple[int, float]], clients: int, per_client: int,
          *args: object) -> float:
    """Every sender builds its instances, then all start together at a barrier (so
    building them is not timed); the rate is what was stored over the time to the last."""
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(clients) as pool:
        barrier = manager.Barrier(clients + 1)
        futures = [pool.submit(fn, *args, per_client, 1 + c + clients * 10, barrier)
                   for c in range(clients)]
        barrier.wait(timeout=300)
        start = time.time()
        answers = [f.result() for f in futures]
    return sum(n for n, _ in answers) / (max(end for _, end in answers) - start)


def _round_trips(svc: Service, key: str, orthanc: Orthanc, count: int) -> list[float]:
    times = []
    for i in range(count):
        up = orthanc.upload(make_dicom(seed=900_000 + i, size=SIZE))
        t0 = time.perf_counter()
        orthanc.post("/modalities/robustdx/store", {"Resources": [up["ID"]],
                                                     "Synchronous": True})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            series = orthanc.get(f"/studies/{up['ParentStudy']}/series")
            if any(s["MainDicomTags"].get("Modality") == "SR" for s in series):
                break
            time.sleep(0.005)
        else:
            raise TimeoutError("no SR came back")
        times.append(time.perf_counter() - t0)
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="per configuration")
    parser.add_argument("--round-trips", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="robustdx-bench-dicom-"))
    broker = Broker()
    svc = Service(data_dir=work / "data", broker_url=broker.url)
    svc.data_dir.mkdir()
    scp_port = free_port()
    svc.start_api()
    svc.start_worker()
    env = svc.env() | {"ROBUSTDX_DICOM_PORT": str(scp_port), "ROBUSTDX_DICOM_HOST": "127.0.0.1"}
    scp = subprocess.Popen([sys.executable, "-m", "app.core.dicom.scp"], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    orthanc = None
    try:
        key = svc.create_tenant("bench")
        with svc.client(key) as c:
            for ae in ("BENCH", AE_TITLE):
                assert c.post("/v1/dicom/aes", json={"ae_title": ae}).status_code == 201
        time.sleep(2)  # the SCP process
        rows = []
        for clients in (1, 8):
            per = max(1, args.instances // clients)
            rows.append((f"C-STORE, {clients} association(s)",
                         _rate(_c_store, clients, per, scp_port)))
            rows.append((f"STOW-RS ({STOW_BATCH}/request), {clients} client(s)",
                         _rate(_stow, clients, per, svc.url, key)))
        orthanc = Orthanc(work / "orthanc", "/usr/sbin/Orthanc", orthanc_plugin(),
                          modalities={"robustdx": ["ROBUSTDX", "127.0.0.1", scp_port]}).start()
        model = write_torchscript(tiny_net(channels=1, outputs=3), work / "m.pt", channels=1)
        card = card_dict(("effusion", "nodule", "cardiomegaly"), task="multi-label",
                         channels=1, name="bench-tiny")
        with svc.client(key) as c:
            r = c.post("/v1/models", files={"file": ("m.pt", model.read_bytes())},
                       data={"card": json.dumps(card)})
            model_id = r.json()["id"]
            c.put("/v1/dicom/settings", json={"deidentify": False})
            c.post("/v1/dicom/rules", json={
                "calling_ae": AE_TITLE, "model_id": model_id,
                "destination": {"kind": "dimse", "ae_title": AE_TITLE, "host": "127.0.0.1",
                                "port": orthanc.dicom_port}})
        _round_trips(svc, key, orthanc, 2)  # warm-up: the worker loads the model
        trips = _round_trips(svc, key, orthanc, args.round_trips)
    finally:
        if orthanc is not None:
            orthanc.stop()
        scp.terminate()
        scp.wait(timeout=10)
        svc.stop()
        broker.stop()
    print(f"\nDICOM ingest and round trip ({platform.processor() or platform.machine()}, "
          f"{SIZE}x{SIZE} 16-bit CT, de-identified on ingest)\n")
    print("| path | instances/s |\n|---|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} |")
    print(f"\n| round trip: Orthanc C-STORE push -> SR stored back in Orthanc "
          f"(n={len(trips)}) | ms |\n|---|---:|")
    print(f"| p50 | {1000 * statistics.median(trips):.0f} |")
    print(f"| p99 | {1000 * _pct(trips, 0.99):.0f} |")


if __name__ == "__main__":
    main()
