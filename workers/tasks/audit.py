"""Audit jobs: plan (validate, fit GAP/UAP once, create shards), shards (any worker, any
order, idempotent), finalize (when the database counts the last shard; then the report).

A chord on Redis would also finalize, but misbehaves when a member fails (Celery #5229)
and ``chord_unlock`` can retry forever (#2725); the database counter cannot.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select, update

from app.core.comparison import PER_IMAGE_FILE
from app.core.db import JobRow, ModelRow, ShardRow
from app.core.queue import send_task
from app.core.storage import write_atomic
from models.card import ModelCard
from models.errors import JobCancelledError
from models.wrapper import DiagnosticModel
from workers.attacks.functional import to_uint8
from workers.audit.engine import AuditEngine, expand_attacks, resolve_analyses
from workers.celery_app import app
from workers.jobs import JobContext, ShardLease, insert_shards
from workers.runtime import Runtime, loaded_model, model_row, runtime, stored_dataset

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

    req = job.request
    row = model_row(rt, req["model_id"])
    model: DiagnosticModel = loaded_model(rt, row)  # kept loaded between jobs
    # Remote models (an inference endpoint): score-based work only, within the audit's
    # query budget and rate; a no-op for local models.
    from app.core.remote import prepare_remote_audit

    prepare_remote_audit(model, req)
    dataset = stored_dataset(rt, req["dataset_id"], model.card)
    options = req.get("options") or {}
    settings = expand_attacks(req["attacks"])
    analyses, skipped = resolve_analyses(req.get("analyses"), model, attacks=bool(settings))
    engine = AuditEngine(
        model=model, settings=settings, analyses=analyses, seed=int(req.get("seed", 0)),
        batch_size=int(options.get("batch_size", 32)), min_eps=bool(options.get("min_eps", False)),
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


def _save_timings(rt: Runtime, job_id: str, name: str, timings: dict[str, float],
                  started: float) -> None:
    """A stage's durations, and when it ran (epoch seconds) on which worker process."""
    import json

    record = {"durations": timings, "start": started, "end": time.time(),
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    rt.storage.write(_timings_path(rt, job_id, name), json.dumps(record).encode())


def _job_context(rt: Runtime, job_id: str) -> JobContext:
    return JobContext(rt.db, job_id, rt.settings.heartbeat_seconds,
                      time_limit_seconds=rt.settings.job_time_limit_seconds)


@dataclass
class _DatasetSource:
    """The first ``count`` images of a stored dataset, decoded batch by batch (GAP and UAP
    fit on it without the whole dataset in memory)."""

    dataset: Any
    card: ModelCard
    count: int

    def __len__(self) -> int:
        return self.count

    def take(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, None]:
        images, labels, _ = self.dataset.tensors(self.card, index)
        return images, labels, None


def _shard_size(rt: Runtime, job: JobRow, loaded: _Loaded) -> int:
    """The request's or the setting's shard size, else one sized from the audit's cost."""
    fixed = (job.request.get("options") or {}).get("shard_size") or rt.settings.shard_size
    if fixed:
        return int(fixed)
    from workers.audit.sizing import passes_per_image, seconds_per_pass, shard_size

    engine = loaded.engine
    attacks = [(s.name, engine.attack(s).params) for s in engine.settings]
    min_eps = None
    if engine.min_eps:
        from app.core.catalogue.attacks import MinEpsParams

        min_eps = MinEpsParams()
    passes = passes_per_image(attacks, [a.name for a, _ in engine.analyses], min_eps)
    per_pass = seconds_per_pass(engine.model, engine.batch_size)
    return shard_size(loaded.count, engine.batch_size, passes, per_pass,
                      rt.settings.shard_target_seconds)


@app.task(name="robustdx.audit.plan")
def plan(job_id: str) -> None:
    """Validate, fit GAP/UAP once, create the shards (idempotently) and send them.

    Safe to deliver twice, also concurrently: fitted state is keyed by its content, shard
    rows are inserted with ON CONFLICT DO NOTHING, and a shard sent twice runs once."""
    rt = runtime()
    ctx = _job_context(rt, job_id)
    if ctx.is_final():
        return
    with ctx:
        ctx.start("planning")
        ctx.check_cancelled()
        job = ctx.load()
        started, wall_start = time.perf_counter(), time.time()
        loaded = _load(rt, job)
        engine, count = loaded.engine, loaded.count
        timings = {"planning": 0.0, "plan:load": time.perf_counter() - started}
        timings["plan:decode_cache"] = _decode_once(rt, loaded)
        if engine.fitted_settings():
            ctx.progress(0.02, "fitting")
            source = _DatasetSource(loaded.dataset, engine.model.card, count)
            fit_times = engine.fit(source, _state_dir(rt, job_id), ctx.should_stop)
            rt.storage.publish(_state_dir(rt, job_id))
            timings.update({f"fit:{k}": v for k, v in fit_times.items()})
        # Another delivery may have planned already: its shard size wins.
        total = insert_shards(rt.db, job_id, count, _shard_size(rt, job, loaded))
        with rt.db.session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(
                shards_total=total, stage="attacking", progress=0.05))
            pending = session.scalars(select(ShardRow.index).where(
                ShardRow.job_id == job_id, ShardRow.status.in_(("pending", "running")))).all()
        ctx.check_cancelled()
        timings["planning"] = time.perf_counter() - started
        _save_timings(rt, job_id, "plan", timings, wall_start)
        for index in sorted(pending):
            send_task(rt.settings.resolved_broker_url, "robustdx.audit.shard", [job_id, index])
        if not pending:
            _start_finalize(rt, job_id)


