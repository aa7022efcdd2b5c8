"""Workers keep the most recent models loaded between jobs (not remote ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.core.db import ModelRow, Tenant, get_database
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.registry import register_model_file
from app.core.settings import Settings
from app.core.storage import Storage
from models.card import ModelCard
from tests.models.model_files import SIZE, card_dict, tiny_net, write_torchscript
from workers import runtime as worker_runtime
from workers.runtime import KEEP_MODELS, Runtime, loaded_model


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setattr(worker_runtime, "_LOADED", type(worker_runtime._LOADED)())
    settings = Settings(data_dir=tmp_path, environment="test")
    db = get_database(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade_schema(db)
    return Runtime(settings=settings, db=db,
                   storage=Storage(tmp_path), device=torch.device("cpu"))


def _register(rt: Runtime, tmp_path: Path, seed: int) -> ModelRow:
    path = write_torchscript(tiny_net(seed=seed), tmp_path / f"m{seed}.pt")
    with rt.db.session() as session:
        if session.get(Tenant, "t") is None:
            session.add(Tenant(id="t", name="t"))
            session.flush()
        row = register_model_file(session, rt.storage, "t", path,
                                  ModelCard.model_validate(card_dict()))
        session.expunge(row)
        return row


def test_a_second_job_reuses_the_loaded_model(rt: Runtime, tmp_path: Path) -> None:
    row = _register(rt, tmp_path, 1)
    first = loaded_model(rt, row)
    assert loaded_model(rt, row) is first
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny_net(seed=1)((x - 0.5) / 0.25)
        got = first(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_only_the_most_recent_models_stay_loaded(rt: Runtime, tmp_path: Path) -> None:
    rows = [_register(rt, tmp_path, seed) for seed in range(KEEP_MODELS + 1)]
    first = loaded_model(rt, rows[0])
    for row in rows[1:]:
        loaded_model(rt, row)
    assert len(worker_runtime._LOADED) == KEEP_MODELS
    assert loaded_model(rt, rows[0]) is not first  # evicted, loaded again


def test_remote_models_are_made_afresh_for_every_job(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_load(storage: Any, row: ModelRow, device: Any) -> object:
        calls.append(row.id)
        return object()

    monkeypatch.setattr("app.core.registry.load_registered_model", fake_load)
    row = ModelRow(id="r1", format="remote", sha256="s")
    assert loaded_model(rt, row) is not loaded_model(rt, row)
    assert calls == ["r1", "r1"]
