"""The API in this process, on a real socket (for clients that need one: tritonclient)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from app.api.main import create_app
from app.cli.embedded_broker import free_port
from app.core.settings import Settings


@contextmanager
def live_api(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` with uvicorn in a thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True, name="live-api")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        server.should_exit = True
        raise RuntimeError("the API did not start")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
