"""``gradcam``: Grad-CAM maps, their shift under attack, and the lesion share."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.card import Head, ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.gradcam import (
    GradCAMAnalysis,
    centre_of_mass,
    grad_cam,
    iou,
    mass_inside,
    top_region,
)
from workers.analyses.layer_taps import LayerReader
from workers.analyses.layers import TapPoint


class QuadrantNet(nn.Module):
    """Sees only the top-left quadrant: the rest of the (normalized) input is zeroed, and
    bias-free convolutions keep it at zero, so nothing outside can matter."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, outputs)

    def forward(self, x: Tensor) -> Tensor:
        keep = torch.zeros_like(x)
        keep[..., :16, :16] = 1
        return self.classifier(self.pool(self.features(x * keep)).flatten(1))


def quadrant_mask(n: int) -> Tensor:
    m = torch.zeros(n, 1, 32, 32)
    m[..., :16, :16] = 1
    return m


def test_cam_mass_stays_where_the_model_looks(kit):
    card, outputs = kit.card_for("softmax", architecture=None)
    t = kit.train_net(QuadrantNet(outputs), card, outputs, "softmax", epochs=6)
    x, y = t.images[:48], t.labels[:48]
    adv = {"pgd:eps=8/255": kit.pgd(t.model, x, y, 8 / 255)}
    section, arrays = kit.run(GradCAMAnalysis(), t.model, x, y, adv, masks=quadrant_mask(48))

    assert section.applicable
    assert section.data["layer"] == "features"
    # Only a 2-pixel border (the receptive field of two 3x3 convolutions) leaks outside.
    assert section.data["clean"]["lesion_share"] > 0.95
    assert section.data["attacks"]["pgd:eps=8/255"]["lesion_share_adversarial"] > 0.95
    reader = LayerReader(t.model, [TapPoint("features")])
    maps, _, _ = grad_cam(reader, x, lambda z: z.argmax(1).view(1, -1), Head.SOFTMAX)
    com = centre_of_mass(maps[0])
    finite = com[~torch.isnan(com[:, 0])]
    assert finite.shape[0] > 40
    assert torch.all(finite < 17)  # centres of mass inside the top-left quadrant
    np.testing.assert_array_equal(arrays["lesion_share_clean"].shape, (48, 1))


def _manual_cam(model: DiagnosticModel, x: Tensor, layer: nn.Module, choose) -> Tensor:
    """Grad-CAM one image at a time with a retained activation: the reference."""
    maps = []
    store: dict[str, Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    try:
        for i in range(x.shape[0]):
            score = choose(model(x[i : i + 1]))
            (grad,) = torch.autograd.grad(score, store["a"])
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * store["a"]).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
            cam = cam[0, 0]
            maps.append(cam / cam.max() if cam.max() > 0 else cam)
    finally:
        handle.remove()
    return torch.stack(maps).detach()


def _score_predicted(head: Head, thresholds: Tensor):
    def choose(logits: Tensor) -> Tensor:
        if head == Head.BINARY_LOGIT:
            z = logits[0, 0]
            return z if z > 0 else -z
        if head == Head.SIGMOID:
            return logits[0, (torch.sigmoid(logits[0]) - thresholds).argmax()]
        return logits[0, logits[0].argmax()]

    return choose


def test_batched_maps_equal_one_image_at_a_time(any_head):
    t = any_head
    x = t.images[:12]
    model = t.model
    reader = LayerReader(model, [TapPoint("features.2")])
    head = model.head

    def choose(logits: Tensor) -> Tensor:
        if head == Head.SIGMOID:
            return (torch.sigmoid(logits) - model.thresholds).argmax(1).view(1, -1)
        if head == Head.BINARY_LOGIT:
            return (logits[:, 0] > 0).long().view(1, -1)
        return logits.argmax(1).view(1, -1)

    maps, _, targets = grad_cam(reader, x, choose, head)
    reference = _manual_cam(model, x, model.net.features[2], _score_predicted(head,
                                                                              model.thresholds))
    assert maps.shape == (1, 12, 32, 32)
    torch.testing.assert_close(maps[0], reference, rtol=1e-4, atol=1e-5)
    if head == Head.BINARY_LOGIT:
        assert set(targets[0].tolist()) == {0, 1}  # both signs of the logit are explained