def _decode_once(rt: Runtime, loaded: _Loaded) -> float:
    """Make the dataset's tensor cache for the model's input when the import did not (an
    audit of a model registered after the dataset), so that no shard decodes; returns the
    seconds it took (0 when there was one)."""
    from models.datasets.tensor_cache import CACHE_DIR, MAX_INPUTS_PER_DATASET, build_cache

    card = loaded.engine.model.card
    if rt.settings.dataset_cache_max_bytes == 0 or loaded.dataset.cache(card) is not None:
        return 0.0
    cached = {name.split("/")[0] for name, _ in
              rt.storage.list_files(loaded.dataset.root / CACHE_DIR)}
    if len(cached) >= MAX_INPUTS_PER_DATASET:
        return 0.0
    started = time.perf_counter()
    folder = build_cache(loaded.dataset, card, rt.settings.dataset_cache_max_bytes)
    if folder is not None:
        rt.storage.publish(folder)
    return time.perf_counter() - started


@app.task(name="robustdx.audit.shard")
def shard(job_id: str, index: int) -> None:
    """Run one shard. A cancel stops it inside the running attack (the stop callback is
    polled every iteration, reading the database at most once a second) and marks the
    shard ``cancelled``, so it is never sent or resumed again."""
    wall_start = time.time()
    rt = runtime()
    ctx = _job_context(rt, job_id)
    job = ctx.load()
    if job.status in ("succeeded", "failed", "cancelled"):
        return
    lease = ShardLease(rt.db, job_id, index, rt.settings.heartbeat_seconds)
    row = lease.shard()
    if row is None or row.status in ("done", "cancelled"):
        return  # a redelivered duplicate, or a shard stopped by a cancel
    with ctx:
        try:
            arrays, timings = _run_shard(rt, ctx, job, lease, row)
        except JobCancelledError:
            lease.cancel()
            raise
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        rt.storage.write(_shard_path(rt, job_id, index), buf.getvalue())
        _save_timings(rt, job_id, f"shard-{index:05d}", timings, wall_start)
        if lease.complete():
            _start_finalize(rt, job_id)


