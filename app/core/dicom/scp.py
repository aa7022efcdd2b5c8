"""The DIMSE service: C-ECHO and C-STORE SCP (pynetdicom) on ``ROBUSTDX_DICOM_PORT``.

Run as its own process (``python -m app.core.dicom.scp``; ``robustdx run`` supervises it).

- **Who may associate**: the calling AE title must be registered by a tenant
  (``POST /v1/dicom/aes``), from the registered host when one is given, and the called AE
  title must be ours (``ROBUSTDX``). Anyone else is rejected at association time
  (A-ASSOCIATE-RJ, permanent, "calling AE title not recognised" or "called AE title not
  recognised"); the association is never established.
- **What may be stored**: the presentation contexts offered are the accepted SOP classes
  only, so another class is refused at negotiation (no context); a dataset whose SOP class
  differs from its context is answered 0x0122 as well.
- Every instance goes through the same ``ingest`` as STOW-RS (checks, de-identification,
  the tenant's store). When the association ends, the tenant's routing rules are applied
  to what it stored.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from app.core.db import Database, get_database
from app.core.db.tables import DicomAeRow
from app.core.dicom.errors import PROCESSING_FAILURE, DicomRefusedError, DicomTooLargeError
from app.core.dicom.routing import Received, schedule
from app.core.dicom.sop import ACCEPTED_SOP_CLASSES, TRANSFER_SYNTAXES
from app.core.dicom.store import ingest
from app.core.settings import Settings, get_settings
from app.core.storage import Storage

logger = logging.getLogger(__name__)

_REJECT_CALLING = (0x01, 0x01, 0x03)
_REJECT_CALLED = (0x01, 0x01, 0x07)


@dataclass
class _Peer:
    tenant_id: str
    calling_ae: str
    received: list[Received] = field(default_factory=list)


def allowed_tenant(db: Database, calling_ae: str, host: str) -> str | None:
    """The tenant that registered ``calling_ae`` (from ``host`` when it named one)."""
    with db.session() as session:
        row = session.scalar(select(DicomAeRow).where(DicomAeRow.ae_title == calling_ae))
        if row is None or (row.host and row.host != host):
            return None
        return row.tenant_id


class StoreSCP:
    """Handlers bound to one pynetdicom AE; peers are kept per association."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = get_database(settings.resolved_database_url)
        self.storage = Storage(settings.data_dir)
        self.peers: dict[int, _Peer] = {}
        self.lock = threading.Lock()

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_end),
            (evt.EVT_ABORTED, self.on_end),
        ]

    def on_requested(self, event: Any) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        host = str(assoc.requestor.address)
        if called != self.settings.dicom_ae_title:
            logger.info("rejected association to AE %r from %s", called[:16], host)
            assoc.acse.send_reject(*_REJECT_CALLED)
            assoc.kill()
            return
        tenant = allowed_tenant(self.db, calling, host)
        if tenant is None:
            logger.info("rejected association from unregistered AE %r at %s", calling[:16],
                        host)
            assoc.acse.send_reject(*_REJECT_CALLING)
            assoc.kill()
            return
        with self.lock:
            self.peers[id(assoc)] = _Peer(tenant, calling)

    def _peer(self, event: Any) -> _Peer | None:
        with self.lock:
            return self.peers.get(id(event.assoc))

    def on_echo(self, event: Any) -> int:
        return 0x0000 if self._peer(event) else 0x0110

    def on_store(self, event: Any) -> int:
        peer = self._peer(event)
        if peer is None:
            return PROCESSING_FAILURE
        if str(event.request.AffectedSOPClassUID) not in ACCEPTED_SOP_CLASSES:
            return 0x0122
        try:
            data = event.encoded_dataset(include_meta=True)
            stored = ingest(self.db, self.storage, peer.tenant_id, data,
                            source=f"dimse:{peer.calling_ae}",
                            max_bytes=self.settings.max_dicom_instance_bytes)
        except (DicomRefusedError, DicomTooLargeError) as exc:
            logger.info("refused an instance from %s: %s", peer.calling_ae, exc.message)
            return int(exc.status)
        except Exception:
            logger.exception("C-STORE from %s failed", peer.calling_ae)
            return PROCESSING_FAILURE
        peer.received.append(Received(stored, peer.calling_ae))
        return 0x0000

    def on_end(self, event: Any) -> None:
        with self.lock:
            peer = self.peers.pop(id(event.assoc), None)
        if peer is None or not peer.received:
            return
        try:
            schedule(self.db, self.settings.resolved_broker_url, peer.tenant_id,
                     peer.received)
        except Exception:
            logger.exception("could not schedule routed predictions")


def make_ae(settings: Settings) -> tuple[AE, StoreSCP]:
    scp = StoreSCP(settings)
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = 32
    ae.maximum_pdu_size = 0  # no limit on what we receive per PDU
    ae.add_supported_context(Verification)
    for sop_class in sorted(ACCEPTED_SOP_CLASSES):
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    return ae, scp


def serve(settings: Settings, block: bool = True) -> Any:
    """Start the SCP; with ``block`` False, return the server (``.shutdown()`` stops it)."""
    ae, scp = make_ae(settings)
    logger.info("DICOM SCP %s listening on %s:%d", settings.dicom_ae_title,
                settings.dicom_host, settings.dicom_port)
    return ae.start_server((settings.dicom_host, settings.dicom_port), block=block,
                           evt_handlers=scp.handlers())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    settings = get_settings()
    server = serve(settings, block=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
