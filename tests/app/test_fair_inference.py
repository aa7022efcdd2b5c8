"""Fair inference without HTTP: the FIFO device gate and the per-tenant share of the cache."""

from __future__ import annotations

import asyncio
import threading
import time

import torch

from app.api.services.inference import FairGate, InferenceService
from models.card import Head, ModelCard
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