def _run_shard(rt: Runtime, ctx: JobContext, job: JobRow, lease: ShardLease,
               row: ShardRow) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    ctx.check_cancelled()
    loaded = _load(rt, job)
    engine = loaded.engine
    engine.load_fitted(rt.storage.pull(_state_dir(rt, job.id)))
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
    writer = _AdversarialWriter(rt, job.id, loaded.dataset, engine.model.card) if save else None
    timings: dict[str, float] = {}
    with lease.hold(), writer or contextlib.nullcontext():
        t0 = time.perf_counter()
        indices = np.arange(start, stop)
        images, labels, masks = loaded.dataset.tensors(engine.model.card, indices)
        timings["load_inputs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        arrays = engine.run(images, labels, indices, masks, on_batch=on_batch,
                            on_adversarial=writer, timings=timings,
                            should_stop=ctx.should_stop)
        timings["shard_total"] = time.perf_counter() - t0
        from app.core.remote import remote_usage

        timings.update(remote_usage(engine.model))  # queries sent to a remote model
        if writer is not None:  # before the shard counts, so finalize finds them
            t0 = time.perf_counter()
            timings["artifacts"] = writer.finish()
            rt.storage.publish(writer.root)
            timings["artifacts_wait"] = time.perf_counter() - t0
    return arrays, timings


def _start_finalize(rt: Runtime, job_id: str) -> None:
    with rt.db.session() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(
            stage="finalizing", heartbeat_at=datetime.now(UTC)))
    send_task(rt.settings.resolved_broker_url, "robustdx.audit.finalize", [job_id])


class _AdversarialWriter:
    """Writes each adversarial image as an 8-bit PNG and, for images that came as DICOM,
    a DICOM file keeping the original header with new SOP Instance and Series UIDs.

    Off the attack's path: a call copies the batch to host memory and hands the encoding
    and writing to one background thread, so the next attack runs meanwhile. At most
    :data:`PENDING` batches wait (the attack then waits, bounding the memory held);
    :meth:`finish` waits for the last and raises the first error the thread met. Used as a
    context manager, leaving it (also by an error) stops the thread."""

    PENDING = 4

    def __init__(self, rt: Runtime, job_id: str, dataset: Any, card: ModelCard) -> None:
        self.root = rt.storage.artifacts_dir(job_id) / "adversarial"
        self.dataset = dataset
        self.card = card
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adversarial")
        self._pending: list[Future[float]] = []
        self._spent = 0.0

    def __enter__(self) -> _AdversarialWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def __call__(self, key: str, indices: np.ndarray, images: torch.Tensor) -> None:
        pixels = images.detach().float().clamp(0, 1).cpu().numpy()
        while len(self._pending) >= self.PENDING:
            self._spent += self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write, key, indices.copy(), pixels))

    def finish(self) -> float:
        """Wait for every batch handed over; the seconds the thread spent writing."""
        while self._pending:
            self._spent += self._pending.pop(0).result()
        return self._spent

    def _write(self, key: str, indices: np.ndarray, pixels: np.ndarray) -> float:
        from workers.reports.images import to_png

        started = time.perf_counter()
        folder = self.root / key.replace("/", "_")
        for i, index in enumerate(indices):
            write_atomic(folder / f"{int(index):06d}.png", to_png(pixels[i]), fsync=False)
            dicom = self._dicom(int(index), pixels[i], key)
            if dicom is not None:
                write_atomic(folder / f"{int(index):06d}.dcm", dicom, fsync=False)
        return time.perf_counter() - started

    def _dicom(self, index: int, pixels: np.ndarray, key: str) -> bytes | None:
        from models.imaging import write_dicom_like

        decoded = self.dataset.decode(index)
        if decoded.dicom is None:
            return None
        hwc = np.transpose(to_uint8(torch.from_numpy(pixels)), (1, 2, 0))
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
    ctx = _job_context(rt, job_id)
    if ctx.is_final():
        return
    with ctx:
        ctx.start("finalizing")
        ctx.check_cancelled()
        job = ctx.load()
        started, wall_started = time.perf_counter(), time.time()
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
        from workers.audit.outcomes import write_outcomes

        write_outcomes(rt.storage.job_dir(job_id), arrays, engine.model.card,
                       [s.key for s in engine.settings])
        sections = [*engine.summarize(arrays, loaded.dataset.metadata()), *loaded.skipped]
        from workers.audit.rendering import grid_samples, write_report_files

        samples = grid_samples(arrays, engine.model.card.labels, engine.model.card.task)
        _zip_adversarial(rt, job_id)
        artifacts_root = rt.storage.artifacts_dir(job_id)
        artifacts = sorted(
            p.relative_to(artifacts_root).as_posix() for p in artifacts_root.rglob("*")
            if p.is_file() and p.parent == artifacts_root
        )
        report = _build_report(rt, job, engine, sections, loaded, started, wall_started,
                               artifacts)
        write_report_files(rt.storage.job_dir(job_id), rt.storage.artifacts_dir(job_id),
                           report, sections, samples)
        rt.storage.publish(rt.storage.job_dir(job_id))
        ctx.succeed({"summary": report.get("summary", {}),
                     "report": f"/v1/audits/{job_id}/report",
                     # What a later audit needs to name this one as its baseline.
                     "settings": [setting.key for setting in engine.settings],
                     "per_image": (rt.storage.job_dir(job_id) / PER_IMAGE_FILE).exists()})


