"""SIGTERM stops the API within a bounded time: a long smoothed predict in flight is stopped
at its next chunk with 503 instead of holding the server's shutdown until it ends."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.app.models_fixtures import png_bytes
from tests.models.model_files import card_dict, tiny_net, write_torchscript
from tests.support.services import Service

pytestmark = pytest.mark.integration


def test_sigterm_fails_inflight_smoothing_with_503_and_exits(tmp_path: Path) -> None:
    svc = Service(
        data_dir=tmp_path / "data",
        broker_url="redis://127.0.0.1:1/0",  # never used: no jobs here
        extra_env={
            "ROBUSTDX_RUN_DISPATCHER": "false",
            "ROBUSTDX_MAX_SMOOTHING_SAMPLES": "700000",
            "ROBUSTDX_PREDICT_BURST": "1000000",
            # One noisy copy per lane turn: 640,000 turns, minutes of work however fast
            # the machine, so the request is surely in flight when the signal comes.
            "ROBUSTDX_SMOOTHING_CHUNK_SIZE": "1",
        },
    )
    svc.data_dir.mkdir()
    svc.start_api()
    try:
        key = svc.create_tenant()
        with svc.client(key) as c:
            path = write_torchscript(tiny_net(), tmp_path / "m.pt")
            r = c.post("/v1/models", files={"file": ("m.pt", path.read_bytes())},
                       data={"card": json.dumps(card_dict())})
            assert r.status_code == 201, r.text
            model_id = r.json()["id"]
        answer: dict[str, httpx.Response | Exception] = {}

        def smooth() -> None:
            files = [("files", (f"{i}.png", png_bytes(i))) for i in range(64)]
            try:
                with svc.client(key) as c:
                    answer["r"] = c.post(
                        f"/v1/models/{model_id}/predict", files=files,
                        params={"defense": "smoothing", "n": 10_000, "seed": 0}, timeout=600,
                    )
            except httpx.HTTPError as exc:
                answer["r"] = exc

        worker = threading.Thread(target=smooth)
        worker.start()
        # Sequencing only (640,000 noisy copies one at a time take far longer than this).
        time.sleep(2.0)
        assert svc.api is not None
        svc.api.send_signal(signal.SIGTERM)
        try:
            code = svc.api.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the API did not stop after SIGTERM")
        worker.join(timeout=60)
        response = answer["r"]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        # uvicorn shuts down gracefully, then re-raises the signal it caught (-15).
        assert code in (0, -signal.SIGTERM)
    finally:
        svc.stop()
