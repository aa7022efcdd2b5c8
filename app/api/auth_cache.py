"""A short-lived cache of authorized (API key, model id) pairs for the inference paths.

Under load the key check and the model look-up (a database session and two queries in the
thread pool) were the largest cost of a predict besides the forward pass: about 20 ms of a
request's latency at 32 clients on 2 cores, mostly waiting for a thread and the GIL. A hit
here answers on the event loop. Only successes are cached, for ``auth_cache_seconds``
(0 disables it): a wrong key or another tenant's model is checked against the database
every time. Deleting a model forgets it at once in this process; other API processes
forget it within the TTL.
"""

from __future__ import annotations

import hashlib
import threading
import time

from fastapi.concurrency import run_in_threadpool

from app.api.deps import authorized_model
from app.core.db import Database, ModelRow


class AuthorizedModels:
    def __init__(self, ttl_seconds: float, max_entries: int = 4096) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], tuple[float, ModelRow]] = {}

    @staticmethod
    def _key(authorization: str, model_id: str) -> tuple[str, str]:
        return hashlib.sha256(authorization.encode()).hexdigest(), model_id

    def get(self, authorization: str | None, model_id: str) -> ModelRow | None:
        if self.ttl <= 0 or not authorization:
            return None
        key = self._key(authorization, model_id)
        with self._lock:
            hit = self._rows.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._rows[key]
                return None
            return hit[1]

    def put(self, authorization: str, model_id: str, row: ModelRow) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._rows) >= self.max_entries:
                self._rows.clear()  # a flood of distinct keys: start again, never grow
            self._rows[self._key(authorization, model_id)] = (time.monotonic() + self.ttl, row)

    def forget_model(self, model_id: str) -> None:
        with self._lock:
            for key in [k for k in self._rows if k[1] == model_id]:
                del self._rows[key]


async def cached_authorized_model(cache: AuthorizedModels, db: Database,
                                  authorization: str | None, model_id: str) -> ModelRow:
    """:func:`app.api.deps.authorized_model`, answered from ``cache`` when it can be."""
    row = cache.get(authorization, model_id)
    if row is not None:
        return row
    row = await run_in_threadpool(authorized_model, db, authorization, model_id)
    if authorization:
        cache.put(authorization, model_id, row)
    return row
