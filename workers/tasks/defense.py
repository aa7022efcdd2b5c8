"""Defense jobs: adversarial training on a worker, checkpointed every epoch (a killed
worker's job resumes from the last epoch), then a before/after report and the hardened
model registered as a new model with its lineage."""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from app.core.storage import write_atomic
from models.card import ModelCard
from models.wrapper import DiagnosticModel
from workers.celery_app import app
from workers.jobs import JobContext
from workers.runtime import Runtime, model_row, runtime, stored_dataset

logger = logging.getLogger(__name__)


def _dataset(rt: Runtime, dataset_id: str, card: ModelCard) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    stored = stored_dataset(rt, dataset_id, card)
    images, labels, _ = stored.tensors(card, np.arange(len(stored)))
    return images, labels


def save_hardened(model: DiagnosticModel, folder: Path) -> tuple[Path, ModelCard]:
    """Safetensors for allow-listed architectures, TorchScript (traced) otherwise.

    The model is left where it is (a GPU model stays on the GPU: the threshold
    recalibration that follows runs on it); the file is written from CPU copies."""
    card = model.card
    model.net.eval()
    if card.architecture:
        from safetensors.torch import save_file

        path = folder / "model.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
        save_file(state, str(path))
        return path, card
    path = folder / "model.pt"
    c, h, w = model.input_shape
    net = copy.deepcopy(model.net).cpu()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
        traced = torch.jit.trace(net, torch.rand(1, c, h, w))
        torch.jit.save(traced, str(path))
    return path, card


@dataclass
class _Splits:
    """The defense job's data: a seeded 80/20 split of the training set (model selection
    needs a validation split, never the evaluation set) and the evaluation set."""

    fit: TensorDataset
    val_x: torch.Tensor
    val_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor

    @property
    def val(self) -> TensorDataset:
        return TensorDataset(self.val_x, self.val_y)


def _splits(rt: Runtime, req: dict[str, Any], card: ModelCard, seed: int) -> _Splits:
    train_x, train_y = _dataset(rt, req["train_dataset_id"], card)
    eval_x, eval_y = _dataset(rt, req["eval_dataset_id"], card)
    perm = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(0.2 * len(perm)))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    return _Splits(TensorDataset(train_x[fit_idx], train_y[fit_idx]), train_x[val_idx],
                   train_y[val_idx], eval_x, eval_y)


@app.task(name="robustdx.defense.train")
def train(job_id: str) -> None:
    """Train, compare before/after on the evaluation set, register the hardened model."""
    rt = runtime()
    ctx = JobContext(rt.db, job_id, rt.settings.heartbeat_seconds,
                     time_limit_seconds=rt.settings.job_time_limit_seconds)
    if ctx.is_final():
        return
    with ctx:
        ctx.start("preparing")
        job = ctx.load()
        req = job.request
        from app.core.registry import load_registered_model
        from workers.defenses import train_defense

        row = model_row(rt, req["model_id"])
        original = load_registered_model(rt.storage, row, rt.device)
        params = dict(req.get("params") or {})
        eval_attacks = params.pop("eval_attacks", None)
        seed = int(req.get("seed", 0))
        data = _splits(rt, req, original.card, seed)
        job_dir = rt.storage.job_dir(job_id)
        # Another machine's checkpoints, so a killed worker's job resumes here.
        checkpoints = rt.storage.pull(job_dir / "checkpoints")
        published = [0]

        def progress(fraction: float, stage: str) -> None:
            ctx.progress(0.8 * fraction, stage)
            _publish_checkpoint(rt, checkpoints, published)

        ctx.progress(0.0, "training")
        result = train_defense(
            original, data.fit, data.val, req["method"], params, seed=seed,
            checkpoint_dir=job_dir / "checkpoints", progress=progress,
            should_stop=ctx.should_stop, device=rt.device,
        )
        _publish_checkpoint(rt, checkpoints, published)
        hardened = result.model.eval()
        ctx.progress(0.8, "evaluating")
        ctx.check_cancelled()
        from workers.defenses.report import (
            DEFAULT_EVAL_ATTACKS,
            comparison_section,
            evaluate_pair,
            training_section,
        )

        before, after = evaluate_pair(original, hardened, data.eval_x, data.eval_y,
                                      eval_attacks or DEFAULT_EVAL_ATTACKS, seed,
                                      batch_size=int(params.get("batch_size", 64)),
                                      should_stop=ctx.should_stop)
        ctx.progress(0.95, "registering")
        new_id = _register(rt, job, row, hardened, result, data)
        sections = [training_section(result.history), comparison_section(before, after)]
        _write_report(rt, job_id, req, before, after, sections, new_id, result)
        rt.storage.publish(job_dir)
        ctx.succeed({
            "hardened_model_id": new_id,
            "best_epoch": result.best_epoch,
            "resumed_from_epoch": result.resumed_from_epoch,
            "comparison": sections[1].data["rows"],
            "report": f"/v1/defenses/{job_id}/report",
        })


