"""``features``: layer-wise relative feature change, and finding the blocks of a network."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from models.architectures import SmallCNN
from models.card import ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.features import FeaturesAnalysis, relative_change
from workers.analyses.layer_taps import LayerReader
from workers.analyses.layers import TapPoint, find_blocks

BLOCKS = ["features.0", "features.1", "features.2", "features.3"]


def test_change_is_zero_for_eps_zero_and_grows_with_eps(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:64], t.labels[:64]
    adversarial = {f"pgd:eps={e}/255": kit.pgd(t.model, x, y, e / 255) for e in (0, 1, 4, 16)}
    section, arrays = kit.run(FeaturesAnalysis(), t.model, x, y, adversarial)

    assert section.applicable
    assert section.data["layers"] == ["input", *BLOCKS]
    assert section.data["layer_source"] == "recipe:SmallCNN"
    zero = arrays[attack_field("change", "pgd:eps=0/255")]
    assert zero.shape == (64, 5)
    assert np.all(zero == 0.0)
    # Deeper features move more as eps grows, at every block.
    means = np.array([section.data["attacks"][f"pgd:eps={e}/255"]["mean"] for e in (1, 4, 16)])
    assert np.all(np.diff(means, axis=0) > 0)
    # The perturbation is amplified: the last block moves (relatively) more than the input.
    strong = section.data["attacks"]["pgd:eps=16/255"]
    assert strong["amplification"][-1] > 1.0
    assert strong["largest_increase"]["layer"] in BLOCKS
    assert [f.name for f in section.figures] == ["features_by_depth"]
    assert section.figures[0].png.startswith(b"\x89PNG")


def test_relative_change_matches_a_direct_computation(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:16], t.labels[:16]
    adv = kit.pgd(t.model, x, y, 8 / 255)
    _, arrays = kit.run(FeaturesAnalysis(), t.model, x, y, {"pgd": adv}, batch_size=5)
    net = t.model.net
    with torch.no_grad():
        fc = net.features[:3](t.model.normalize(x))
        fa = net.features[:3](t.model.normalize(adv))
    expected = ((fa - fc).flatten(1).norm(dim=1) / fc.flatten(1).norm(dim=1)).numpy()
    np.testing.assert_allclose(arrays[attack_field("change", "pgd")][:, 3], expected, rtol=1e-5)
    np.testing.assert_array_equal(arrays[attack_field("adv_index", "pgd")], np.arange(16))


def test_relative_change_conventions():
    clean = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 2.0]])
    out = relative_change(clean, adv)
    assert out[0].item() == pytest.approx(1.0)
    assert out[1].item() == 0.0  # no change of a zero activation: 0, not 0/0
    assert torch.isnan(out[2])  # a zero activation that changes: undefined


def test_scripted_and_exported_nets_get_the_same_blocks_and_values(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:24], t.labels[:24]
    adv = {"pgd": kit.pgd(t.model, x, y, 8 / 255)}
    _, eager = kit.run(FeaturesAnalysis(), t.model, x, y, adv)
    for net in (kit.scripted(t.model.net), kit.exported(t.model.net, x[:2])):
        # No architecture on the card: blocks come from the network's own structure.
        card = t.model.card.model_copy(update={"architecture": None})
        model = DiagnosticModel(net, card, t.model.head)
        blocks = find_blocks(model)
        assert list(blocks.names) == BLOCKS
        section, arrays = kit.run(FeaturesAnalysis(), model, x, y, adv)
        assert section.data["layers"] == ["input", *BLOCKS]
        np.testing.assert_allclose(
            arrays[attack_field("change", "pgd")], eager[attack_field("change", "pgd")],
            rtol=1e-4, atol=1e-6,
        )


def test_onnx_graph_blocks_come_from_its_scope_names(softmax_model, kit, tmp_path):
    import onnx
    from onnx2torch import convert

    t = softmax_model
    x, y = t.images[:12], t.labels[:12]
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter keeps module scopes in node names.
        torch.onnx.export(t.model.net, (x[:2],), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    graph = convert(onnx.load(str(path))).eval()
    card = t.model.card.model_copy(update={"architecture": None})
    model = DiagnosticModel(graph, card, t.model.head)
    blocks = find_blocks(model)
    assert list(blocks.names) == BLOCKS
    assert blocks.source == "module tree"
    adv = {"pgd": kit.pgd(t.model, x, y, 8 / 255)}
    _, eager = kit.run(FeaturesAnalysis(), t.model, x, y, adv)
    _, converted = kit.run(FeaturesAnalysis(), model, x, y, adv)
    np.testing.assert_allclose(converted[attack_field("change", "pgd")],
                               eager[attack_field("change", "pgd")], rtol=1e-3, atol=1e-5)


def test_fixed_batch_program_is_split_and_padded(softmax_model, kit):
    t = softmax_model
    x = t.images[:10]
    program = torch.export.export(t.model.net, (x[:4],)).module()  # accepts batch 4 only
    model = DiagnosticModel(program, t.model.card, t.model.head, fixed_batch=4)
    reader = LayerReader(model, [TapPoint("features.2")])
    eager = LayerReader(t.model, [TapPoint("features.2")])
    with torch.no_grad():
        logits, (act,) = reader(x)
        ref_logits, (ref,) = eager(x)
    assert act.shape == ref.shape == (10, 32, 4, 4)
    torch.testing.assert_close(act, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)


def test_user_named_layers(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:8], t.labels[:8]
    adv = {"pgd": kit.pgd(t.model, x, y, 8 / 255)}
    section, _ = kit.run(FeaturesAnalysis(), t.model, x, y, adv,
                         params={"layers": ["features.1", "pool"]})
    assert section.data["layers"] == ["input", "features.1", "pool"]
    assert section.data["layer_source"] == "user"
    with pytest.raises(InvalidParametersError, match="unknown layer"):
        kit.run(FeaturesAnalysis(), t.model, x, y, adv, params={"layers": ["nope"]})
    with pytest.raises(InvalidParametersError, match="layers must be unique"):
        kit.run(FeaturesAnalysis(), t.model, x, y, adv, params={"layers": ["pool", "pool"]})
    with pytest.raises(InvalidParametersError, match="unknown parameter 'depth'"):
        kit.run(FeaturesAnalysis(), t.model, x, y, adv, params={"depth": 3})


class _Flat(nn.Module):
    """A network with parameters but no submodules: nothing to hook."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight).mean(dim=(2, 3))


