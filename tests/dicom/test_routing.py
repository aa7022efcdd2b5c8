"""Routing rules: which received instances make which route jobs (one per study and
rule), each handed to the broker; results are never routed. (Handing over is recorded
here instead of publishing; a broker that refuses leaves the jobs queued for the
dispatcher, as for every job kind.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.db import Database, JobRow, ModelRow, Tenant
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.db.tables import DicomRuleRow
from app.core.dicom import routing
from app.core.dicom.routing import Received, schedule
from app.core.dicom.sop import COMPREHENSIVE_SR
from app.core.dicom.store import Stored
from tests.dicom.support import CT, MR

DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []

    def dispatch(db: Database, broker_url: str, job_id: str) -> bool:
        sent.append(job_id)
        return False  # the broker is down: the job stays queued

    monkeypatch.setattr(routing, "dispatch", dispatch)
    return sent


def _db(tmp_path: Path) -> tuple[Database, str, str]:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade_schema(db)
    with db.session() as s:
        tenant = Tenant(name="t")
        s.add(tenant)
        s.flush()
        model = ModelRow(tenant_id=tenant.id, name="m", format="torchscript", sha256="0" * 64,
                         size_bytes=1, card={}, info={})
        s.add(model)
        s.flush()
        return db, tenant.id, model.id


def _stored(study: str, sop: str, modality: str, sop_class: str = CT) -> Stored:
    return Stored(sop_class, sop, study, study + ".1", modality, duplicate=False)


def test_rules_match_by_modality_and_calling_ae(tmp_path: Path, handed: list[str]) -> None:
    db, tenant, model = _db(tmp_path)
    with db.session() as s:
        s.add(DicomRuleRow(tenant_id=tenant, modality="CT", model_id=model))
        s.add(DicomRuleRow(tenant_id=tenant, calling_ae="ER_CT", model_id=model,
                           destination={"kind": "dimse", "ae_title": "PACS",
                                        "host": "10.0.0.1", "port": 104}))
    received = [
        Received(_stored("1.1", "1.1.1", "CT"), "ER_CT"),
        Received(_stored("1.1", "1.1.2", "CT"), "ER_CT"),
        Received(_stored("1.2", "1.2.1", "MR", MR), "ER_CT"),
        Received(_stored("1.3", "1.3.1", "CT"), None),
        Received(_stored("1.1", "1.1.9", "SR", COMPREHENSIVE_SR), "ER_CT"),
    ]
    ids = schedule(db, DOWN, tenant, received)
    assert handed == ids
    with db.session() as s:
        jobs = [s.get(JobRow, i) for i in ids]
        summary = sorted((j.request["study_uid"], tuple(j.request["sop_uids"]),
                          j.request["destination"] is not None) for j in jobs if j)
        assert all(j is not None and j.kind == "route" and j.status == "queued"
                   and j.enqueued_at is None for j in jobs)
    assert summary == [
        ("1.1", ("1.1.1", "1.1.2"), False),  # modality CT
        ("1.1", ("1.1.1", "1.1.2"), True),  # calling AE ER_CT
        ("1.2", ("1.2.1",), True),  # ER_CT sent an MR too
        ("1.3", ("1.3.1",), False),  # CT from STOW-RS
    ]


def test_nothing_to_route(tmp_path: Path, handed: list[str]) -> None:
    db, tenant, model = _db(tmp_path)
    with db.session() as s:
        s.add(DicomRuleRow(tenant_id=tenant, modality="MR", model_id=model))
    assert schedule(db, DOWN, tenant, [Received(_stored("1", "1.1", "CT"), None)]) == []
    assert handed == []
    with db.session() as s:
        assert s.scalars(select(JobRow)).all() == []
