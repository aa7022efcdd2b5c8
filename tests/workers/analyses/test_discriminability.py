"""``discriminability``: class separability of deep features, clean vs adversarial."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.card import ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.base import merge_arrays
from workers.analyses.discriminability import (
    DiscriminabilityAnalysis,
    projection_matrix,
    reduce_features,
)


def test_clean_features_separate_better_than_pgd_features(any_head, kit):
    t = any_head
    x, y = t.images, t.labels
    key = "pgd:eps=16/255"
    adv = {key: kit.pgd(t.model, x, y, 16 / 255)}
    section, arrays = kit.run(DiscriminabilityAnalysis(), t.model, x, y, adv,
                              params={"method": "pca"})
    assert section.applicable
    data = section.data
    assert data["feature_source"] == "input of the last linear layer (classifier)"
    assert data["feature_dim"] == 32
    assert data["n_images"] == x.shape[0]
    clean, attacked = data["clean"], data["attacks"][key]
    assert clean["silhouette"] > attacked["silhouette"]
    assert clean["probe_accuracy"] > attacked["probe_accuracy"]
    assert clean["probe_accuracy"] >= data["probe"]["chance_accuracy"]
    if t.model.card.task == "multi-label":
        assert data["groups"] == ["no finding", "any finding"]
    else:
        assert data["groups"] == list(t.model.labels)
    assert arrays["features_clean"].dtype == np.float16
    assert section.figures[0].png.startswith(b"\x89PNG")


def test_features_are_the_input_of_the_last_linear_layer(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:10], t.labels[:10]
    _, arrays = kit.run(DiscriminabilityAnalysis(), t.model, x, y, {"none": x.clone()},
                        params={"method": "pca"}, batch_size=4)
    net = t.model.net
    with torch.no_grad():
        expected = torch.flatten(net.pool(net.features(t.model.normalize(x))), 1)
    np.testing.assert_allclose(arrays["features_clean"].astype(np.float32), expected.numpy(),
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(arrays[attack_field("features", "none")],
                                  arrays["features_clean"])


def test_wide_features_are_projected_the_same_way_in_every_batch(softmax_model, kit):
    t = softmax_model
    x, y = t.images[:20], t.labels[:20]
    params = {"method": "pca", "projection_dim": 8}
    section, small = kit.run(DiscriminabilityAnalysis(), t.model, x, y, {"a": x.clone()},
                             params=params, batch_size=3)
    _, large = kit.run(DiscriminabilityAnalysis(), t.model, x, y, {"a": x.clone()},
                       params=params, batch_size=20)
    assert small["features_clean"].shape == (20, 8)
    np.testing.assert_array_equal(small["features_clean"], large["features_clean"])
    assert section.data["stored_dim"] == 8
    assert "random projection to 8" in section.data["projection"]
    # Johnson-Lindenstrauss: the projection keeps squared norms on average.
    m = projection_matrix(512, 128)
    v = torch.randn(200, 512, generator=torch.Generator().manual_seed(1))
    ratio = ((v @ m).norm(dim=1) ** 2 / v.norm(dim=1) ** 2).mean().item()
    assert ratio == pytest.approx(1.0, abs=0.1)
    assert reduce_features(torch.full((1, 4), 1e6), 8).max().item() == 65504.0


def test_sample_is_capped_and_stratified_and_merges_twice_the_same(softmax_model, kit):
    t = softmax_model
    x, y = t.images, t.labels
    adv = {"pgd": kit.pgd(t.model, x, y, 8 / 255)}
    analysis = DiscriminabilityAnalysis()
    section, arrays = kit.run(analysis, t.model, x, y, adv,
                              params={"max_points": 30, "method": "auto"})
    assert section.data["sample_size"] == pytest.approx(30, abs=2)
    assert section.data["embedding"] == "tsne"  # 60 points: t-SNE is affordable
    # A shard delivered twice: the same images counted once.
    twice = merge_arrays([arrays, arrays])
    again = analysis.summarize(twice, _summary(t.model, ["pgd"], {"max_points": 30}))
    assert again.data["clean"] == section.data["clean"]
    assert again.data["attacks"] == section.data["attacks"]


def _summary(model, keys, params):
    from workers.analyses.base import SummaryContext

    return SummaryContext(labels=model.card.labels, task=model.card.task,
                          head=model.head.value, attack_keys=keys,
                          params={**params, "seed": 0})


class ConvHead(nn.Module):
    """A fully convolutional classifier: no linear layer to read."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


def test_not_applicable_without_a_linear_layer_unless_a_layer_is_named(kit):
    card = ModelCard(name="conv", task="single-label", labels=("a", "b", "c"),
                     input={"channels": 1, "height": 32, "width": 32})
    model = DiagnosticModel(ConvHead(), card, card.resolved_head(3)).eval()
    analysis = DiscriminabilityAnalysis()
    assert "no linear layer" in (analysis.not_applicable(model) or "")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 32, 32, generator=g)
    y = torch.arange(12) % 3
    section, _ = kit.run(analysis, model, x, y, {"a": x.clone()})
    assert not section.applicable
    assert "no linear layer" in (section.reason or "")
    named, arrays = kit.run(analysis, model, x, y, {"a": x.clone()},
                            params={"layer": "body.1", "method": "pca"})
    assert named.applicable
    assert arrays["features_clean"].shape == (12, 4)
    assert named.data["feature_source"] == "output of body.1 (averaged over space)"
    with pytest.raises(InvalidParametersError, match="unknown layer"):
        kit.run(analysis, model, x, y, {"a": x}, params={"layer": "head"})
    with pytest.raises(InvalidParametersError, match="max_points must be in"):
        kit.run(analysis, model, x, y, {"a": x}, params={"max_points": 5})
