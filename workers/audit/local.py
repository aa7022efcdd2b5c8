"""An audit in one process, on in-memory tensors: the engine without the service."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch

from models.wrapper import DiagnosticModel
from workers.analyses.base import Section
from workers.attacks.fitted import TensorSource
from workers.audit.engine import AuditEngine, expand_attacks, resolve_analyses


def run_audit(
    model: DiagnosticModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks: Sequence[dict[str, Any]],
    *,
    analyses: Sequence[dict[str, Any]] | None = None,
    masks: torch.Tensor | None = None,
    policy: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    min_eps: bool = False,
    metadata: Sequence[Mapping[str, str]] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], list[Section]]:
    """Run an audit and return ``(report, sections)``; the report follows the JSON schema.

    ``images`` are ``[N, C, H, W]`` in ``[0, 1]`` at the model's size; ``labels`` follow the
    head's convention (class indices, or 0/1 findings); ``metadata`` is one
    ``{attribute: value}`` dict per image (for the ``subgroups`` section). ``should_stop``
    is polled inside every attack's loop and before every fitting batch (``True`` stops the
    audit with :class:`~workers.attacks.functional.AttackStoppedError`).
    """
    from workers.audit.provenance import device_description, package_versions
    from workers.reports.builder import build_report

    model.eval()
    settings = expand_attacks(attacks)
    chosen, skipped = resolve_analyses(analyses, model, attacks=bool(settings))
    engine = AuditEngine(model=model, settings=settings, analyses=chosen, seed=seed,
                         batch_size=batch_size, min_eps=min_eps)
    timings: dict[str, float] = {}
    with TemporaryDirectory() as state:
        if engine.fitted_settings():
            fitted = engine.fit(TensorSource(images, labels), Path(state), should_stop)
            timings.update({f"fit:{key}": value for key, value in fitted.items()})
        arrays = engine.run(images, labels, np.arange(images.shape[0]), masks, timings=timings,
                            should_stop=should_stop)
    sections = [*engine.summarize(arrays, metadata), *skipped]
    provenance = {
        "model": {"name": model.card.name, "sha256": model.card.sha256,
                  "card": model.card.model_dump(mode="json")},
        "dataset": {"sha256": None, "images_audited": int(images.shape[0])},
        "parameters": {"attacks": list(attacks), "analyses": analyses, "policy": policy},
        "seed": seed,
        "packages": package_versions(),
        "device": device_description(model.device),
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    job = {"id": "local", "kind": "audit", "model_name": model.card.name}
    report = build_report(job, provenance, sections, {s.key: s.info() for s in settings}, policy)
    return dict(report), sections