def _card() -> ModelCard:
    return ModelCard(name="flat", task="single-label", labels=("a", "b", "c"),
                     input={"channels": 1, "height": 32, "width": 32})


@pytest.mark.parametrize("kind", ["eager", "frozen-torchscript"])
def test_not_applicable_without_blocks(kind, kit):
    net: nn.Module = _Flat().eval()
    if kind == "frozen-torchscript":
        # Freezing inlines every submodule: a frozen TorchScript file has no children.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.freeze(torch.jit.script(SmallCNN(1, 3, width=4).eval()))
    model = DiagnosticModel(net, _card(), _card().resolved_head(3)).eval()
    analysis = FeaturesAnalysis()
    reason = analysis.not_applicable(model)
    assert reason is not None
    assert "no blocks found" in reason
    x = torch.rand(4, 1, 32, 32)
    y = torch.zeros(4, dtype=torch.long)
    section, _ = kit.run(analysis, model, x, y, {"pgd": x.clone()})
    assert not section.applicable
    assert "no blocks found" in (section.reason or "")


def test_many_flat_layers_are_thinned_evenly():
    convs = [nn.Conv2d(1, 1, 3, padding=1) for _ in range(30)]
    net = nn.Sequential(*convs, nn.Flatten(), nn.Linear(32 * 32, 3))
    model = DiagnosticModel(net, _card(), _card().resolved_head(3))
    blocks = find_blocks(model)
    assert len(blocks.names) == 24
    assert blocks.names[0] == "0"
    assert blocks.names[-1] == "29"
    assert "24 of 30" in blocks.source
    assert "32" not in blocks.names  # the classifier is not a block
