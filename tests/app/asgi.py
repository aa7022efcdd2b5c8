"""Driving the ASGI app by hand, to see how much of a request body it reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio


@dataclass
class Exchange:
    status: int = 0
    body: bytes = b""
    chunks_read: int = 0
    bytes_read: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def asgi_request(app: Any, method: str, path: str, headers: dict[str, str],
                 chunks: Iterable[bytes]) -> Exchange:
    """Send ``chunks`` as the body only as fast as the app asks for them; the answer
    records how many it asked for before it responded."""
    out = Exchange()
    source = iter(chunks)
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            await anyio.sleep(3600)  # the app asked past the end: like a silent client
        chunk = next(source, None)
        if chunk is None:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        out.chunks_read += 1
        out.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": app,
    }

    async def main() -> None:
        with anyio.fail_after(120):
            await app(scope, receive, send)

    anyio.run(main)
    return out


def multipart_chunks(boundary: str, fields: dict[str, str], file_field: str,
                     filename: str, chunk: bytes, count: int) -> Iterable[bytes]:
    """A multipart body whose file part is ``count`` copies of ``chunk``, made lazily."""
    head = b""
    for name, value in fields.items():
        head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                 f"{value}\r\n").encode()
    head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; "
             f"filename=\"{filename}\"\r\nContent-Type: application/zip\r\n\r\n").encode()
    yield head
    for _ in range(count):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()
