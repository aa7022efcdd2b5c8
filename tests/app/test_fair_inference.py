"""Fair inference without HTTP: the FIFO device gate, the per-tenant share of the cache,
shutdown, and smoothing that stops when its client has gone."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import torch

from app.api.services.inference import FairGate, InferenceService
from models.card import Head, ModelCard
from models.smoothing import SmoothingVotes
from models.wrapper import DiagnosticModel
from tests.models.model_files import card_dict, tiny_net


def _wait_until(condition: object, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def test_gate_hands_the_slot_to_the_longest_waiter() -> None:
    gate = FairGate(1)
    order: list[str] = []
    gate.acquire()  # "A" runs a pass

    def other_lane() -> None:
        with gate:
            order.append("B")

    waiter = threading.Thread(target=other_lane)
    waiter.start()
    _wait_until(lambda: len(gate._waiters) == 1)
    gate.release()  # A's pass ends and A wants the device again at once
    gate.acquire()
    order.append("A")
    gate.release()
    waiter.join()
    assert order == ["B", "A"]


def _model() -> DiagnosticModel:
    return DiagnosticModel(tiny_net(), ModelCard.model_validate(card_dict()), Head.SOFTMAX).eval()


def test_one_tenant_cycling_models_evicts_its_own() -> None:
    service = InferenceService(device=torch.device("cpu"), max_models=3)

    async def load(model_id: str, tenant: str) -> None:
        await service.lane(model_id, _model, tenant)

    async def run() -> None:
        await load("b1", "B")
        for i in range(6):  # A cycles through six models
            await load(f"a{i}", "A")
        await load("c1", "C")

    try:
        asyncio.run(run())
        cached = service.cached_by_tenant()
    finally:
        service.close()
    assert cached == {"B": ["b1"], "A": ["a5"], "C": ["c1"]}


def test_a_single_tenant_keeps_plain_lru_order() -> None:
    service = InferenceService(device=torch.device("cpu"), max_models=2)

    async def run() -> None:
        for model_id in ("m0", "m1", "m0", "m2"):
            await service.lane(model_id, _model, "A")

    try:
        asyncio.run(run())
        assert service.cached() == ["m0", "m2"]
    finally:
        service.close()


def test_shutdown_fails_queued_work_with_503() -> None:
    service = InferenceService(device=torch.device("cpu"), max_models=2)
    release = threading.Event()
    started = threading.Event()

    def hold(model: DiagnosticModel) -> str:
        started.set()
        release.wait(30)
        return "done"

    async def run() -> list[object]:
        first = asyncio.ensure_future(service.call("m", _model, hold, "A"))
        await asyncio.to_thread(started.wait, 30)
        queued = asyncio.ensure_future(service.call("m", _model, lambda m: "late", "A"))
        await asyncio.sleep(0.05)  # let it reach the lane's queue
        service.shutdown()
        release.set()
        return list(await asyncio.gather(first, queued, return_exceptions=True))

    try:
        first, queued = asyncio.run(run())
    finally:
        service.close()
    assert first == "done"  # the running pass finishes
    from models.errors import ServiceUnavailableError

    assert isinstance(queued, ServiceUnavailableError)


def test_smoothing_stops_when_the_client_goes_away(tmp_path: Path) -> None:
    """``predict_uploads`` polls ``disconnected`` between chunks and gives the model back."""
    from app.api.services.multipart import UploadedFile
    from app.api.services.predictions import ImageLimits, SmoothingRequest, predict_uploads
    from app.core.db import ModelRow
    from app.core.storage import Storage
    from models.errors import ServiceUnavailableError
    from tests.app.models_fixtures import png_bytes

    storage = Storage(tmp_path)
    row = ModelRow(id="m1", tenant_id="A", name="m", format="torchscript", sha256="0" * 64,
                   size_bytes=1, card=card_dict(), info={})
    service = InferenceService(device=torch.device("cpu"))
    model = _model()
    chunks: list[int] = []
    original = SmoothingVotes.run

    def counting(self: SmoothingVotes, m: DiagnosticModel, max_copies: int | None = None) -> bool:
        chunks.append(max_copies or 0)
        return original(self, m, max_copies)

    polls: list[int] = []

    async def disconnected() -> bool:
        polls.append(len(chunks))
        return len(polls) >= 3  # the client leaves after the third chunk

    parts = [UploadedFile("file", "x.png", None, data=bytearray(png_bytes(1)))]

    async def run() -> object:
        # The loader is the in-memory model: nothing is read from the (empty) store.
        await service.lane("m1", lambda: model, "A")
        return await predict_uploads(
            service, storage, row, parts, single=True,
            limits=ImageLimits(1 << 20, 1 << 20),
            smoothing=SmoothingRequest(sigma=0.25, n=1000, alpha=0.001, seed=0),
            chunk=16, disconnected=disconnected,
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SmoothingVotes, "run", counting)
        try:
            with pytest.raises(ServiceUnavailableError, match="client went away"):
                asyncio.run(run())
        finally:
            service.close()
    # 1016 copies would take 64 chunks of 16; it stopped after the third.
    assert len(chunks) == 3
    assert polls == [1, 2, 3]
