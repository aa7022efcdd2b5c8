"""Inference lanes: one model's queue and worker thread, and the FIFO device gate.

See :mod:`app.api.services.inference` for how lanes batch requests and take turns on the
device; this module is the machinery, the service owns the cache of lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from app.api.metrics import BATCH_SIZE
from models.errors import ServiceUnavailableError
from models.heads import probabilities
from models.wrapper import DiagnosticModel

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LaneClosedError(RuntimeError):
    """The lane was evicted between look-up and submission; look it up again."""


def shutting_down() -> ServiceUnavailableError:
    return ServiceUnavailableError("the inference service is shutting down; retry shortly")


class FairGate:
    """A FIFO semaphore of ``slots``: ``release`` hands the slot to the longest waiter.

    ``threading.Semaphore`` lets a releasing thread take the slot straight back (it never
    sleeps in between), so a lane with a long queue would starve the others.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # the releasing thread passed its slot to us

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1

    def __enter__(self) -> FairGate:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        gate: FairGate,
        tenant: str = "",
    ) -> None:
        self.name = name
        self.tenant = tenant
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

    def abort(self) -> None:
        """Stop taking work and fail what is queued with 503; the running pass finishes."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify()
        _deliver(queued, None, shutting_down())

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
