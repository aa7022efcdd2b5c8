"""Sending results back: C-STORE SCU (pynetdicom) or STOW-RS (httpx) to a destination.

A destination is ``{"kind": "dimse", "ae_title", "host", "port"}`` or
``{"kind": "stow", "url", "token"?}`` (the STOW-RS studies URL, e.g.
``http://pacs:8042/dicom-web/studies``). Failures raise :class:`SendError` with a message
that names the destination and the DICOM or HTTP status, never the instance's content.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from pydicom.dataset import Dataset

from app.core.dicom.sop import TRANSFER_SYNTAXES
from app.core.dicom.store import encode
from models.errors import ServiceUnavailableError


class SendError(ServiceUnavailableError):
    code = "dicom_send_failed"


def send(destination: dict[str, Any], instances: Sequence[Dataset], calling_ae: str) -> None:
    if destination.get("kind") == "stow":
        stow(str(destination["url"]), [encode(ds) for ds in instances],
             destination.get("token"))
    else:
        c_store(str(destination["host"]), int(destination["port"]),
                str(destination["ae_title"]), instances, calling_ae)


def c_store(host: str, port: int, ae_title: str, instances: Sequence[Dataset],
            calling_ae: str, timeout: float = 30.0) -> None:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in instances}):
        ae.add_requested_context(sop_class, list(TRANSFER_SYNTAXES[:2]))
    where = f"{ae_title}@{host}:{port}"
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        raise SendError(f"C-STORE to {where}: association not accepted")
    try:
        for ds in instances:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code < 0:
                raise SendError(f"C-STORE to {where}: no answer")
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):  # success or warnings
                raise SendError(f"C-STORE to {where} answered status {code:04X}")
    finally:
        assoc.release()


def multipart_related(parts: Sequence[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), part,
                   b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), ctype


def stow(url: str, parts: Sequence[bytes], token: str | None = None,
         timeout: float = 30.0) -> None:
    body, ctype = multipart_related(parts)
    headers = {"Content-Type": ctype, "Accept": "application/dicom+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise SendError(f"STOW-RS to {url}: {type(exc).__name__}") from exc
    if response.status_code not in (200, 202):
        raise SendError(f"STOW-RS to {url} answered HTTP {response.status_code}")