def test_every_head_reports_shift_that_grows_with_eps(any_head, kit):
    t = any_head
    x, y, m = t.images[:64], t.labels[:64], t.masks[:64]
    adv = {f"pgd:eps={e}/255": kit.pgd(t.model, x, y, e / 255) for e in (0, 16)}
    section, arrays = kit.run(GradCAMAnalysis(), t.model, x, y, adv, masks=m,
                              params={"samples_per_batch": 2})
    assert section.applicable
    none, strong = (section.data["attacks"][k] for k in adv)
    # An unchanged image gives the same map: full overlap, no shift.
    assert none["iou_top"] == pytest.approx(1.0)
    assert none["com_shift_px"] == pytest.approx(0.0, abs=1e-4)
    assert none["fooled"] == 0
    assert strong["fooled"] > 0
    assert strong["iou_top"] < 0.9
    assert strong["com_shift_px"] > none["com_shift_px"]
    assert strong["com_shift_fraction"] == pytest.approx(
        strong["com_shift_px"] / math.hypot(32, 32), rel=1e-5)
    assert "lesion_share_adversarial" in strong
    assert arrays["sample_image"].shape == (4, 1, 32, 32)
    assert arrays["sample_image"].dtype == np.uint8
    assert len(section.figures) == 2
    assert all(f.png.startswith(b"\x89PNG") for f in section.figures)


def test_named_findings_of_a_multi_label_model(kit):
    t = kit.trained("multi-label")
    x, y = t.images[:20], t.labels[:20]
    adv = {"pgd": kit.pgd(t.model, x, y, 8 / 255)}
    section, arrays = kit.run(GradCAMAnalysis(), t.model, x, y, adv,
                              params={"findings": ["a", "c"]})
    assert section.data["findings"] == ["a", "c"]
    assert set(section.data["attacks"]["pgd"]["per_finding"]) == {"a", "c"}
    assert arrays[attack_field("iou", "pgd")].shape == (20, 2)
    assert np.all(arrays["clean_target"] == np.array([0, 2]))
    assert np.all(arrays[attack_field("adv_target", "pgd")] == np.array([0, 2]))
    with pytest.raises(InvalidParametersError, match="unknown finding"):
        kit.run(GradCAMAnalysis(), t.model, x, y, adv, params={"findings": ["z"]})


def test_region_metrics_on_known_maps():
    a = torch.zeros(1, 10, 10)
    a[0, 2, 3] = 1.0
    b = torch.zeros(1, 10, 10)
    b[0, 5, 7] = 1.0
    com = centre_of_mass(torch.cat([a, b]))
    assert com.tolist() == [[2.0, 3.0], [5.0, 7.0]]
    assert (com[1] - com[0]).norm().item() == pytest.approx(5.0)
    top_a, top_b = top_region(a, 0.2), top_region(b, 0.2)
    assert int(top_a.sum()) == 1  # zero pixels never join a top region
    assert iou(top_a, top_a).item() == 1.0
    assert iou(top_a, top_b).item() == 0.0
    assert torch.isnan(iou(top_region(torch.zeros(1, 4, 4), 0.2),
                           top_region(torch.zeros(1, 4, 4), 0.2))).all()
    ramp = torch.arange(100.0).view(1, 10, 10)
    assert int(top_region(ramp, 0.2).sum()) == 20
    mask = torch.zeros(1, 10, 10)
    mask[0, :5] = 1
    assert mass_inside(a, mask).item() == 1.0
    assert mass_inside(b, mask).item() == 0.0
    assert torch.isnan(mass_inside(a, torch.zeros(1, 10, 10))).all()


