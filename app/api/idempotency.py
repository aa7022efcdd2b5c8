"""``Idempotency-Key`` on every POST that creates something (IETF
draft-ietf-httpapi-idempotency-key-header, as Stripe's API does).

A harness whose network retries a POST must not create a second audit. With the header:

- the first request *claims* the key (a row, unique per credential and key) and runs; when
  it succeeds (2xx) its status, body and ``Location`` are kept until the key expires
  (``ROBUSTDX_IDEMPOTENCY_TTL_SECONDS``);
- a repeat with the same key and the same request gets that response again, marked
  ``Idempotent-Replayed: true``, and creates nothing; a concurrent repeat waits for the first
  to finish;
- the same key with a different request (method, path, query, content type or body) is
  refused with 409;
- a request that fails (any non-2xx) keeps nothing: it created nothing, so its retry runs
  again.

The request fingerprint is the SHA-256 of method, path, query, media type and body, computed
while the body streams to the route (uploads are never buffered here). A multipart body's
boundary is replaced by a fixed token first, since a client that re-sends the same form
draws a new random boundary. Keys are scoped by the SHA-256 of the ``Authorization``
header, so two tenants' keys never meet; requests without credentials pass through (the
route answers 401).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body
from app.core.db import Database
from app.core.db.tables import IdempotencyKey

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 1 << 20
#: The POST routes that create something (a resource or a job).
CREATING_PATHS = re.compile(
    r"^/v1/(models|remote-models|datasets|dicom/datasets|dicom/aes|dicom/rules|audits|"
    r"defenses|tenants|webhooks)/?$"
)
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")
_KEPT_HEADERS = ("location", "content-type")


class _Fingerprint:
    """SHA-256 of a request, with the multipart boundary replaced as the body streams."""

    def __init__(self, scope: Scope, content_type: str) -> None:
        self.digest = hashlib.sha256()
        media_type, _, params = content_type.partition(";")
        match = re.search(r'boundary="?([^";]+)"?', params)
        self.boundary = match.group(1).encode() if match else b""
        self._tail = b""
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode(),
                     media_type.strip().lower()):
            self.digest.update(part.encode() + b"\0")

    def update(self, chunk: bytes) -> None:
        if not self.boundary:
            self.digest.update(chunk)
            return
        data = (self._tail + chunk).replace(self.boundary, b"<boundary>")
        keep = len(self.boundary) - 1  # a boundary may straddle two chunks
        self._tail = data[-keep:] if keep and len(data) > keep else (data if keep else b"")
        self.digest.update(data[: len(data) - len(self._tail)])

    def hexdigest(self) -> str:
        self.digest.update(self._tail)
        self._tail = b""
        return self.digest.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, ttl_seconds: float, wait_seconds: float = 60.0) -> None:
        self.app = app
        self.ttl = timedelta(seconds=ttl_seconds)
        self.wait_seconds = wait_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or not CREATING_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw_key = headers.get(HEADER)
        credential = headers.get(b"authorization")
        if raw_key is None or credential is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not _KEY_CHARS.match(key):
            await _send_json(send, 422, error_body(
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
                {"max_length": MAX_KEY_LENGTH}))
            return
        db: Database = scope["app"].state.robustdx.db
        fingerprint = _Fingerprint(scope, headers.get(b"content-type", b"").decode("latin-1"))
        record = _Store(db, hashlib.sha256(credential).hexdigest(), key, self.ttl)
        await self._handle(scope, receive, send, record, fingerprint)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, record: _Store,
                      fingerprint: _Fingerprint) -> None:
        with anyio.move_on_after(self.wait_seconds):
            while True:
                claimed = await anyio.to_thread.run_sync(record.claim)
                if claimed:
                    await self._run_first(scope, receive, send, record, fingerprint)
                    return
                stored = await anyio.to_thread.run_sync(record.load)
                if stored is not None and stored.response_status is not None:
                    await _drain(receive, fingerprint.update)
                    await self._replay(send, stored, fingerprint.hexdigest())
                    return
                await anyio.sleep(0.1)  # the first request is still running
        await _send_json(send, 409, error_body(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still being processed; retry later"))

    async def _run_first(self, scope: Scope, receive: Receive, send: Send, record: _Store,
                         fingerprint: _Fingerprint) -> None:
        """Run the request, then keep a 2xx answer or release the key. This happens after the
        route's own transaction has ended (never while it holds a database lock); a duplicate
        arriving in between waits for it."""
        state: dict[str, Any] = {"status": 0, "headers": {}, "body": bytearray()}

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                fingerprint.update(message.get("body", b""))
            return message

        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in message.get("headers", []) if k.decode("latin-1") in _KEPT_HEADERS
                }
            elif message["type"] == "http.response.body" \
                    and len(state["body"]) <= MAX_STORED_BODY:
                state["body"] += message.get("body", b"")
            await send(message)

        finished = False
        try:
            await self.app(scope, hashing_receive, capturing_send)
            finished = True
        finally:
            keep = finished and 200 <= state["status"] < 300 \
                and len(state["body"]) <= MAX_STORED_BODY
            with anyio.CancelScope(shield=True):
                if keep:
                    await anyio.to_thread.run_sync(
                        record.complete, fingerprint.hexdigest(), state["status"],
                        state["headers"], bytes(state["body"]))
                else:
                    await anyio.to_thread.run_sync(record.release)

    async def _replay(self, send: Send, stored: IdempotencyKey, digest: str) -> None:
        if stored.fingerprint != digest:
            await _send_json(send, 409, error_body(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; use a new key",
            ))
            return
        headers = [(k.encode(), v.encode()) for k, v in (stored.response_headers or {}).items()]
        headers.append((b"idempotent-replayed", b"true"))
        body = stored.response_body or b""
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": stored.response_status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Store:
    """The key's row, in short sessions run in a worker thread."""

    def __init__(self, db: Database, scope: str, key: str, ttl: timedelta) -> None:
        self.db, self.scope, self.key, self.ttl = db, scope, key, ttl

    def claim(self) -> bool:
        now = datetime.now(UTC)
        with self.db.session() as session:
            session.execute(delete(IdempotencyKey).where(
                IdempotencyKey.scope == self.scope, IdempotencyKey.key == self.key,
                IdempotencyKey.expires_at < now))
        try:
            with self.db.session() as session:
                session.add(IdempotencyKey(scope=self.scope, key=self.key,
                                           expires_at=now + self.ttl))
        except IntegrityError:
            return False
        return True

    def load(self) -> IdempotencyKey | None:
        with self.db.session() as session:
            row = session.scalar(select(IdempotencyKey).where(
                IdempotencyKey.scope == self.scope, IdempotencyKey.key == self.key))
            if row is not None:
                session.expunge(row)
            return row

    def complete(self, fingerprint: str, status: int, headers: dict[str, str],
                 body: bytes) -> None:
        with self.db.session() as session:
            row = session.scalar(select(IdempotencyKey).where(
                IdempotencyKey.scope == self.scope, IdempotencyKey.key == self.key))
            if row is not None:
                row.fingerprint = fingerprint
                row.response_status = status
                row.response_headers = headers
                row.response_body = body

    def release(self) -> None:
        with self.db.session() as session:
            session.execute(delete(IdempotencyKey).where(
                IdempotencyKey.scope == self.scope, IdempotencyKey.key == self.key,
                IdempotencyKey.response_status.is_(None)))


async def _drain(receive: Receive, update: Callable[[bytes], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.request":
            update(message.get("body", b""))
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            return


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
