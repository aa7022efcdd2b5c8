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
default: lanes of different models take turns on the device).

Other work that must not overlap the lane's forward passes (randomized smoothing, whose
``n`` noisy copies are a batch of their own) runs on the same thread through
:meth:`Lane.call`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import torch

from app.api.metrics import BATCH_SIZE
from models.device import resolve_device
from models.errors import ServiceUnavailableError
from models.heads import probabilities
from models.wrapper import DiagnosticModel

if TYPE_CHECKING:
    from app.api.startup import AppState

logger = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[], DiagnosticModel]


class LaneClosedError(RuntimeError):
    """The lane was evicted between look-up and submission; look it up again."""


@dataclass
class _Image:
    image: torch.Tensor
    future: asyncio.Future[list[float]]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Call:
    fn: Callable[[DiagnosticModel], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class Ticket:
    """Requests announced to a lane and not yet submitted (see :meth:`Lane.expect`)."""

    def __init__(self, lane: Lane, count: int) -> None:
        self.lane = lane
        self.count = count

    def resize(self, count: int) -> None:
        """The request turned out to carry ``count`` images."""
        if self.count and count != self.count:
            self.lane._arrived(self.count - count)
            self.count = count

    def release(self) -> None:
        if self.count:
            self.lane._arrived(self.count)
            self.count = 0


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _deliver(
    items: Sequence[_Image | _Call], values: Sequence[Any] | None, error: BaseException | None
) -> None:
    """Hand results back, one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
    for i, item in enumerate(items):
        value = values[i] if values is not None else None
        by_loop.setdefault(item.loop, []).append((item.future, value, error))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(_resolve, results)


class Lane:
    """One model's queue and worker thread."""

    def __init__(
        self,
        name: str,
        model: DiagnosticModel,
        *,
        max_batch: int,
        max_wait_s: float,
        gate: threading.Semaphore,
    ) -> None:
        self.name = name
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._gate = gate
        self._cond = threading.Condition()
        self._queue: deque[_Image | _Call] = deque()
        self._arriving = 0
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"inference-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ request side

    def expect(self, count: int) -> Ticket:
        """Announce ``count`` images about to be submitted, so a forming batch waits for them."""
        with self._cond:
            self._arriving += count
        return Ticket(self, count)

    def _arrived(self, count: int) -> None:
        with self._cond:
            self._arriving = max(0, self._arriving - count)
            self._cond.notify()

    async def infer(
        self, images: Sequence[torch.Tensor], ticket: Ticket | None = None
    ) -> list[list[float]]:
        """Probabilities ``[K]`` for each ``[C, H, W]`` image in [0, 1], in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[list[float]]] = [loop.create_future() for _ in images]
        with self._cond:
            if self._closed:
                raise LaneClosedError(self.name)
            self._queue.extend(
                _Image(img, fut, loop) for img, fut in zip(images, futures, strict=True)
            )
            if ticket is not None:
                self._arriving = max(0, self._arriving - ticket.count)
                ticket.count = 0
            self._cond.notify()
        return list(await asyncio.gather(*futures))

    async def call(self, fn: Callable[[DiagnosticModel], T]) -> T:
        """Run ``fn(model)`` on the lane's thread, between batches."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._closed:
                raise LaneClosedError(self.name)
            self._queue.append(_Call(fn, future, loop))
            self._cond.notify()
        return await future

    def close(self) -> None:
        """Stop taking work; queued work still runs, then the thread ends."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker side

    def _next(self) -> list[_Image] | _Call | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            if isinstance(self._queue[0], _Call):
                return self._queue.popleft()  # type: ignore[return-value]
            deadline = time.monotonic() + self.max_wait_s
            while (
                (self._arriving > 0 or self._busy)
                and len(self._queue) < self.max_batch
                and not self._closed
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Image] = []
            while self._queue and len(batch) < self.max_batch:
                head = self._queue[0]
                if not isinstance(head, _Image):
                    break
                batch.append(head)
                self._queue.popleft()
            self._busy = len(batch) > 1
            return batch

    def _run(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            if isinstance(work, _Call):
                self._run_call(work)
            else:
                self._run_batch(work)

    def _run_call(self, call: _Call) -> None:
        try:
            with self._gate, torch.inference_mode():
                value = call.fn(self.model)
        except BaseException as exc:  # handed to the awaiting request
            _deliver([call], None, exc)
        else:
            _deliver([call], [value], None)

    def _run_batch(self, batch: list[_Image]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        try:
            x = torch.stack([item.image for item in live]).to(self.model.device)
            with self._gate, torch.inference_mode():
                probs = probabilities(self.model(x), self.model.head)
                rows = probs.float().cpu().tolist()
        except BaseException as exc:
            logger.exception("inference failed on lane %s", self.name)
            _deliver(live, None, exc)
            return
        BATCH_SIZE.observe(len(live))
        _deliver(live, rows, None)


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
        self._gate = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._lanes: OrderedDict[tuple[str, str], Lane] = OrderedDict()
        self._loading: dict[tuple[str, str], concurrent.futures.Future[Lane]] = {}
        self._closed = False

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

    async def lane(self, model_id: str, loader: Loader) -> Lane:
        """The model's lane, loading it (off the event loop, once) on a cache miss."""
        key = self._key(model_id)
        with self._lock:
            if self._closed:
                raise ServiceUnavailableError("the inference service is shutting down")
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
            self._lanes[key] = lane
            self._lanes.move_to_end(key)
            evicted = []
            while len(self._lanes) > self.max_models:
                old_key, old = self._lanes.popitem(last=False)
                logger.info("evicting model %s from the inference cache", old_key[0])
                evicted.append(old)
            return evicted

    async def predict(
        self,
        model_id: str,
        loader: Loader,
        count: int,
        prepare: Callable[[], list[torch.Tensor]],
        ticket: Ticket | None = None,
    ) -> list[list[float]]:
        """Probabilities for ``count`` images that ``prepare`` decodes (in a worker thread).

        The lane is told the images are coming before they are decoded (or earlier, with
        the ``ticket`` of :meth:`expect`), so a batch that is forming waits for them rather
        than leaving without them.
        """
        lane = await self.lane(model_id, loader)
        if ticket is not None and ticket.lane is lane:
            ticket.resize(count)
        else:
            if ticket is not None:
                ticket.release()
            ticket = lane.expect(count)
        try:
            images = await anyio.to_thread.run_sync(prepare)
            try:
                return await lane.infer(images, ticket)
            except LaneClosedError:  # evicted while decoding: once more, on a fresh lane
                lane = await self.lane(model_id, loader)
                return await lane.infer(images)
        finally:
            ticket.release()

    async def call(self, model_id: str, loader: Loader, fn: Callable[[DiagnosticModel], T]) -> T:
        """``fn(model)`` on the model's lane thread (see :meth:`Lane.call`)."""
        for attempt in range(2):
            lane = await self.lane(model_id, loader)
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

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.close()
        for lane in lanes:
            lane.join(timeout)


_CREATE = threading.Lock()


def inference_service(state: AppState) -> InferenceService:
    """The process's service, created on first use and kept in ``state.extras["inference"]``
    (closed by :func:`app.api.startup.shutdown`)."""
    with _CREATE:
        service = state.extras.get("inference")
        if service is None:
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
