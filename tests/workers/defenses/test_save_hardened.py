"""Saving a hardened model leaves it on its device, so the multi-label threshold
recalibration that follows runs where the model is (a GPU worker included)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.architectures import build_architecture
from models.card import Head, ModelCard
from models.wrapper import DiagnosticModel
from workers.defenses.calibration import recalibrated_thresholds
from workers.tasks.defense import save_hardened

LABELS = ["effusion", "nodule", "edema"]


def _model(architecture: str | None) -> DiagnosticModel:
    card = ModelCard.model_validate({
        "name": "tiny-chest", "task": "multi-label", "labels": LABELS,
        "input": {"channels": 1, "height": 16, "width": 16}, "architecture": architecture,
        "preprocessing": {"mean": [0.5], "std": [0.25]},
    })
    torch.manual_seed(0)
    return DiagnosticModel(build_architecture("small_cnn", 1, 3), card, Head.SIGMOID)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(40, 1, 16, 16, generator=gen)
    return images, (torch.rand(40, 3, generator=gen) < 0.5).float()


def _save_then_recalibrate(device: str, architecture: str | None, tmp_path: Path) -> None:
    model = _model(architecture).to(device)
    images, labels = _data()
    before = recalibrated_thresholds(model, images, labels)
    path, _ = save_hardened(model, tmp_path)
    assert {p.device.type for p in model.net.parameters()} == {torch.device(device).type}
    # The recalibration after saving (as the defense job does it) still runs, unchanged.
    assert recalibrated_thresholds(model, images, labels) == before
    assert set(before) == set(LABELS)
    if architecture:
        saved = load_file(str(path))
        cpu = {k: v.cpu() for k, v in model.net.state_dict().items()}
        assert saved.keys() == cpu.keys()
        assert all(torch.equal(saved[k], cpu[k]) for k in saved)
    else:
        traced = torch.jit.load(str(path))
        x = images[:4]
        with torch.no_grad():
            expected = model.net(x.to(device)).cpu()
        assert torch.allclose(traced(x), expected, atol=1e-5)


@pytest.mark.parametrize("architecture", ["small_cnn", None])
def test_saving_keeps_a_cpu_model_usable(architecture: str | None, tmp_path: Path) -> None:
    _save_then_recalibrate("cpu", architecture, tmp_path)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("architecture", ["small_cnn", None])
def test_saving_keeps_a_gpu_model_on_the_gpu(architecture: str | None, tmp_path: Path) -> None:
    _save_then_recalibrate("cuda", architecture, tmp_path)
