"""The model self-check job: load the model on a worker and record what it does."""

from __future__ import annotations

import logging
import time

import torch

from workers.celery_app import app
from workers.jobs import JobContext
from workers.runtime import model_row, runtime

logger = logging.getLogger(__name__)


@app.task(name="robustdx.check_model")
def check_model(job_id: str) -> None:
    rt = runtime()
    ctx = JobContext(rt.db, job_id, rt.settings.heartbeat_seconds)
    if ctx.is_final():
        return
    with ctx:
        ctx.start("loading")
        job = ctx.load()
        row = model_row(rt, job.request["model_id"])
        from app.core.registry import load_registered_model

        t0 = time.perf_counter()
        model = load_registered_model(rt.storage, row, rt.device)
        load_ms = (time.perf_counter() - t0) * 1000
        ctx.progress(0.5, "forward")
        c, h, w = model.input_shape
        x = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0)).to(rt.device)
        with torch.inference_mode():
            model(x)  # warm-up
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(x)
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            forward_ms = (time.perf_counter() - t0) * 1000
        finite = bool(torch.isfinite(out).all())
        ctx.succeed({
            "model_id": row.id,
            "output_shape": list(out.shape),
            "head": model.head.value,
            "finite": finite,
            "device": str(rt.device),
            "load_ms": round(load_ms, 2),
            "forward_ms_batch2": round(forward_ms, 3),
            "torch": torch.__version__,
        })
