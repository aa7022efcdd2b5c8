"""Two machines that share no disk: the API and two workers, each with a data folder of its
own, and only PostgreSQL, Redis and the S3 store (a real SeaweedFS) in common."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.conftest import TinyModel
from tests.integration.test_audit_jobs import _register
from tests.support.seaweed import SeaweedS3
from tests.support.services import Broker, Service

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

PGD = "pgd:eps=8/255,steps=30"


@pytest.fixture
def cluster(tmp_path: Path, broker: Broker, postgres: str,
            seaweed: SeaweedS3) -> Iterator[tuple[Service, list[Path], str]]:
    broker.flush()
    prefix = seaweed.new_prefix()
    svc = Service(data_dir=tmp_path / "api", broker_url=broker.url, database_url=postgres,
                  extra_env=seaweed.env(prefix))
    folders = [tmp_path / "machine-1", tmp_path / "machine-2"]
    for folder in (svc.data_dir, *folders):
        folder.mkdir()
    svc.start_api()
    for i, folder in enumerate(folders):
        svc.start_worker(f"m{i + 1}", data_dir=folder)
    try:
        yield svc, folders, prefix
    finally:
        svc.stop()


def _shards(database_url: str, job_id: str) -> list[tuple[int, str, str | None]]:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT index, status, worker FROM shards WHERE job_id = :j ORDER BY index"),
                {"j": job_id}).all()
    finally:
        engine.dispose()
    return [(int(i), str(s), w) for i, s, w in rows]


def _pid(worker: str | None) -> int:
    return int(str(worker).rsplit(":", 1)[1])


def test_sharded_audit_and_defense_across_two_machines(
    cluster: tuple[Service, list[Path], str], seaweed: SeaweedS3, tiny_derm: TinyModel
) -> None:
    svc, folders, prefix = cluster
    assert svc.database_url is not None
    key = svc.create_tenant()
    with svc.client(key) as c:
        ready = c.get("/health/ready").json()
    assert ready["checks"]["storage"] == "ok"
    model_id, dataset_id = _register(svc, key, tiny_derm)
    body = {"model_id": model_id, "dataset_id": dataset_id, "seed": 3,
            "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 30}}],
            "analyses": ["quantitative"],
            "options": {"batch_size": 8, "shard_size": 16, "min_eps": False}}
    with svc.client(key) as c:
        r = c.post("/v1/audits", json=body)
        assert r.status_code == 202, r.text
        audit_id = r.json()["id"]

    # Kill machine 1 while it runs a shard, after it has finished at least one.
    victim, survivor = svc.workers
    deadline, held = time.monotonic() + 300, None
    while time.monotonic() < deadline and held is None:
        shards = _shards(svc.database_url, audit_id)
        done_by_victim = [i for i, s, w in shards if s == "done" and _pid(w) == victim.pid]
        running = [i for i, s, w in shards if s == "running" and _pid(w) == victim.pid]
        if done_by_victim and running:
            held = running[0]
        time.sleep(0.2)
    assert held is not None, f"machine 1 never held a second shard: {shards}"
    svc.kill_worker(victim)

    done = svc.wait_job(key, audit_id, timeout=400)
    assert done["status"] == "succeeded", done
    shards = _shards(svc.database_url, audit_id)
    assert [s for _, s, _ in shards] == ["done"] * 6
    by = {i: _pid(w) for i, _, w in shards}
    assert by[held] == survivor.pid  # the killed machine's shard finished elsewhere
    assert {victim.pid, survivor.pid} <= set(by.values())

    with svc.client(key) as c:
        report = c.get(f"/v1/audits/{audit_id}/report").json()
        artifacts = {a["name"]: a["size_bytes"]
                     for a in c.get(f"/v1/audits/{audit_id}/artifacts").json()["items"]}
        zipped = c.get(f"/v1/audits/{audit_id}/artifacts/adversarial.zip").content
    assert report["provenance"]["shards"] == 6
    assert report["provenance"]["dataset"]["images_audited"] == 96
    assert 0.0 <= report["attacks"][PGD]["adversarial"]["accuracy"] <= 1.0
    assert artifacts["adversarial.zip"] == len(zipped)
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
    assert len(pngs) == 96  # every shard's images, whichever machine made them

    # A defense job on the same two-machine deployment; its hardened model, registered
    # by a worker, downloads through the API from the bucket.
    defense = {"model_id": model_id, "train_dataset_id": dataset_id,
               "eval_dataset_id": dataset_id, "method": "pgd_at", "seed": 1,
               "params": {"epochs": 2, "lr": 0.003, "optimizer": "adam", "eps": 8 / 255,
                          "steps": 2, "batch_size": 32,
                          "eval_attacks": [{"name": "fgsm", "params": {"eps": "8/255"}}]}}
    with svc.client(key) as c:
        r = c.post("/v1/defenses", json=defense)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    done = svc.wait_job(key, job_id, timeout=600)
    assert done["status"] == "succeeded", done
    new_id = done["result"]["hardened_model_id"]
    with svc.client(key) as c:
        report = c.get(f"/v1/defenses/{job_id}/report").json()
        weights = c.get(f"/v1/models/{new_id}/download", params={"format": "original"})
    assert report["hardened_model_id"] == new_id
    assert weights.status_code == 200
    from safetensors.torch import load

    assert set(load(weights.content)) == set(json.loads(json.dumps(
        {k: 0 for k in tiny_derm.model.net.state_dict()})))

    # Nothing travelled through a shared disk: the API's folder never held a shard, and
    # each job's files are in the bucket.
    assert not list((svc.data_dir / "jobs" / audit_id).glob("shards/*"))
    for folder in folders:  # each machine fetched the model into its own cache
        assert (folder / "models" / model_id / "model.safetensors").read_bytes() == \
            tiny_derm.weights.read_bytes()
    keys = {o["Key"][len(prefix):] for page in seaweed.client().get_paginator(
        "list_objects_v2").paginate(Bucket=seaweed.bucket, Prefix=prefix)
        for o in page.get("Contents", [])}
    assert f"jobs/{audit_id}/report.json" in keys
    assert f"jobs/{job_id}/report.json" in keys
    assert {f"jobs/{audit_id}/shards/{i:05d}.npz" for i in range(6)} <= keys
    # The dataset was decoded once, by the API's import, and the machines took the tensors
    # from the bucket: the same bytes on both.
    from models.card import ModelCard
    from models.datasets.tensor_cache import cache_dir

    cached = cache_dir(Path("datasets") / dataset_id, ModelCard.model_validate(tiny_derm.card))
    assert f"{cached.as_posix()}/images.npy" in keys
    tensors = {(folder / cached / "images.npy").read_bytes() for folder in (svc.data_dir, *folders)}
    assert len(tensors) == 1


def test_a_killed_defense_resumes_on_a_new_machine_from_the_bucket(
    cluster: tuple[Service, list[Path], str], seaweed: SeaweedS3, tiny_derm: TinyModel,
    tmp_path: Path
) -> None:
    svc, _, prefix = cluster
    key = svc.create_tenant()
    model_id, dataset_id = _register(svc, key, tiny_derm)
    defense = {"model_id": model_id, "train_dataset_id": dataset_id,
               "eval_dataset_id": dataset_id, "method": "pgd_at", "seed": 2,
               "params": {"epochs": 8, "lr": 0.003, "optimizer": "adam", "eps": 8 / 255,
                          "steps": 3, "batch_size": 16,
                          "eval_attacks": [{"name": "fgsm", "params": {"eps": "8/255"}}]}}
    with svc.client(key) as c:
        r = c.post("/v1/defenses", json=defense)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    marker = f"{prefix}jobs/{job_id}/checkpoints/state.json"
    client = seaweed.client()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        listed = client.list_objects_v2(Bucket=seaweed.bucket, Prefix=marker)
        if listed.get("KeyCount", 0):
            break
        time.sleep(0.3)
    else:
        pytest.fail("no checkpoint reached the bucket")
    for worker in list(svc.workers):  # both machines are lost
        svc.kill_worker(worker)
    fresh = tmp_path / "machine-3"
    fresh.mkdir()
    svc.start_worker("m3", data_dir=fresh)  # a new machine with an empty disk
    done = svc.wait_job(key, job_id, timeout=600)
    assert done["status"] == "succeeded", done
    assert done["result"]["resumed_from_epoch"] >= 1
    assert (fresh / "jobs" / job_id / "checkpoints" / "state.json").exists()
