"""A tiny trained model and a phantom dataset, shared by the integration tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from models.architectures import build_architecture
from models.card import ModelCard
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from tests.support.services import Broker, Service, running_service

SIZE = 32


@dataclass
class TinyModel:
    weights: Path
    card: dict
    model: DiagnosticModel
    archive: Path
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _train(kind: str, head: str | None, out: Path) -> TinyModel:
    from models.phantoms import generate
    from models.phantoms.export import write_phantom_archive

    data = generate(kind, 480, size=SIZE, seed=11)
    x = torch.from_numpy(np.asarray(data.images)).permute(0, 3, 1, 2).float() / 255.0
    y = torch.as_tensor(np.asarray(data.labels))
    card = ModelCard.model_validate({
        "name": f"tiny-{kind}", "task": data.task, "labels": list(data.label_names),
        "input": {"channels": int(x.shape[1]), "height": SIZE, "width": SIZE},
        "architecture": "small_cnn", "head": head,
        "preprocessing": {"mean": [0.5], "std": [0.25]},
    })
    resolved = card.resolved_head(1 if head == "binary-logit" else len(card.labels))
    torch.manual_seed(0)
    net = build_architecture("small_cnn", int(x.shape[1]), card.expected_outputs(resolved))
    model = DiagnosticModel(net, card, resolved)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, len(order), 32):
            idx = order[start:start + 32]
            opt.zero_grad()
            head_loss(model(x[idx]), y[idx], resolved).backward()
            opt.step()
    model.eval()
    from safetensors.torch import save_file

    weights = out / f"tiny-{kind}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    archive = out / f"{kind}.zip"
    fmt = "csv" if data.task == "multi-label" else "imagefolder"
    write_phantom_archive(kind, 96, SIZE, fmt, archive, seed=12)
    # The audited images in the order the service stores them (the importer's order).
    from models.datasets import ImportLimits, import_dataset, load_dataset

    import_dataset(archive, fmt, out / "imported", limits=ImportLimits())
    tx, ty, _ = load_dataset(out / "imported").tensors(card)
    return TinyModel(weights, json.loads(card.model_dump_json(exclude_none=True)), model,
                     archive, tx, ty)


@pytest.fixture(scope="session")
def tiny_derm(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return _train("derm", "binary-logit", tmp_path_factory.mktemp("tiny-derm"))


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Service]:
    """The API and one worker, shared by a module's tests (each makes its own tenant)."""
    with running_service(tmp_path_factory.mktemp("live") / "data", broker) as svc:
        yield svc