def _zip_adversarial(rt: Runtime, job_id: str) -> None:
    """``adversarial.zip`` of every adversarial file, written to disk as it is read (never
    the whole archive in memory), then moved into place."""
    root = rt.storage.artifacts_dir(job_id) / "adversarial"
    if not root.exists():
        return
    target = rt.storage.artifacts_dir(job_id) / "adversarial.zip"
    partial = target.with_name(".adversarial.zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    os.replace(partial, target)


def _timings(rt: Runtime, job_id: str,
             origin: float) -> tuple[dict[str, float], dict[str, Any]]:
    """The stages' durations summed over shards, and the timeline: when planning and each
    shard ran and on which worker, in seconds since ``origin`` (the job's submission)."""
    import json

    totals: dict[str, float] = {}
    timeline: dict[str, Any] = {"shards": []}
    folder = rt.storage.job_dir(job_id) / "timings"
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if "durations" not in record:  # written by a worker of before the timeline
            record = {"durations": record}
        for key, value in record["durations"].items():
            totals[key] = totals.get(key, 0.0) + float(value)
        if "start" not in record:
            continue
        span = {"start": round(record["start"] - origin, 4),
                "end": round(record["end"] - origin, 4), "worker": record["worker"]}
        if path.stem == "plan":
            timeline["plan"] = span
        else:
            timeline["shards"].append({"index": int(path.stem.split("-")[1]), **span})
    return {k: round(v, 4) for k, v in totals.items()}, timeline


def _build_report(rt: Runtime, job: JobRow, engine: AuditEngine, sections: list[Any],
                  loaded: _Loaded, started: float, finalize_started: float,
                  artifacts: list[str]) -> dict[str, Any]:
    from workers.audit.provenance import device_description, package_versions
    from workers.reports.builder import build_report

    req = job.request
    with rt.db.session() as session:
        registered = session.get(ModelRow, req["model_id"])
        model_name = registered.name if registered else req["model_id"]
    submitted = _aware(job.created_at).timestamp()
    timings, timeline = _timings(rt, job.id, submitted)
    timings["finalizing"] = round(time.perf_counter() - started, 4)
    wall = (datetime.now(UTC) - _aware(job.started_at or job.created_at)).total_seconds()
    timings["wall"] = round(wall, 4)
    timeline["finalize"] = {"start": round(finalize_started - submitted, 4),
                            "report": round(time.time() - submitted, 4)}
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
        "timeline": timeline,
        "shards": job.shards_total,
    }
    job_meta = {"id": job.id, "kind": "audit", "created_at": job.created_at.isoformat(),
                "model_name": model_name}
    attacks_meta = {s.key: s.info() for s in engine.settings}
    from workers.audit.outcomes import apply_baseline, split_policy

    policy, baseline = split_policy(req.get("policy"))
    report = dict(build_report(job_meta, provenance, sections, attacks_meta, policy,
                               artifacts=artifacts))
    if baseline is not None:
        rt.storage.pull(rt.storage.job_dir(str(baseline["baseline"])) / PER_IMAGE_FILE)
        apply_baseline(report, rt.storage.job_dir(job.id),
                       rt.storage.job_dir(str(baseline["baseline"])), baseline,
                       seed=int(req.get("seed", 0)))
    return report


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
