"""Per-stage request timings in a ``Server-Timing`` response header (W3C Server Timing).

The middleware gives each request an empty record; code on the request path adds stages
with :func:`stage` or :func:`record` (thread-pool calls share the record: Starlette copies
the context into them). The header reads ``auth;dur=0.41, decode;dur=1.20, ...`` in
milliseconds, so a benchmark (or a browser) sees where a request's time went without a
profiler. Recording costs two ``perf_counter`` calls per stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STAGES: ContextVar[dict[str, float] | None] = ContextVar("robustdx_stages", default=None)


def record(name: str, seconds: float) -> None:
    """Add ``seconds`` to stage ``name`` of the current request (no-op outside one)."""
    stages = _STAGES.get()
    if stages is not None:
        stages[name] = stages.get(name, 0.0) + seconds


@contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record(name, time.perf_counter() - start)


def header_value(stages: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in stages.items())


class ServerTimingMiddleware:
    """Adds ``Server-Timing`` to responses whose handlers recorded stages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stages: dict[str, float] = {}
        token = _STAGES.set(stages)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and stages:
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", header_value(stages).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            _STAGES.reset(token)
