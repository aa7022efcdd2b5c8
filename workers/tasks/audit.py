"""Audit jobs: plan (validate, fit GAP/UAP once, create shards), shards (any worker, any
order, idempotent), finalize (when the database counts the last shard; then the report).

A chord on Redis would also finalize, but misbehaves when a member fails (Celery #5229)
and ``chord_unlock`` can retry forever (#2725); the database counter cannot.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select, update

from app.core.db import JobRow, ModelRow, ShardRow
from app.core.queue import send_task
from app.core.storage import write_atomic
from models.card import ModelCard
from models.wrapper import DiagnosticModel
from workers.audit.engine import AuditEngine, expand_attacks, resolve_analyses
from workers.celery_app import app
from workers.jobs import JobContext, ShardLease
from workers.runtime import Runtime, loaded_model, model_row, runtime

logger = logging.getLogger(__name__)


@dataclass
class _Loaded:
    engine: AuditEngine
    dataset: Any
    skipped: list[Any]
    count: int


_CACHE: dict[str, _Loaded] = {}


def _load(rt: Runtime, job: JobRow) -> _Loaded:
    """Model, dataset and engine of a job, cached per worker process (one job at a time)."""
    if job.id in _CACHE:
        return _CACHE[job.id]
    from models.datasets import check_labels, load_dataset

    req = job.request
    row = model_row(rt, req["model_id"])
    model: DiagnosticModel = loaded_model(rt, row)  # kept loaded between jobs
    # Remote models (an inference endpoint): score-based work only, within the audit's
    # query budget and rate; a no-op for local models.
    from app.core.remote import prepare_remote_audit

    prepare_remote_audit(model, req)
    dataset = load_dataset(rt.storage.dataset_dir(req["dataset_id"]))
    check_labels(dataset.manifest.info, ModelCard.model_validate(row.card))
    options = req.get("options") or {}
    settings = expand_attacks(req["attacks"])
    analyses, skipped = resolve_analyses(req.get("analyses"), model)
    engine = AuditEngine(
        model=model, settings=settings, analyses=analyses, seed=int(req.get("seed", 0)),
        batch_size=int(options.get("batch_size", 32)), min_eps=bool(options.get("min_eps", True)),
        grid_samples=int(options.get("samples", 8)),
    )
    count = len(dataset)
    if options.get("max_images"):
        count = min(count, int(options["max_images"]))
    _CACHE.clear()
    _CACHE[job.id] = _Loaded(engine, dataset, skipped, count)
    return _CACHE[job.id]


def _state_dir(rt: Runtime, job_id: str) -> Path:
    return rt.storage.job_dir(job_id) / "state"


def _shard_path(rt: Runtime, job_id: str, index: int) -> Path:
    return rt.storage.job_dir(job_id) / "shards" / f"{index:05d}.npz"


def _timings_path(rt: Runtime, job_id: str, name: str) -> Path:
    return rt.storage.job_dir(job_id) / "timings" / f"{name}.json"


def _save_timings(rt: Runtime, job_id: str, name: str, timings: dict[str, float]) -> None:
    import json

    rt.storage.write(_timings_path(rt, job_id, name), json.dumps(timings).encode())


@app.task(name="robustdx.audit.plan")
def plan(job_id: str) -> None:
    rt = runtime()
    ctx = JobContext(rt.db, job_id, rt.settings.heartbeat_seconds)
    if ctx.is_final():
        return
    with ctx:
        ctx.start("planning")
        ctx.check_cancelled()
        job = ctx.load()
        started = time.perf_counter()
        loaded = _load(rt, job)
        engine, count = loaded.engine, loaded.count
        timings = {"planning": 0.0}
        if engine.fitted_settings():
            ctx.progress(0.02, "fitting")
            images, labels, _ = loaded.dataset.tensors(engine.model.card, np.arange(count))
            fit_times = engine.fit(images, labels, _state_dir(rt, job_id), ctx.should_stop)
            rt.storage.publish(_state_dir(rt, job_id))
            timings.update({f"fit:{k}": v for k, v in fit_times.items()})
        shard_size = int((job.request.get("options") or {}).get("shard_size")
                         or rt.settings.shard_size)
        bounds = [(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]
        with rt.db.session() as session:
            existing = set(session.scalars(select(ShardRow.index).where(ShardRow.job_id == job_id)))
            for i, (start, stop) in enumerate(bounds):
                if i not in existing:
                    session.add(ShardRow(job_id=job_id, index=i,
                                         spec={"start": start, "stop": stop}))
            session.execute(update(JobRow).where(JobRow.id == job_id).values(
                shards_total=len(bounds), stage="attacking", progress=0.05))
            pending = session.scalars(select(ShardRow.index).where(
                ShardRow.job_id == job_id, ShardRow.status != "done")).all()
        timings["planning"] = time.perf_counter() - started
        _save_timings(rt, job_id, "plan", timings)
        for index in sorted(pending):
            send_task(rt.settings.resolved_broker_url, "robustdx.audit.shard", [job_id, index])
        if not pending:
            _start_finalize(rt, job_id)


@app.task(name="robustdx.audit.shard")
def shard(job_id: str, index: int) -> None:
    rt = runtime()
    ctx = JobContext(rt.db, job_id, rt.settings.heartbeat_seconds)
    job = ctx.load()
    if job.status in ("succeeded", "failed", "cancelled"):
        return
    lease = ShardLease(rt.db, job_id, index, rt.settings.heartbeat_seconds)
    row = lease.shard()
    if row is None or row.status == "done":
        return  # a redelivered duplicate: the first run already counted it
    with ctx:
        ctx.check_cancelled()
        loaded = _load(rt, job)
        engine = loaded.engine
        engine.load_fitted(rt.storage.pull(_state_dir(rt, job_id)))
        start, stop = int(row.spec["start"]), int(row.spec["stop"])
        total = max(job.shards_total, 1)
        done_before = job.shards_done
        last_write = [0.0]

        def on_batch(fraction: float) -> None:
            ctx.check_cancelled()
            now = time.monotonic()
            if now - last_write[0] >= 1.0:
                last_write[0] = now
                ctx.progress(0.05 + 0.9 * (done_before + fraction) / total)

        save = bool((job.request.get("options") or {}).get("save_adversarial", True))
        writer = (_AdversarialWriter(rt, job_id, loaded.dataset, engine.model.card)
                  if save else None)
        with lease.hold():
            indices = np.arange(start, stop)
            images, labels, masks = loaded.dataset.tensors(engine.model.card, indices)
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            arrays = engine.run(images, labels, indices, masks, on_batch=on_batch,
                                on_adversarial=writer, timings=timings)
            timings["shard_total"] = time.perf_counter() - t0
            from app.core.remote import remote_usage

            timings.update(remote_usage(engine.model))  # queries sent to a remote model
            if writer is not None:  # before the shard counts, so finalize finds them
                rt.storage.publish(writer.root)
            buf = io.BytesIO()
            np.savez(buf, **arrays)  # type: ignore[arg-type]
            rt.storage.write(_shard_path(rt, job_id, index), buf.getvalue())
            _save_timings(rt, job_id, f"shard-{index:05d}", timings)
        if lease.complete():
            _start_finalize(rt, job_id)


def _start_finalize(rt: Runtime, job_id: str) -> None:
    with rt.db.session() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(
            stage="finalizing", heartbeat_at=datetime.now(UTC)))
    send_task(rt.settings.resolved_broker_url, "robustdx.audit.finalize", [job_id])


class _AdversarialWriter:
    """Writes each adversarial image as an 8-bit PNG and, for images that came as DICOM,
    a DICOM file keeping the original header with new SOP Instance and Series UIDs."""

    def __init__(self, rt: Runtime, job_id: str, dataset: Any, card: ModelCard) -> None:
        self.root = rt.storage.artifacts_dir(job_id) / "adversarial"
        self.dataset = dataset
        self.card = card

    def __call__(self, key: str, indices: np.ndarray, images: torch.Tensor) -> None:
        from workers.reports.images import to_png

        folder = self.root / key.replace("/", "_")
        pixels = images.detach().float().clamp(0, 1).cpu().numpy()
        for i, index in enumerate(indices):
            write_atomic(folder / f"{int(index):06d}.png", to_png(pixels[i]), fsync=False)
            dicom = self._dicom(int(index), pixels[i], key)
            if dicom is not None:
                write_atomic(folder / f"{int(index):06d}.dcm", dicom, fsync=False)

    def _dicom(self, index: int, pixels: np.ndarray, key: str) -> bytes | None:
        from models.imaging import write_dicom_like

        decoded = self.dataset.decode(index)
        if decoded.dicom is None:
            return None
        hwc = np.round(np.transpose(pixels, (1, 2, 0)) * 255).astype(np.uint8)
        window = decoded.dicom.window
        return write_dicom_like(
            decoded.dicom.header, hwc, window=self.card.preprocessing.dicom_window,
            display_range=(window.low, window.high) if window is not None else None,
            series_description=f"RobustDx adversarial {key}"[:64],
            derivation=f"adversarial example ({key}) generated by RobustDx",
        )


@app.task(name="robustdx.audit.finalize")
def finalize(job_id: str) -> None:
    rt = runtime()
    ctx = JobContext(rt.db, job_id, rt.settings.heartbeat_seconds)
    if ctx.is_final():
        return
    with ctx:
        ctx.start("finalizing")
        job = ctx.load()
        started = time.perf_counter()
        loaded = _load(rt, job)
        engine = loaded.engine
        for folder in ("shards", "timings", "artifacts"):
            rt.storage.pull(rt.storage.job_dir(job_id) / folder)
        parts = []
        for i in range(job.shards_total):
            with np.load(_shard_path(rt, job_id, i)) as data:
                parts.append({k: data[k] for k in data.files})
        from workers.analyses.base import merge_arrays

        arrays = merge_arrays(parts)
        sections = [*engine.summarize(arrays), *loaded.skipped]
        from workers.audit.rendering import grid_samples, write_report_files

        samples = grid_samples(arrays, engine.model.card.labels, engine.model.card.task)
        _zip_adversarial(rt, job_id)
        artifacts_root = rt.storage.artifacts_dir(job_id)
        artifacts = sorted(
            p.relative_to(artifacts_root).as_posix() for p in artifacts_root.rglob("*")
            if p.is_file() and p.parent == artifacts_root
        )
        report = _build_report(rt, job, engine, sections, loaded, started, artifacts)
        write_report_files(rt.storage.job_dir(job_id), rt.storage.artifacts_dir(job_id),
                           report, sections, samples)
        rt.storage.publish(rt.storage.job_dir(job_id))
        ctx.succeed({"summary": report.get("summary", {}),
                     "report": f"/v1/audits/{job_id}/report"})


def _zip_adversarial(rt: Runtime, job_id: str) -> None:
    root = rt.storage.artifacts_dir(job_id) / "adversarial"
    if not root.exists():
        return
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    write_atomic(rt.storage.artifacts_dir(job_id) / "adversarial.zip", buf.getvalue())


def _timings(rt: Runtime, job_id: str) -> dict[str, float]:
    import json

    totals: dict[str, float] = {}
    folder = rt.storage.job_dir(job_id) / "timings"
    for path in sorted(folder.glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return {k: round(v, 4) for k, v in totals.items()}


def _build_report(rt: Runtime, job: JobRow, engine: AuditEngine, sections: list[Any],
                  loaded: _Loaded, started: float, artifacts: list[str]) -> dict[str, Any]:
    from workers.audit.provenance import device_description, package_versions
    from workers.reports.builder import build_report

    req = job.request
    with rt.db.session() as session:
        registered = session.get(ModelRow, req["model_id"])
        model_name = registered.name if registered else req["model_id"]
    timings = _timings(rt, job.id)
    timings["finalizing"] = round(time.perf_counter() - started, 4)
    wall = (datetime.now(UTC) - _aware(job.started_at or job.created_at)).total_seconds()
    timings["wall"] = round(wall, 4)
    provenance = {
        "model": {"id": req["model_id"], "name": model_name, "sha256": req.get("model_sha256"),
                  "card": engine.model.card.model_dump(mode="json")},
        "dataset": {"id": req["dataset_id"], "sha256": req.get("dataset_sha256"),
                    "images_audited": loaded.count},
        "parameters": {"attacks": req["attacks"], "analyses": req.get("analyses"),
                       "options": req.get("options"), "policy": req.get("policy")},
        "seed": int(req.get("seed", 0)),
        "packages": package_versions(),
        "device": device_description(engine.model.device),
        "timings": timings,
        "shards": job.shards_total,
    }
    job_meta = {"id": job.id, "kind": "audit", "created_at": job.created_at.isoformat(),
                "model_name": model_name}
    attacks_meta = {s.key: s.info() for s in engine.settings}
    return dict(build_report(job_meta, provenance, sections, attacks_meta, req.get("policy"),
                             artifacts=artifacts))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
