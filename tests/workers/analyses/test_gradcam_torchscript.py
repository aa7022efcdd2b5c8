"""Grad-CAM says it does not apply to TorchScript models instead of reporting empty maps."""

import torch

from models.architectures import build_architecture
from models.card import ModelCard
from models.wrapper import DiagnosticModel
from workers.analyses.gradcam import GradCAMAnalysis


def _model(script: bool) -> DiagnosticModel:
    card = ModelCard.model_validate({"name": "t", "task": "single-label", "labels": ["a", "b"],
                                     "input": {"channels": 1, "height": 32, "width": 32}})
    net = build_architecture("small_cnn", 1, 2).eval()
    if script:
        net = torch.jit.trace(net, torch.rand(1, 1, 32, 32))
    return DiagnosticModel(net, card, card.resolved_head(2))


def test_torchscript_is_not_applicable_with_a_reason() -> None:
    reason = GradCAMAnalysis().not_applicable(_model(script=True))
    assert reason is not None
    assert "TorchScript" in reason


def test_eager_model_is_applicable() -> None:
    assert GradCAMAnalysis().not_applicable(_model(script=False)) is None