def test_scripted_net_gives_the_same_maps(softmax_model, kit):
    t = softmax_model
    x = t.images[:8]
    scripted = DiagnosticModel(kit.scripted(t.model.net), t.model.card, t.model.head)
    choose = lambda z: z.argmax(1).view(1, -1)  # noqa: E731
    eager_maps, _, _ = grad_cam(LayerReader(t.model, [TapPoint("features.2")]), x, choose,
                                Head.SOFTMAX)
    ts_maps, _, _ = grad_cam(LayerReader(scripted, [TapPoint("features.2")]), x, choose,
                             Head.SOFTMAX)
    torch.testing.assert_close(ts_maps, eager_maps, rtol=1e-4, atol=1e-5)


def test_gradients_reach_frozen_and_inference_mode_models(softmax_model):
    t = softmax_model
    x = t.images[:4]
    reader = LayerReader(t.model, [TapPoint("features.2")])
    flags = [p.requires_grad for p in t.model.parameters()]
    try:
        for p in t.model.parameters():
            p.requires_grad_(False)
        with torch.inference_mode():
            maps, _, _ = grad_cam(reader, x, lambda z: z.argmax(1).view(1, -1), Head.SOFTMAX)
    finally:
        for p, flag in zip(t.model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    assert maps.shape == (1, 4, 32, 32)
    assert torch.all(maps.flatten(1).amax(1) == 1.0)


def test_not_applicable_without_a_convolutional_block(kit):
    card = ModelCard(name="mlp", task="single-label", labels=("a", "b"),
                     input={"channels": 1, "height": 32, "width": 32})
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 16), nn.ReLU(), nn.Linear(16, 2))
    model = DiagnosticModel(net, card, card.resolved_head(2)).eval()
    reason = GradCAMAnalysis().not_applicable(model)
    assert reason is not None
    assert "spatial" in reason
    x = torch.rand(4, 1, 32, 32)
    y = torch.zeros(4, dtype=torch.long)
    section, _ = kit.run(GradCAMAnalysis(), model, x, y, {"pgd": x.clone()})
    assert not section.applicable
    assert "spatial" in (section.reason or "")


def test_parameter_errors(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:4], t.labels[:4]
    adv = {"pgd": x.clone()}
    with pytest.raises(InvalidParametersError, match="top_fraction must be in"):
        kit.run(GradCAMAnalysis(), t.model, x, y, adv, params={"top_fraction": 1.5})
    with pytest.raises(InvalidParametersError, match="findings apply to multi-label"):
        kit.run(GradCAMAnalysis(), t.model, x, y, adv, params={"findings": ["c0"]})
    with pytest.raises(InvalidParametersError, match="2-D activations"):
        kit.run(GradCAMAnalysis(), t.model, x, y, adv, params={"layer": "classifier"})
    with pytest.raises(InvalidParametersError, match="unknown layer"):
        kit.run(GradCAMAnalysis(), t.model, x, y, adv, params={"layer": "layer9"})


def test_fixed_batch_program_gives_the_same_maps(softmax_model):
    t = softmax_model
    x = t.images[:10]
    program = torch.export.export(t.model.net, (x[:4],)).module()  # accepts batch 4 only
    fixed = DiagnosticModel(program, t.model.card, t.model.head, fixed_batch=4)
    choose = lambda z: z.argmax(1).view(1, -1)  # noqa: E731
    eager_maps, _, _ = grad_cam(LayerReader(t.model, [TapPoint("features.2")]), x, choose,
                                Head.SOFTMAX)
    fixed_maps, logits, _ = grad_cam(LayerReader(fixed, [TapPoint("features.2")]), x, choose,
                                     Head.SOFTMAX)
    assert logits.shape == (10, 3)
    torch.testing.assert_close(fixed_maps, eager_maps, rtol=1e-4, atol=1e-5)
