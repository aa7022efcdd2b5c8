"""DICOMweb on the API side: the streaming STOW-RS reader, the PS3.18 store response, and
WADO-RS bodies.

The STOW-RS body (``multipart/related; type="application/dicom"``) is parsed as it
arrives: each part is kept in memory up to ``max_dicom_instance_bytes`` (past it, the
part's remaining bytes are dropped and the part is answered 0xA700), and is ingested as
soon as it ends, so memory holds one instance at a time. The whole body is limited to
``max_dataset_bytes`` and ``max_stow_instances`` parts (413 past them, before a byte more
is read). Instances already stored stay stored when a later part fails: each part has its
own answer, as PS3.18 10.5 asks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.core.db import Database
from app.core.dicom.errors import OUT_OF_RESOURCES, DicomRefusedError, DicomTooLargeError
from app.core.dicom.routing import Received
from app.core.dicom.store import Stored, ingest, parse
from app.core.storage import Storage
from models.errors import InvalidImageError, InvalidInputError, PayloadTooLargeError

DICOM = b"application/dicom"


@dataclass
class PartResult:
    stored: Stored | None = None
    status: int = 0
    message: str = ""
    sop_class_uid: str | None = None
    sop_uid: str | None = None


@dataclass
class _Part:
    data: bytearray = field(default_factory=bytearray)
    too_large: bool = False
    content_type: bytes = DICOM


class _StowReader:
    def __init__(self, max_part: int, max_parts: int) -> None:
        self.max_part, self.max_parts = max_part, max_parts
        self.current: _Part | None = None
        self.done: list[_Part] = []
        self.count = 0
        self.header_name = self.header_value = b""
        self.headers: dict[bytes, bytes] = {}

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > self.max_parts:
            raise PayloadTooLargeError(f"more than {self.max_parts} instances in one request",
                                       {"max_instances": self.max_parts})
        self.headers = {}
        self.current = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower().strip()] = self.header_value.strip()
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        assert self.current is not None
        ctype, _ = parse_options_header(self.headers.get(b"content-type", DICOM))
        self.current.content_type = ctype

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        assert part is not None
        if part.too_large:
            return
        if len(part.data) + (end - start) > self.max_part:
            part.too_large, part.data = True, bytearray()
            return
        part.data.extend(data[start:end])

    def on_part_end(self) -> None:
        assert self.current is not None
        self.done.append(self.current)
        self.current = None


def check_stow_type(request: Request, max_body: int) -> bytes:
    """The body's boundary; 415 unless ``multipart/related`` of ``application/dicom``."""
    ctype, options = parse_options_header(request.headers.get("content-type"))
    part_type = options.get(b"type", DICOM).strip(b'"')
    if ctype != b"multipart/related" or b"boundary" not in options:
        raise InvalidImageError(
            'STOW-RS expects a multipart/related; type="application/dicom" body',
            {"content_type": ctype.decode("latin-1")[:100]})
    if part_type != DICOM:
        raise InvalidImageError(
            'only multipart/related; type="application/dicom" is accepted (PS3.10 '
            "instances), not metadata and bulk data parts",
            {"type": part_type.decode("latin-1")[:100]})
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise PayloadTooLargeError(
            f"the request body of {declared} bytes is over the limit of {max_body} bytes",
            {"max_bytes": max_body})
    return bytes(options[b"boundary"])


async def read_stow(request: Request, db: Database, storage: Storage, tenant_id: str, *,
                    max_body: int, max_part: int, max_parts: int) -> list[PartResult]:
    boundary = check_stow_type(request, max_body)
    reader = _StowReader(max_part, max_parts)
    parser = MultipartParser(boundary, {
        "on_part_begin": reader.on_part_begin, "on_part_data": reader.on_part_data,
        "on_part_end": reader.on_part_end, "on_header_field": reader.on_header_field,
        "on_header_value": reader.on_header_value, "on_header_end": reader.on_header_end,
        "on_headers_finished": reader.on_headers_finished,
    })
    results: list[PartResult] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_body:
            raise PayloadTooLargeError(f"the request body is over the limit of {max_body} "
                                       "bytes", {"max_bytes": max_body})
        _feed(parser, chunk)
        await _ingest_done(reader, results, db, storage, tenant_id, max_part)
    try:
        parser.finalize()
    except Exception as exc:
        raise InvalidInputError(f"malformed multipart body: {exc}") from exc
    await _ingest_done(reader, results, db, storage, tenant_id, max_part)
    if not results:
        raise InvalidInputError("the STOW-RS body holds no parts")
    return results


def _feed(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except PayloadTooLargeError:
        raise
    except Exception as exc:  # python-multipart's parse errors
        raise InvalidInputError(f"malformed multipart body: {exc}") from exc


async def _ingest_done(reader: _StowReader, results: list[PartResult], db: Database,
                       storage: Storage, tenant_id: str, max_part: int) -> None:
    parts, reader.done = reader.done, []
    for part in parts:
        results.append(await anyio.to_thread.run_sync(
            _ingest_part, part, db, storage, tenant_id, max_part))


def _ingest_part(part: _Part, db: Database, storage: Storage, tenant_id: str,
                 max_part: int) -> PartResult:
    if part.too_large:
        return PartResult(status=OUT_OF_RESOURCES,
                          message=f"the instance is over the limit of {max_part} bytes")
    if part.content_type != DICOM:
        return PartResult(status=0xC000, message="the part is not application/dicom")
    try:
        stored = ingest(db, storage, tenant_id, bytes(part.data), source="stow",
                        max_bytes=max_part)
    except (DicomRefusedError, DicomTooLargeError) as exc:
        sop_class, sop = _uids(bytes(part.data))
        return PartResult(status=int(exc.status), message=exc.message,
                          sop_class_uid=sop_class, sop_uid=sop)
    return PartResult(stored=stored)


def _uids(data: bytes) -> tuple[str | None, str | None]:
    """The failed instance's class and UID, when its header can be read."""
    try:
        ds = parse(data)
    except DicomRefusedError:
        return None, None
    sop_class = str(ds.get("SOPClassUID", "") or "") or None
    sop = str(ds.get("SOPInstanceUID", "") or "") or None
    return sop_class, sop


def _item(sop_class: str | None, sop: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop:
        item["00081155"] = {"vr": "UI", "Value": [sop]}
    return item


def stow_response(results: Sequence[PartResult], base: str) -> tuple[int, dict[str, Any]]:
    """PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored."""
    referenced, failed = [], []
    for r in results:
        if r.stored is not None:
            s = r.stored
            item = _item(s.sop_class_uid, s.sop_uid)
            url = f"{base}/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_uid}"
            item["00081190"] = {"vr": "UR", "Value": [url]}
            referenced.append(item)
        else:
            item = _item(r.sop_class_uid, r.sop_uid)
            item["00081197"] = {"vr": "US", "Value": [r.status]}
            failed.append(item)
    body: dict[str, Any] = {}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    studies = {r.stored.study_uid for r in results if r.stored is not None}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies.pop()}"]}
    status = 200 if not failed else (202 if referenced else 409)
    return status, dict(sorted(body.items()))


def received_of(results: Sequence[PartResult]) -> list[Received]:
    return [Received(r.stored, None) for r in results
            if r.stored is not None and not r.stored.duplicate]


def multipart_files(paths: Sequence[Path], boundary: str) -> Iterator[bytes]:
    """A WADO-RS ``multipart/related; type="application/dicom"`` body, file by file."""
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
