"""In-process inference: an LRU cache of loaded models, each with a micro-batcher.

One *lane* per cached ``(model id, device)``: a worker thread that owns the model and a
queue. Requests put their decoded images on the queue and await asyncio futures; the
thread takes up to ``batch_max_size`` queued images, runs one forward pass in
``torch.inference_mode()`` and hands each row of probabilities back to its request's event
loop. The event loop never runs a forward pass.

Batching does not make a lone request wait. A lane knows how many requests have entered
predict for its model and are not yet queued (:meth:`Lane.expect`: their key is being
checked, their body read, their images decoded); a forming batch waits (at most
``batch_max_wait_ms``) for those, and, while the previous batch carried several images
(sustained load, whose next requests are still on the wire), for the batch to fill. With
no one else coming, a request runs at once; under load, requests that arrive while a
batch runs form the next one, so batches grow with the load on their own.

``inference_threads`` bounds how many lanes run a forward pass at the same time (one by
default: lanes of different models take turns on the device). The gate is a FIFO
(:class:`FairGate`): a lane that finishes a pass and has more work queues behind the lanes
already waiting, so no lane holds the device for more than one pass while others wait.

Other work that must not overlap the lane's forward passes (randomized smoothing) runs on
the same thread through :meth:`Lane.call`, one *chunk* per call: a smoothed request puts
its next chunk on the queue only when the previous one is back, so plain requests that
arrived meanwhile run in between, and the request can stop when its client has gone.

The cache is fair between tenants: when it is full, the lane evicted is the least
recently used one *of the tenant holding the most lanes*, so one tenant cycling through
its models evicts its own, never everyone else's.

:meth:`InferenceService.shutdown` (SIGTERM) stops taking work and fails every queued item
with 503 at once; each lane finishes at most the pass it is running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import anyio
import torch

from app.api.services.lanes import FairGate, Lane, LaneClosedError, Ticket, shutting_down
from models.device import resolve_device
from models.wrapper import DiagnosticModel

if TYPE_CHECKING:
    from app.api.startup import AppState

__all__ = ["FairGate", "InferenceService", "Lane", "LaneClosedError", "Loader", "Ticket",
           "inference_service"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[], DiagnosticModel]


class InferenceService:
    """The LRU cache of lanes (see module doc)."""

    def __init__(
        self,
        *,
        device: torch.device,
        max_models: int = 4,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        concurrency: int = 1,
    ) -> None:
        self.device = device
        self.max_models = max_models
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._gate = FairGate(concurrency)
        self._lock = threading.Lock()
        self._lanes: OrderedDict[tuple[str, str], Lane] = OrderedDict()
        self._loading: dict[tuple[str, str], concurrent.futures.Future[Lane]] = {}
        self._closed = False
        self._stopped: list[Lane] = []

    def _key(self, model_id: str) -> tuple[str, str]:
        return (model_id, str(self.device))

    def expect(self, model_id: str, count: int = 1) -> Ticket | None:
        """Announce a request to the model's lane, when it is cached (see :meth:`Lane.expect`).

        Called as a request enters, before its key is checked and its body read, so that
        a batch forming meanwhile waits (at most ``batch_max_wait_ms``) for it.
        """
        with self._lock:
            lane = self._lanes.get(self._key(model_id))
        return lane.expect(count) if lane is not None else None

    def cached(self) -> list[str]:
        with self._lock:
            return [model_id for model_id, _ in self._lanes]

    def cached_by_tenant(self) -> dict[str, list[str]]:
        """Cached model ids per tenant, least recently used first."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for (model_id, _), lane in self._lanes.items():
                out.setdefault(lane.tenant, []).append(model_id)
            return out

    async def lane(self, model_id: str, loader: Loader, tenant: str = "") -> Lane:
        """The model's lane, loading it (off the event loop, once) on a cache miss."""
        key = self._key(model_id)
        with self._lock:
            if self._closed:
                raise shutting_down()
            lane = self._lanes.get(key)
            if lane is not None:
                self._lanes.move_to_end(key)
                return lane
            pending = self._loading.get(key)
            owner = pending is None
            if pending is None:
                pending = self._loading[key] = concurrent.futures.Future()
        if owner:
            try:
                model = await anyio.to_thread.run_sync(loader)
                lane = Lane(
                    f"{model_id[:8]}@{self.device}",
                    model,
                    max_batch=self.max_batch,
                    max_wait_s=self.max_wait_s,
                    gate=self._gate,
                    tenant=tenant,
                )
                evicted = self._insert(key, lane)
                for old in evicted:
                    old.close()
                pending.set_result(lane)
            except BaseException as exc:
                pending.set_exception(exc)
                raise
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return await asyncio.wrap_future(pending)

    def _insert(self, key: tuple[str, str], lane: Lane) -> list[Lane]:
        with self._lock:
            if self._closed:
                lane.close()
                raise shutting_down()
            self._lanes[key] = lane
            self._lanes.move_to_end(key)
            evicted = []
            while len(self._lanes) > self.max_models:
                old_key = self._victim(key)
                old = self._lanes.pop(old_key)
                logger.info("evicting model %s from the inference cache", old_key[0])
                evicted.append(old)
            return evicted

    def _victim(self, keep: tuple[str, str]) -> tuple[str, str]:
        """The least recently used lane of the tenant holding the most lanes (ties: the
        tenant whose least recently used lane is oldest), never ``keep`` (just loaded)."""
        counts: dict[str, int] = {}
        for lane in self._lanes.values():
            counts[lane.tenant] = counts.get(lane.tenant, 0) + 1
        most = max(counts.values())
        for k, lane in self._lanes.items():  # oldest first
            if k != keep and counts[lane.tenant] == most:
                return k
        return next(k for k in self._lanes if k != keep)

    async def predict(
        self,
        model_id: str,
        loader: Loader,
        count: int,
        prepare: Callable[[], list[torch.Tensor]],
        ticket: Ticket | None = None,
        tenant: str = "",
        limiter: anyio.CapacityLimiter | None = None,
    ) -> list[list[float]]:
        """Probabilities for ``count`` images that ``prepare`` decodes (in a worker thread).

        The lane is told the images are coming before they are decoded (or earlier, with
        the ``ticket`` of :meth:`expect`), so a batch that is forming waits for them rather
        than leaving without them.
        """
        lane = await self.lane(model_id, loader, tenant)
        if ticket is not None and ticket.lane is lane:
            ticket.resize(count)
        else:
            if ticket is not None:
                ticket.release()
            ticket = lane.expect(count)
        try:
            images = await anyio.to_thread.run_sync(prepare, limiter=limiter)
            try:
                return await lane.infer(images, ticket)
            except LaneClosedError:  # evicted while decoding: once more, on a fresh lane
                return await self.infer(model_id, loader, images, tenant)
        finally:
            ticket.release()

    async def infer(
        self, model_id: str, loader: Loader, images: Sequence[torch.Tensor], tenant: str = ""
    ) -> list[list[float]]:
        """Probabilities for images already decoded (micro-batched with the others)."""
        for attempt in range(2):
            lane = await self.lane(model_id, loader, tenant)
            try:
                return await lane.infer(images)
            except LaneClosedError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def call(
        self, model_id: str, loader: Loader, fn: Callable[[DiagnosticModel], T], tenant: str = ""
    ) -> T:
        """``fn(model)`` on the model's lane thread (see :meth:`Lane.call`)."""
        for attempt in range(2):
            lane = await self.lane(model_id, loader, tenant)
            try:
                return await lane.call(fn)
            except LaneClosedError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def evict(self, model_id: str) -> None:
        """Drop every cached copy of a model (deleted models)."""
        with self._lock:
            keys = [k for k in self._lanes if k[0] == model_id]
            lanes = [self._lanes.pop(k) for k in keys]
        for lane in lanes:
            lane.close()

    def shutdown(self) -> None:
        """Stop at once (SIGTERM): no new work, queued work fails with 503; the pass each
        lane is running finishes. Safe to call from a signal handler and more than once."""
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.abort()
        self._stopped.extend(lanes)

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`shutdown`, then wait up to ``timeout`` seconds in all for the lanes."""
        self.shutdown()
        deadline = time.monotonic() + timeout
        for lane in self._stopped:
            lane.join(max(0.0, deadline - time.monotonic()))


_CREATE = threading.Lock()


def inference_service(state: AppState) -> InferenceService:
    """The process's service, created on first use and kept in ``state.extras["inference"]``
    (closed by :func:`app.api.startup.shutdown`)."""
    with _CREATE:
        service = state.extras.get("inference")
        if service is None:
            if state.extras.get("stopping"):
                raise shutting_down()
            settings = state.settings
            service = InferenceService(
                device=resolve_device(settings.device),
                max_models=settings.model_cache_size,
                max_batch=settings.batch_max_size,
                max_wait_ms=settings.batch_max_wait_ms,
                concurrency=settings.inference_threads,
            )
            state.extras["inference"] = service
        assert isinstance(service, InferenceService)
        return service
