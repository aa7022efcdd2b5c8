"""Hostile load: while tenant A runs, in parallel, the worst requests the limits allow (the
largest smoothing, the most files at the most pixels, a model upload), tenant B's predicts
and ``/health/live`` keep being answered, and B's requests finish before A's. Only
completion and order are asserted, never a time."""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.smoothing import SmoothingVotes
from tests.app.models_fixtures import Api, make_settings, new_tenant, open_client, png_bytes
from tests.models.model_files import card_dict, tiny_net, write_torchscript

FILES = 4
N = 2000  # the largest n the cap allows for FILES files
SIDE = 512  # the largest image the pixel limit allows


@pytest.fixture
def hostile_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from open_client(make_settings(
        tmp_path / "data", max_files_per_request=FILES, max_smoothing_samples=N * FILES,
        max_image_pixels=SIDE * SIDE, max_image_bytes=2 * 1024**2,
        predict_burst=10 * (N + 16) * FILES, predict_rate_per_second=1000.0,
        smoothing_chunk_size=32,
    ))


def _noise_png(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_tenant_b_is_served_while_tenant_a_runs_its_worst_requests(
    hostile_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Api(hostile_client, new_tenant(hostile_client, "attacker"), tmp_path / "data")
    b = Api(hostile_client, new_tenant(hostile_client, "victim"), tmp_path / "data")
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    model_a = a.register(path, card_dict(name="a"))["id"]
    model_b = b.register(path, card_dict(name="b"))["id"]
    assert b.predict(model_b, ("warm.png", png_bytes())).status_code == 200

    smoothing_started = threading.Event()
    original_run = SmoothingVotes.run

    def run(self: SmoothingVotes, model: object, max_copies: int | None = None) -> bool:
        smoothing_started.set()
        return original_run(self, model, max_copies)  # type: ignore[arg-type]

    monkeypatch.setattr(SmoothingVotes, "run", run)
    finished = itertools.count()
    order: dict[str, int] = {}
    statuses: dict[str, int] = {}
    big = [(f"{i}.png", _noise_png(SIDE, i)) for i in range(FILES)]

    def attack(name: str, send: object) -> None:
        response = send()  # type: ignore[operator]
        statuses[name] = response.status_code
        order[name] = next(finished)

    worst = {
        "A-smoothing-1": lambda: a.predict(model_a, *big, defense="smoothing", n=N, seed=1),
        "A-smoothing-2": lambda: a.predict(model_a, *big, defense="smoothing", n=N, seed=2),
        "A-files-pixels": lambda: a.predict(model_a, *big),
        "A-upload": lambda: a.upload(path, card_dict(name="a2")),
    }
    threads = [threading.Thread(target=attack, args=item) for item in worst.items()]
    for t in threads:
        t.start()
    assert smoothing_started.wait(120)
    for i in range(4):
        live = hostile_client.get("/health/live")
        statuses[f"B-live-{i}"] = live.status_code
        order[f"B-live-{i}"] = next(finished)
        response = b.predict(model_b, (f"b{i}.png", png_bytes(i)))
        statuses[f"B-predict-{i}"] = response.status_code
        order[f"B-predict-{i}"] = next(finished)
    for t in threads:
        t.join()

    assert statuses == {
        **{name: 200 for name in order if not name.endswith("upload")}, "A-upload": 201
    }
    smoothing = [order["A-smoothing-1"], order["A-smoothing-2"]]
    last_b = max(v for k, v in order.items() if k.startswith("B-"))
    assert last_b < min(smoothing), order