def _register(rt: Runtime, job: Any, row: Any, hardened: DiagnosticModel, result: Any,
              data: _Splits) -> str:
    """Register the hardened model with its lineage (multi-label: thresholds chosen again
    by Youden's J on the validation split); returns its id."""
    from app.core.registry import register_model_file, unused_name

    req = job.request
    card = hardened.card
    with tempfile.TemporaryDirectory(dir=rt.storage.uploads_dir()) as tmp:
        path, new_card = save_hardened(hardened, Path(tmp))
        lineage = {
            "parent_id": row.id, "parent_sha256": row.sha256, "method": req["method"],
            "params": result.params, "seed": int(req.get("seed", 0)), "defense_job_id": job.id,
            "train_dataset_id": req["train_dataset_id"],
            "eval_dataset_id": req["eval_dataset_id"],
            "train_dataset_sha256": req.get("train_dataset_sha256"),
            "best_epoch": result.best_epoch,
        }
        update: dict[str, Any] = {"name": f"{card.name} ({req['method']})"[:200], "sha256": None}
        if card.task == "multi-label":
            from workers.defenses.calibration import recalibrated_thresholds

            update["thresholds"] = recalibrated_thresholds(hardened, data.val_x, data.val_y)
            lineage["thresholds"] = "Youden's J on the defense's validation split"
        with rt.db.session() as session:
            # Model names are unique per tenant: a second hardening of one model is "#2".
            update["name"] = unused_name(session, job.tenant_id, update["name"])
            new_card = new_card.model_copy(update=update)
            new_row = register_model_file(session, rt.storage, job.tenant_id, path, new_card,
                                          lineage=lineage)
            return str(new_row.id)


def _publish_checkpoint(rt: Runtime, folder: Path, published: list[int]) -> None:
    """Publish the checkpoint folder once per new commit marker (checked after each batch)."""
    from workers.defenses.checkpoint import STATE_FILE

    try:
        stamp = (folder / STATE_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        return
    if stamp != published[0]:
        rt.storage.publish(folder)
        published[0] = (folder / STATE_FILE).stat().st_mtime_ns


def _write_report(rt: Runtime, job_id: str, req: dict[str, Any], before: dict[str, Any],
                  after: dict[str, Any], sections: list[Any], new_id: str, result: Any) -> None:
    from workers.reports.html import render_html

    report = {
        "schema_version": "1.0",
        "kind": "defense",
        "job": {"id": job_id, "method": req["method"]},
        "hardened_model_id": new_id,
        "parent_model_id": req["model_id"],
        "params": result.params,
        "seed": int(req.get("seed", 0)),
        "training": sections[0].data,
        "comparison": sections[1].data,
        "before": before,
        "after": after,
    }
    folder = rt.storage.job_dir(job_id)
    write_atomic(folder / "report.json", json.dumps(report, indent=2, default=str).encode())
    html_report = dict(after)
    html_report["summary"] = {**after.get("summary", {}),
                              "title": f"Defense {req['method']}: hardened model {new_id}"}
    write_atomic(folder / "report.html", render_html(html_report, sections, []).encode())
    for section in sections:
        for fig in section.figures:
            write_atomic(rt.storage.artifacts_dir(job_id) / f"{fig.name}.png",
                         fig.png)
