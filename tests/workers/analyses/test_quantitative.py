"""``quantitative`` on arrays whose answers are known, and on a tiny model end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.card import Head, ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.base import BatchContext, SummaryContext, merge_arrays
from workers.analyses.quantitative import QuantitativeAnalysis

KEY4 = "pgd:eps=4/255"
KEY8 = "pgd:eps=8/255"
STRONG = "fgsm:eps=128/255"


def arrays_for(labels: np.ndarray, clean: np.ndarray, adv: dict[str, np.ndarray],
               min_eps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    n = labels.shape[0]
    out: dict[str, np.ndarray] = {
        "index": np.arange(n),
        "labels": labels,
        "clean_probs": clean.astype(np.float32),
        "min_eps": np.full(n, np.nan) if min_eps is None else min_eps,
    }
    for key, probs in adv.items():
        out[attack_field("adv_index", key)] = np.arange(n)
        out[attack_field("adv_probs", key)] = probs.astype(np.float32)
    return out


def context(task: str, labels: tuple[str, ...], keys: list[str], **params: Any) -> SummaryContext:
    return SummaryContext(
        labels=labels,
        task=task,
        head="sigmoid" if task == "multi-label" else "softmax",
        attack_keys=keys,
        params={"n_bootstrap": 200, **params},
        thresholds=[0.5] * len(labels) if task == "multi-label" else None,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def single_label_case(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2)) + 1.5 * np.eye(2)[labels]  # a decent classifier
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


def test_identical_adversarial_has_zero_fooling(rng: np.random.Generator) -> None:
    labels, probs = single_label_case(rng)
    sec = QuantitativeAnalysis().summarize(
        arrays_for(labels, probs, {KEY4: probs}), context("single-label", ("a", "b"), [KEY4])
    )
    block = sec.data["attacks"][KEY4]
    assert block["fooling_rate"] == 0.0
    assert block["attack_success_rate"] == 0.0
    assert block["adversarial"]["accuracy"] == block["clean"]["accuracy"]
    assert block["accuracy_drop"] == 0.0


def test_flipped_predictions_fool_every_image(rng: np.random.Generator) -> None:
    labels, probs = single_label_case(rng)
    flipped = probs[:, ::-1]
    sec = QuantitativeAnalysis().summarize(
        arrays_for(labels, probs, {KEY4: flipped}), context("single-label", ("a", "b"), [KEY4])
    )
    block = sec.data["attacks"][KEY4]
    clean_acc = np.mean(probs.argmax(1) == labels)
    assert block["fooling_rate"] == 1.0
    assert block["attack_success_rate"] == 1.0
    assert block["adversarial"]["accuracy"] == pytest.approx(1.0 - clean_acc)
    # AUROC of reversed scores is 1 - AUROC.
    for lbl in ("a", "b"):
        assert block["adversarial"]["auroc"][lbl] == pytest.approx(
            1.0 - block["clean"]["auroc"][lbl]
        )


def test_fooling_rate_and_success_rate_match_predictions(rng: np.random.Generator) -> None:
    n, k = 300, 3
    labels = rng.integers(0, k, n)
    clean = rng.dirichlet(np.ones(k), n)
    adv = np.where(rng.random((n, 1)) < 0.4, rng.dirichlet(np.ones(k), n), clean)
    sec = QuantitativeAnalysis().summarize(
        arrays_for(labels, clean, {KEY4: adv}), context("single-label", ("x", "y", "z"), [KEY4])
    )
    block = sec.data["attacks"][KEY4]
    pc, pa = clean.argmax(1), adv.argmax(1)
    assert block["fooling_rate"] == pytest.approx(np.mean(pc != pa))
    initially = pc == labels
    made_wrong = pa[initially] != labels[initially]
    assert block["attack_success_rate"] == pytest.approx(np.mean(made_wrong))
    assert block["n_initially_correct"] == int(initially.sum())
    wrong = pa != labels
    assert block["adversarial"]["mean_confidence_wrong"] == pytest.approx(adv.max(1)[wrong].mean())
    assert 0.0 <= block["fooling_rate"] <= 1.0


def test_multi_label_uses_card_thresholds(rng: np.random.Generator) -> None:
    n = 400
    labels = (rng.random((n, 3)) < 0.3).astype(np.int8)
    clean = np.clip(0.35 * labels + rng.random((n, 3)) * 0.65, 0, 1)
    adv = np.clip(clean + rng.normal(0, 0.2, (n, 3)), 0, 1)
    ctx = context("multi-label", ("A", "B", "C"), [KEY4])
    ctx.thresholds = [0.7, 0.5, 0.6]
    sec = QuantitativeAnalysis().summarize(arrays_for(labels, clean, {KEY4: adv}), ctx)
    t = np.array(ctx.thresholds)
    pred = clean >= t
    assert sec.data["clean"]["accuracy"] == pytest.approx(np.mean((pred == labels).all(1)))
    sens_a = (pred[:, 0] & (labels[:, 0] == 1)).sum() / (labels[:, 0] == 1).sum()
    assert sec.data["clean"]["sensitivity"]["A"] == pytest.approx(sens_a)
    flips = (pred != (adv >= t)).any(1)
    assert sec.data["attacks"][KEY4]["fooling_rate"] == pytest.approx(flips.mean())
    per = sec.data["attacks"][KEY4]["fooling_rate_per_finding"]
    assert per["B"] == pytest.approx(np.mean(pred[:, 1] != (adv[:, 1] >= 0.5)))


def test_bootstrap_interval_contains_estimate_and_narrows(rng: np.random.Generator) -> None:
    widths = []
    for n in (60, 960):
        labels, probs = single_label_case(rng, n)
        sec = QuantitativeAnalysis().summarize(
            arrays_for(labels, probs, {}), context("single-label", ("a", "b"), [])
        )
        clean = sec.data["clean"]
        lo, hi = clean["accuracy_ci"]
        assert lo <= clean["accuracy"] <= hi
        alo, ahi = clean["mean_auroc_ci"]
        assert alo <= clean["mean_auroc"] <= ahi
        widths.append((hi - lo, ahi - alo))
    assert widths[1][0] < widths[0][0] / 2
    assert widths[1][1] < widths[0][1] / 2


def test_bootstrap_is_seeded(rng: np.random.Generator) -> None:
    labels, probs = single_label_case(rng)
    arrays = arrays_for(labels, probs, {})
    a = QuantitativeAnalysis().summarize(arrays, context("single-label", ("a", "b"), [], seed=1))
    b = QuantitativeAnalysis().summarize(arrays, context("single-label", ("a", "b"), [], seed=1))
    c = QuantitativeAnalysis().summarize(arrays, context("single-label", ("a", "b"), [], seed=2))
    assert a.data["clean"]["accuracy_ci"] == b.data["clean"]["accuracy_ci"]
    assert a.data["clean"]["mean_auroc_ci"] != c.data["clean"]["mean_auroc_ci"]


def test_undefined_auroc_is_null_and_json_is_strict() -> None:
    labels = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], dtype=np.int8)  # finding 0 always on
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.9]])
    sec = QuantitativeAnalysis().summarize(
        arrays_for(labels, probs, {KEY4: probs}), context("multi-label", ("A", "B"), [KEY4])
    )
    clean = sec.data["clean"]
    assert clean["auroc"]["A"] is None
    assert clean["auroc"]["B"] == 1.0
    assert clean["mean_auroc"] == 1.0  # the mean over the defined findings
    json.dumps(sec.to_json(), allow_nan=False)


def test_robustness_curve_is_sorted_and_starts_clean(rng: np.random.Generator) -> None:
    labels, probs = single_label_case(rng)
    worse = probs.copy()
    worse[:100] = worse[:100, ::-1]
    keys = [KEY8, KEY4, "square:eps=8/255"]
    sec = QuantitativeAnalysis().summarize(
        arrays_for(labels, probs, {KEY8: probs[:, ::-1], KEY4: worse, "square:eps=8/255": probs}),
        context("single-label", ("a", "b"), keys),
    )
    curve = sec.data["robustness_curves"]["pgd"]
    assert [p["eps_255"] for p in curve] == pytest.approx([0, 4, 8])
    assert curve[0]["accuracy"] == sec.data["clean"]["accuracy"]
    assert curve[2]["accuracy"] == sec.data["attacks"][KEY8]["adversarial"]["accuracy"]
    assert set(sec.data["robustness_curves"]) == {"pgd", "square"}
    names = [f.name for f in sec.figures]
    assert "quantitative_robustness_curve" in names
    assert all(f.png.startswith(b"\x89PNG") for f in sec.figures)


def test_min_eps_distribution(rng: np.random.Generator) -> None:
    labels, probs = single_label_case(rng, 50)
    min_eps = rng.uniform(0, 10 / 255, 50)
    min_eps[:5] = np.inf  # not fooled within the search
    sec = QuantitativeAnalysis().summarize(
        arrays_for(labels, probs, {}, min_eps), context("single-label", ("a", "b"), [])
    )
    dist = sec.data["min_eps"]
    assert dist["n_images"] == 50
    assert dist["n_not_fooled"] == 5
    assert sum(dist["histogram"]["counts"]) == 45
    assert dist["median"] == pytest.approx(np.median(min_eps[5:]))
    assert "quantitative_min_eps" in [f.name for f in sec.figures]
    sec_none = QuantitativeAnalysis().summarize(
        arrays_for(labels, probs, {}), context("single-label", ("a", "b"), [])
    )
    assert sec_none.data["min_eps"] is None


def test_parameters_are_validated() -> None:
    with pytest.raises(InvalidParametersError, match=r"confidence must be in \(0, 1\)"):
        QuantitativeAnalysis().parse_params({"confidence": 1.5})
    with pytest.raises(InvalidParametersError, match="unknown parameter 'n_boot'"):
        QuantitativeAnalysis().parse_params({"n_boot": 10})


# ---------------------------------------------------------------------- tiny model end to end


def tiny_model() -> DiagnosticModel:
    torch.manual_seed(0)
    card = ModelCard(name="tiny", task="single-label", labels=("benign", "melanoma"),
                     input={"channels": 1, "height": 8, "width": 8})
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    return DiagnosticModel(net, card, Head.SOFTMAX).eval()


def fgsm(model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x)
    adv = (x + eps * g.sign()).clamp(0, 1).detach()
    return (adv * 255).round() / 255


def collect_batches(model: DiagnosticModel, n_batches: int = 4) -> list[dict[str, np.ndarray]]:
    analysis = QuantitativeAnalysis()
    gen = torch.Generator().manual_seed(1)
    parts = []
    for b in range(n_batches):
        x = (torch.rand(16, 1, 8, 8, generator=gen) * 255).round() / 255  # 8-bit images
        with torch.no_grad():
            y = model(x).argmax(1)  # labels the model gets right: accuracy 1 on clean
        adv = {key: fgsm(model, x, y, eps) for key, eps in ((KEY4, 4 / 255), (STRONG, 0.5))}
        stats = {KEY4: {"linf": np.full(16, 4 / 255), "l2": np.full(16, 0.1),
                        "success": np.zeros(16, dtype=bool)}}
        ctx = BatchContext(model=model, clean=x, labels=y, adversarial=adv,
                           indices=np.arange(b * 16, (b + 1) * 16), seed=b,
                           params={"attack_stats": stats})
        parts.append(analysis.collect(ctx))
    return parts


def test_end_to_end_on_a_tiny_model() -> None:
    model = tiny_model()
    parts = collect_batches(model)
    ctx = context("single-label", model.labels, [KEY4, STRONG])
    sec = QuantitativeAnalysis().summarize(merge_arrays(parts), ctx)
    assert sec.data["n_images"] == 64
    assert sec.data["clean"]["accuracy"] == 1.0
    strong = sec.data["attacks"][STRONG]
    assert strong["adversarial"]["accuracy"] < 1.0
    assert strong["fooling_rate"] == pytest.approx(1.0 - strong["adversarial"]["accuracy"])
    measured = sec.data["attacks"][KEY4]["perturbation_measured"]
    assert measured["linf_max"] <= 4 / 255 + 1e-6
    assert sec.data["attacks"][KEY4]["perturbation"]["linf_mean"] == pytest.approx(4 / 255)
    assert sec.data["attacks"][KEY4]["attack_reported_success_rate"] == 0.0
    assert sec.data["attacks"][STRONG]["perturbation"] is None  # no stats from that attack
    assert strong["perturbation_measured"]["linf_max"] <= 128 / 255 + 1e-6
    assert strong["adversarial"]["accuracy"] < sec.data["attacks"][KEY4]["adversarial"]["accuracy"]


def test_shards_merged_out_of_order_or_twice_give_the_same_section() -> None:
    model = tiny_model()
    parts = collect_batches(model)
    ctx = context("single-label", model.labels, [KEY4, STRONG])
    ordered = QuantitativeAnalysis().summarize(merge_arrays(parts), ctx)
    # Attack arrays from other shards than the clean ones, one shard redelivered twice.
    clean_only = [{k: v for k, v in p.items() if "[" not in k} for p in parts]
    attack_only = [{k: v for k, v in p.items() if "[" in k} for p in parts]
    shuffled = merge_arrays([*clean_only[::-1], clean_only[1], *attack_only[2:],
                             *attack_only[:2]])
    again = QuantitativeAnalysis().summarize(shuffled, ctx)
    assert json.dumps(again.data, sort_keys=True) == json.dumps(ordered.data, sort_keys=True)
