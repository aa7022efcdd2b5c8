"""``perturbations``: the section's numbers against direct computations on toy models whose
answers can be worked out by hand, sharding, parameters, modalities and figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.card import Head, ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.base import BatchContext, SummaryContext, merge_arrays
from workers.analyses.perturbations import (
    PerturbationsAnalysis,
    evaluate_perturbations,
    perturbation_section,
)

SIZE = 16
BRIGHTNESS_SEVERITIES = np.array([0.05, 0.1, 0.15, 0.2, 0.3])


class MeanThreshold(nn.Module):
    """Diagnoses 'bright' when an image region's mean grey level is above 0.5.

    ``regions`` row bands, one output each (sigmoid head), or a single band scored as two
    classes (softmax), or one logit (binary-logit head).
    """

    def __init__(self, mode: str, regions: int = 1) -> None:
        super().__init__()
        self.mode = mode
        self.regions = regions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.mean(dim=(1, 3)).reshape(x.shape[0], self.regions, -1).mean(dim=2)
        score = 40.0 * (bands - 0.5)
        if self.mode == "softmax":
            return torch.cat([torch.zeros_like(score), score], dim=1)
        return score  # [N, regions]: sigmoid findings, or the binary logit


class Constant(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.logits: torch.Tensor
        self.register_buffer("logits", torch.linspace(-1, 1, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def model_of(
    net: nn.Module,
    head: Head,
    labels: tuple[str, ...],
    channels: int = 1,
    task: str = "single-label",
) -> DiagnosticModel:
    card = ModelCard(
        name="toy",
        task=task,
        labels=labels,
        input={"channels": channels, "height": SIZE, "width": SIZE},
    )
    return DiagnosticModel(net, card, head).eval()


def flat_images(means: np.ndarray, channels: int = 1) -> torch.Tensor:
    """Images of given row-band means with a +-0.05 texture; values stay in [0.05, 0.95]
    under every brightness amount used here, so no clipping bends the arithmetic."""
    n = means.shape[0]
    texture = 0.05 * torch.tensor([1.0, -1.0]).repeat(SIZE * SIZE // 2).view(1, 1, SIZE, SIZE)
    base = torch.as_tensor(means, dtype=torch.float32)
    if base.dim() == 1:
        base = base.view(n, 1, 1, 1).expand(n, channels, SIZE, SIZE)
    else:  # [N, regions] -> constant row bands
        rows = base.repeat_interleave(SIZE // base.shape[1], dim=1)
        base = rows.view(n, 1, SIZE, 1).expand(n, channels, SIZE, SIZE)
    return (base + texture).contiguous()


def sweep_flips(
    means: np.ndarray, frames: int, difficulty: int, lo: float = -0.2, hi: float = 0.2
) -> np.ndarray:
    """By hand: flips of 'mean + amount > 0.5' between frames `difficulty` apart."""
    amounts = np.linspace(lo, hi, frames)
    pred = means[None] + amounts.reshape(-1, *([1] * means.ndim)) > 0.5
    return (pred[difficulty:] != pred[:-difficulty]).sum(axis=0)


@pytest.fixture
def means() -> np.ndarray:
    return np.linspace(0.3, 0.62, 24)


@pytest.mark.parametrize("head", [Head.SOFTMAX, Head.BINARY_LOGIT])
def test_numbers_match_a_direct_computation(head: Head, means: np.ndarray) -> None:
    net = MeanThreshold("softmax" if head == Head.SOFTMAX else "logit")
    model = model_of(net, head, ("dark", "bright"))
    images = flat_images(means)
    labels = torch.as_tensor(means > 0.45).long()
    section = perturbation_section(
        model,
        images,
        labels,
        perturbations=["brightness", "contrast"],
        sequences=["brightness", "contrast"],
        frames=8,
        difficulty=2,
        batch_size=10,
    )
    data = section.data
    n = means.shape[0]
    clean_pred = means > 0.5
    clean_acc = float((clean_pred == (means > 0.45)).mean())
    assert data["clean"]["accuracy"] == pytest.approx(clean_acc)

    bright = data["perturbations"]["brightness"]
    for row, amount in zip(bright["severities"], BRIGHTNESS_SEVERITIES, strict=True):
        pred = means + amount > 0.5
        acc = float((pred == (means > 0.45)).mean())
        assert row["amount"] == pytest.approx(amount)
        assert row["accuracy"] == pytest.approx(acc)
        assert row["relative_drop"] == pytest.approx((clean_acc - acc) / clean_acc)
        assert row["changed"] == pytest.approx(float((pred != clean_pred).mean()))
    expected_fp = sweep_flips(means, 8, 2).sum() / (n * (8 - 2))
    assert expected_fp > 0
    assert bright["flip_probability"] == pytest.approx(expected_fp)
    assert bright["sequence"]["pairs_per_image"] == 6

    # Contrast keeps every image's mean: nothing changes, nothing flips.
    contrast = data["perturbations"]["contrast"]
    assert contrast["flip_probability"] == 0
    assert all(r["accuracy"] == pytest.approx(clean_acc) for r in contrast["severities"])
    assert contrast["mean_relative_drop"] == pytest.approx(0)
    drops = [r["relative_drop"] for r in bright["severities"]]
    assert bright["mean_relative_drop"] == pytest.approx(np.mean(drops))
    assert data["summary"]["mean_relative_drop"] == pytest.approx(np.mean(drops) / 2)
    assert data["summary"]["mean_flip_probability"] == pytest.approx(expected_fp / 2)


def test_multi_label_per_finding_flips() -> None:
    rng = np.random.default_rng(0)
    means = rng.uniform(0.3, 0.62, size=(20, 2))
    model = model_of(
        MeanThreshold("sigmoid", regions=2), Head.SIGMOID, ("top", "bottom"), task="multi-label"
    )
    labels = torch.as_tensor(means > 0.45).float()
    data = evaluate_perturbations(
        model,
        flat_images(means),
        labels,
        perturbations=["brightness"],
        severities=[1, 3],
        sequences=["brightness"],
        frames=6,
        difficulty=1,
    )
    seq = data["perturbations"]["brightness"]["sequence"]
    amounts = np.linspace(-0.2, 0.2, 6)
    pred = means[None] + amounts.reshape(-1, 1, 1) > 0.5  # [T, N, K]
    changed = pred[1:] != pred[:-1]
    per_finding = changed.sum(axis=(0, 1)) / (20 * 5)
    assert seq["flip_probability_per_finding"]["top"] == pytest.approx(per_finding[0])
    assert seq["flip_probability_per_finding"]["bottom"] == pytest.approx(per_finding[1])
    assert seq["flip_probability"] == pytest.approx(per_finding.mean())
    assert seq["any_finding_flip_probability"] == pytest.approx(
        changed.any(axis=2).sum() / (20 * 5)
    )
    assert data["metric"] == "auroc"
    row = data["perturbations"]["brightness"]["severities"][1]
    pred3 = means + 0.15 > 0.5
    assert row["accuracy"] == pytest.approx(float((pred3 == (means > 0.45)).all(1).mean()))
    assert row["finding_accuracy"] == pytest.approx(float((pred3 == (means > 0.45)).mean()))


def test_top_k_distance_for_three_classes() -> None:
    class Bands(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3)).view(-1, 1)
            centres = torch.tensor([[0.3, 0.45, 0.6]])
            return -200.0 * (m - centres) ** 2

    means = np.linspace(0.3, 0.6, 16)
    model = model_of(Bands(), Head.SOFTMAX, ("low", "mid", "high"))
    data = evaluate_perturbations(
        model,
        flat_images(means),
        torch.zeros(16, dtype=torch.long),
        perturbations=["brightness"],
        severities=[1],
        sequences=["brightness"],
        frames=5,
    )
    amounts = np.linspace(-0.2, 0.2, 5)
    scores = (
        -200.0 * (means[None, :, None] + amounts[:, None, None] - np.array([0.3, 0.45, 0.6])) ** 2
    )  # [T, N, 3]
    k = 2
    total = 0.0
    for t in range(1, 5):
        for i in range(16):
            ref_top = np.argsort(-scores[t - 1, i], kind="stable")[:k]
            rank = np.argsort(np.argsort(-scores[t, i], kind="stable"), kind="stable")
            total += sum(abs(j - min(rank[c], k)) for j, c in enumerate(ref_top))
    seq = data["perturbations"]["brightness"]["sequence"]
    assert seq["top_k_distance"] == pytest.approx(total / (16 * 4))
    assert seq["top_k_distance"] > 0


def test_constant_model_is_perfectly_stable() -> None:
    x = torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    model = model_of(Constant(2), Head.SOFTMAX, ("a", "b"))
    data = evaluate_perturbations(
        model, x, torch.tensor([0, 1, 1, 1, 0, 1]), frames=4, batch_size=4
    )
    table = data["perturbations"]
    assert len(data["parameters"]["sequences"]) == 12  # the ImageNet-P set
    for entry in table.values():
        if entry["sequence"]:
            assert entry["flip_probability"] == 0
        for row in entry["severities"]:
            assert row["changed"] == 0
            assert row["relative_drop"] == pytest.approx(0)
    assert data["summary"]["mean_flip_probability"] == 0


def test_modalities_pick_their_artefacts() -> None:
    grey = model_of(Constant(2), Head.SOFTMAX, ("a", "b"), channels=1)
    x1 = torch.rand(2, 1, SIZE, SIZE)
    y = torch.tensor([0, 1])
    data = evaluate_perturbations(grey, x1, y, severities=[1], sequences=[])
    names = set(data["parameters"]["corruptions"])
    assert {"grid_lines", "text_markers"} <= names
    assert "hair" not in names
    assert data["parameters"]["sequences"] == []
    colour = model_of(Constant(2), Head.SOFTMAX, ("a", "b"), channels=3)
    x3 = torch.rand(2, 3, SIZE, SIZE)
    fundus = evaluate_perturbations(colour, x3, y, severities=[1], sequences=[], modality="fundus")
    names = set(fundus["parameters"]["corruptions"])
    assert "uneven_illumination" in names
    assert not {"hair", "grid_lines", "air_bubbles"} & names


def _collect(
    analysis: PerturbationsAnalysis,
    model: DiagnosticModel,
    x: torch.Tensor,
    y: torch.Tensor,
    start: int,
    stop: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    return analysis.collect(
        BatchContext(
            model=model,
            clean=x[start:stop],
            labels=y[start:stop],
            adversarial={},
            indices=np.arange(start, stop),
            seed=7,
            params=params,
        )
    )


def test_sharding_and_redelivery_do_not_change_the_numbers(means: np.ndarray) -> None:
    model = model_of(MeanThreshold("softmax"), Head.SOFTMAX, ("dark", "bright"))
    x = flat_images(means)
    y = torch.as_tensor(means > 0.45).long()
    params = {"perturbations": ["brightness", "gamma"], "sequences": ["brightness"], "frames": 5}
    analysis = PerturbationsAnalysis()
    ctx = SummaryContext(
        labels=("dark", "bright"),
        task="single-label",
        head="softmax",
        attack_keys=[],
        params=params,
    )
    whole = analysis.summarize(merge_arrays([_collect(analysis, model, x, y, 0, 24, params)]), ctx)
    parts = [_collect(analysis, model, x, y, a, b, params) for a, b in ((0, 10), (10, 24))]
    split = analysis.summarize(merge_arrays(parts), ctx)
    twice = analysis.summarize(merge_arrays([*parts, parts[0]]), ctx)
    assert split.data == whole.data
    assert twice.data == whole.data
    assert split.data["example_index"] == 0


def test_figures_are_pngs(means: np.ndarray) -> None:
    model = model_of(MeanThreshold("softmax"), Head.SOFTMAX, ("dark", "bright"))
    section = perturbation_section(
        model,
        flat_images(means),
        torch.as_tensor(means > 0.45).long(),
        perturbations=["gaussian_noise", "brightness", "rotation"],
        severities=[1, 5],
        frames=4,
    )
    names = {f.name for f in section.figures}
    assert names == {
        "perturbations_metric_vs_severity",
        "perturbations_changed_vs_severity",
        "perturbations_flip_probability",
        "perturbations_examples_noise",
        "perturbations_examples_intensity",
        "perturbations_examples_geometry",
    }
    assert all(f.png.startswith(b"\x89PNG\r\n\x1a\n") for f in section.figures)
    assert section.to_json()["figures"] == [f"{f.name}.png" for f in section.figures]


def test_flags_name_the_fragile_perturbations(means: np.ndarray) -> None:
    model = model_of(MeanThreshold("softmax"), Head.SOFTMAX, ("dark", "bright"))
    section = perturbation_section(
        model,
        flat_images(means),
        torch.as_tensor(means > 0.5).long(),
        perturbations=["brightness", "contrast"],
        sequences=["brightness", "contrast"],
        frames=8,
    )
    assert any(f.startswith("brightness: accuracy drops") for f in section.flags)
    assert any(f.startswith("brightness: flip probability") for f in section.flags)
    assert not any(f.startswith("contrast") for f in section.flags)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"perturbations": ["fog"]}, "unknown perturbation 'fog'; valid: gaussian_noise"),
        ({"sequences": ["brightness", "brightness"]}, "perturbation names must be unique"),
        ({"severities": [0, 1]}, r"severities must be in 1\.\.5"),
        ({"severities": []}, "severities must not be empty"),
        ({"frames": 2, "difficulty": 2}, "frames must be greater than difficulty"),
        ({"difficulty": 4}, r"difficulty must be in \[1, 3\]"),
        ({"modality": "mri"}, "modality"),
        ({"fog": 1}, "unknown parameter 'fog' for analysis 'perturbations'"),
    ],
)
def test_invalid_parameters(params: dict[str, Any], message: str) -> None:
    model = model_of(Constant(2), Head.SOFTMAX, ("a", "b"))
    ctx = BatchContext(
        model=model,
        clean=torch.rand(2, 1, SIZE, SIZE),
        labels=torch.tensor([0, 1]),
        adversarial={},
        indices=np.arange(2),
        seed=0,
        params=params,
    )
    with pytest.raises(InvalidParametersError, match=message):
        PerturbationsAnalysis().collect(ctx)


def test_injected_keys_are_ignored() -> None:
    model = model_of(Constant(2), Head.SOFTMAX, ("a", "b"))
    ctx = BatchContext(
        model=model,
        clean=torch.rand(2, 1, SIZE, SIZE),
        labels=torch.tensor([0, 1]),
        adversarial={},
        indices=np.arange(2),
        seed=0,
        params={"attack_stats": {}, "perturbations": ["jpeg"], "sequences": [], "severities": [2]},
    )
    arrays = PerturbationsAnalysis().collect(ctx)
    assert sorted(k for k in arrays if k.startswith("probs.")) == ["probs.jpeg.2"]
    assert arrays["probs.jpeg.2"].shape == (2, 2)
    assert arrays["example.frames"].shape == (1, 1, 2, 1, SIZE, SIZE)
