"""A small bounded executor for checking model uploads, apart from the request thread pool.

Loading and dry-running an uploaded model can take long (a large network, or hostile code
that loops), and anyio's default thread pool serves every synchronous route and dependency
of the API: forty slow uploads there would leave nothing for ``/health/live``'s peers, the
listings, or tenant creation. Checks run here instead, ``model_check_workers`` at a time;
at most ``max_pending_model_checks`` more wait, and further uploads are refused with 429
and ``Retry-After`` (their files are removed by the caller).

What a check does is :func:`app.core.registry.check_upload`, the one entry point of the
upload check (which can move into a separate, resource-limited process without any change
here).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from models.errors import RateLimitedError

if TYPE_CHECKING:
    from app.api.startup import AppState

T = TypeVar("T")
RETRY_AFTER_SECONDS = 10.0


class ModelCheckPool:
    """``workers`` threads; ``max_pending`` waiting checks on top of the running ones."""

    def __init__(self, workers: int, max_pending: int) -> None:
        self.workers, self.max_pending = workers, max_pending
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="model-check")
        self._admitted = threading.BoundedSemaphore(workers + max_pending)
        self._count = 0
        self._count_lock = threading.Lock()

    @property
    def admitted(self) -> int:
        """Checks running or waiting now."""
        with self._count_lock:
            return self._count

    def _add(self, delta: int) -> None:
        with self._count_lock:
            self._count += delta

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a check thread; :class:`RateLimitedError` when the pool is full."""
        if not self._admitted.acquire(blocking=False):
            raise RateLimitedError(
                f"{self.workers + self.max_pending} model uploads are being checked or "
                "waiting (model_check_workers + max_pending_model_checks); retry shortly",
                RETRY_AFTER_SECONDS,
                {"limit": self.workers + self.max_pending},
            )

        self._add(1)

        def task() -> T:
            try:
                return fn()
            finally:
                self._add(-1)
                self._admitted.release()

        try:
            future = self._executor.submit(task)
        except BaseException:
            self._add(-1)
            self._admitted.release()
            raise
        # If the request is cancelled, the check still ends (its slot is released by the
        # task itself) and the caller's cleanup removes the file.
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_CREATE = threading.Lock()


def model_checks(state: AppState) -> ModelCheckPool:
    """The process's pool, created on first use (``state.extras["model_checks"]``)."""
    with _CREATE:
        pool = state.extras.get("model_checks")
        if pool is None:
            pool = ModelCheckPool(
                state.settings.model_check_workers, state.settings.max_pending_model_checks
            )
            state.extras["model_checks"] = pool
        assert isinstance(pool, ModelCheckPool)
        return pool
