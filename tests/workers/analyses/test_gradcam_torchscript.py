"""Grad-CAM of TorchScript uploads equals Grad-CAM of the same network run eagerly.

The profiling executor builds a new plan from the second call on (differentiable graphs
fused from the profiled one), so every test calls several times: a tapped activation that
is only a sibling output of the fused graph gets no gradient from the second call on.
"""

import io
import warnings

import torch
from torch import nn

from models.architectures import build_architecture
from models.card import Head, ModelCard
from models.wrapper import DiagnosticModel
from workers.analyses.gradcam import GradCAMAnalysis, choose_layer
from workers.analyses.gradcam_maps import grad_cam
from workers.analyses.layer_taps import LayerReader
from workers.analyses.layers import TapPoint

CALLS = 5


def _card(labels: int, task: str = "single-label") -> ModelCard:
    return ModelCard.model_validate({
        "name": "t", "task": task, "labels": [f"c{i}" for i in range(labels)],
        "input": {"channels": 1, "height": 32, "width": 32},
        "preprocessing": {"mean": [0.4], "std": [0.25]},
    })


def _upload(net: nn.Module, trace: bool) -> torch.jit.ScriptModule:
    """``net`` traced (or scripted), saved and loaded back, as an uploaded file is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        script = torch.jit.trace(net, torch.rand(1, 1, 32, 32)) if trace else torch.jit.script(net)
        buf = io.BytesIO()
        torch.jit.save(script, buf)
        buf.seek(0)
        return torch.jit.load(buf)


def _pair(arch: str, outputs: int, task: str, trace: bool) -> tuple[DiagnosticModel, ...]:
    """The eager network and its TorchScript upload, with the same weights."""
    torch.manual_seed(0)
    net = build_architecture(arch, 1, outputs).eval()
    card = _card(outputs, task)
    head = card.resolved_head(outputs)
    uploaded = _upload(net, trace)
    eager = build_architecture(arch, 1, outputs).eval()
    eager.load_state_dict(uploaded.state_dict())  # the weights as the upload holds them
    return DiagnosticModel(eager, card, head), DiagnosticModel(uploaded, card, head)


def _assert_same_maps_every_call(eager: DiagnosticModel, ts: DiagnosticModel,
                                 head: Head) -> None:
    layer = choose_layer(ts)
    assert layer == choose_layer(eager)
    eager_reader = LayerReader(eager, [TapPoint(layer)])
    ts_reader = LayerReader(ts, [TapPoint(layer)])
    # The highest and the lowest scoring class of each image.
    choose = lambda z: torch.stack([z.argmax(1), z.argmin(1)])  # noqa: E731
    generator = torch.Generator().manual_seed(1)
    for _ in range(CALLS):
        x = torch.rand(4, 1, 32, 32, generator=generator)
        eager_maps, eager_logits, _ = grad_cam(eager_reader, x, choose, head)
        ts_maps, ts_logits, _ = grad_cam(ts_reader, x, choose, head)
        torch.testing.assert_close(ts_logits, eager_logits, rtol=1e-4, atol=1e-5)
        # A randomly initialised network leaves some maps all-zero (ReLU of a negative
        # sum) in eager mode too; the same ones must be, and the rest real explanations.
        peaks = ts_maps.flatten(2).amax(2)
        assert peaks.sum() >= 1
        assert torch.equal(peaks, eager_maps.flatten(2).amax(2))
        torch.testing.assert_close(ts_maps, eager_maps, rtol=0, atol=1e-4)


def test_traced_chest_densenet_maps_equal_eager_maps_on_every_call() -> None:
    eager, ts = _pair("densenet_small", 5, "multi-label", trace=True)
    assert GradCAMAnalysis().not_applicable(ts) is None
    _assert_same_maps_every_call(eager, ts, Head.SIGMOID)


def test_scripted_resnet_maps_equal_eager_maps_on_every_call() -> None:
    # Residual blocks: the values live across the cut include more than the tapped one.
    eager, ts = _pair("resnet_small", 5, "single-label", trace=False)
    assert GradCAMAnalysis().not_applicable(ts) is None
    _assert_same_maps_every_call(eager, ts, Head.SOFTMAX)


def test_an_inner_block_of_a_traced_net_gets_its_gradient() -> None:
    # A tap inside a Sequential: the call of "features" is inlined, then cut.
    eager, ts = _pair("densenet_small", 5, "multi-label", trace=True)
    readers = [LayerReader(m, [TapPoint("features.10")]) for m in (eager, ts)]
    choose = lambda z: torch.zeros(1, 4, dtype=torch.long)  # noqa: E731
    for _ in range(CALLS):
        x = torch.rand(4, 1, 32, 32)
        (eager_maps, _, _), (ts_maps, _, _) = (grad_cam(r, x, choose, Head.SIGMOID)
                                               for r in readers)
        assert torch.all(ts_maps.flatten(2).amax(2) == 1.0)
        torch.testing.assert_close(ts_maps, eager_maps, rtol=0, atol=1e-4)


def test_frozen_torchscript_without_submodules_is_not_applicable_with_a_reason() -> None:
    # Freezing inlines every submodule: no block is left to name or tap.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.freeze(torch.jit.script(build_architecture("small_cnn", 1, 2).eval()))
    card = _card(2)
    reason = GradCAMAnalysis().not_applicable(DiagnosticModel(net, card, card.resolved_head(2)))
    assert reason is not None
    assert "no convolutional block found for Grad-CAM" in reason


def test_eager_model_is_applicable() -> None:
    eager, _ = _pair("small_cnn", 2, "single-label", trace=False)
    assert GradCAMAnalysis().not_applicable(eager) is None
