"""The API as a real uvicorn process on a free port (for clients that need a socket)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.cli.embedded_broker import free_port
from tests.app.http_fixtures import NO_BROKER

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "live-admin-key"


@contextlib.contextmanager
def live_api(data_dir: Path, **env: str) -> Iterator[str]:
    """Start the API on SQLite in ``data_dir`` (no dispatcher, no zoo, no broker);
    yields its base URL and stops it afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    values = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "ROBUSTDX_ENVIRONMENT": "test", "ROBUSTDX_DATA_DIR": str(data_dir),
        "ROBUSTDX_BROKER_URL": NO_BROKER, "ROBUSTDX_ADMIN_KEY": ADMIN_KEY,
        "ROBUSTDX_RUN_DISPATCHER": "false", "ROBUSTDX_REGISTER_ZOO": "false",
        "ROBUSTDX_DEVICE": "cpu", "OMP_NUM_THREADS": "1", **env,
    }
    log = (data_dir / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.api.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=values, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def create_tenant(url: str, name: str) -> str:
    response = httpx.post(f"{url}/v1/tenants", json={"name": name},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key
