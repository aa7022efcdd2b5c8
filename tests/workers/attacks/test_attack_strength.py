"""Attacks do what they claim: budgets hold, strength orders, targets are reached."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from models import heads
from models.wrapper import DiagnosticModel
from workers.attacks import FittedAttack, get_attack, min_eps
from workers.attacks import functional as F

#: Settings under which each attack must fool a good share of each tiny model.
STRONG: dict[str, dict[str, Any]] = {
    "fgsm": {"eps": 16 / 255},
    "pgd": {"eps": 16 / 255, "steps": 10},
    "bim": {"eps": 16 / 255, "steps": 10},
    "apgd": {"eps": 16 / 255, "steps": 20},
    "autoattack": {"eps": 16 / 255, "steps": 10, "queries": 100},
    "square": {"eps": 16 / 255, "queries": 200},
    "deepfool": {},
    "cw_l2": {"steps": 30, "search_steps": 3, "lr": 0.05},
    "min_eps": {"eps_max": 32 / 255, "steps": 10, "search_steps": 4},
    "gap": {"eps": 16 / 255, "width": 8, "blocks": 1, "epochs": 4},
    "uap": {"eps": 16 / 255, "epochs": 3},
}
LINF_BUDGET = {"fgsm", "pgd", "bim", "apgd", "autoattack", "square", "gap", "uap"}


def _run(name: str, t: Any, **overrides: Any) -> Any:
    attack = get_attack(name, **{**STRONG[name], **overrides})
    if isinstance(attack, FittedAttack):
        attack.fit(t.model, t.train_images, t.train_labels)
    return attack(t.model, t.images, t.labels)


@pytest.mark.parametrize("name", sorted(STRONG))
def test_every_attack_fools_every_head_within_its_budget(name: str, any_head: Any) -> None:
    t = any_head
    assert t.accuracy(t.images) == 1.0
    result = _run(name, t)
    accuracy = t.accuracy(result.images)
    assert accuracy <= 0.7, f"{name} on {t.head}: adversarial accuracy {accuracy:.2f}"
    assert result.success_rate == pytest.approx(1.0 - accuracy)
    if name in LINF_BUDGET:
        assert torch.all(result.linf <= STRONG[name]["eps"] + 1e-6)
    if name == "min_eps":
        found = result.norm_found
        assert torch.all(result.linf <= found + 1e-6)
        assert torch.all(found[result.success] <= STRONG[name]["eps_max"])
    elif result.norm_found is not None:  # DeepFool, C&W: the size of the success
        assert torch.equal(torch.isfinite(result.norm_found), result.success)
        assert torch.allclose(result.norm_found[result.success], result.l2[result.success])


@pytest.mark.parametrize("kind", ["softmax-2", "binary-logit", "multi-label"])
def test_l2_budgets_hold_after_quantization(kind: str, trained: dict) -> None:
    t = trained[kind]
    for eps in (0.25, 0.5, 1.0):
        result = get_attack("pgd", norm="l2", eps=eps, steps=10)(t.model, t.images, t.labels)
        assert torch.all(result.l2 <= eps + 1e-5)
        assert torch.all(result.l2 > 0.5 * eps)


def test_pgd_is_at_least_as_strong_as_fgsm(trained: dict) -> None:
    strictly = 0
    for kind in ("softmax-2", "softmax-4", "binary-logit", "multi-label"):
        t = trained[kind]
        for eps in (4 / 255, 8 / 255, 12 / 255, 16 / 255):
            pgd = get_attack("pgd", eps=eps, steps=10)(t.model, t.images, t.labels)
            fgsm = get_attack("fgsm", eps=eps)(t.model, t.images, t.labels)
            assert pgd.success.sum() >= fgsm.success.sum(), (kind, eps * 255)
            strictly += int(pgd.success.sum() > fgsm.success.sum())
    assert strictly >= 2


@pytest.mark.parametrize("kind", ["softmax-2", "softmax-4", "binary-logit", "multi-label"])
def test_success_grows_with_eps(kind: str, trained: dict) -> None:
    t = trained[kind]
    rates = [
        get_attack("pgd", eps=e / 255, steps=10)(t.model, t.images, t.labels).success_rate
        for e in (0, 2, 4, 8, 12, 16, 24)
    ]
    assert rates[0] == 0.0
    assert rates == sorted(rates)
    assert rates[-1] >= 0.95


@pytest.mark.parametrize("target", [2, "c3", "least-likely"])
@pytest.mark.parametrize("name", ["pgd", "apgd", "fgsm", "square"])
def test_targeted_attacks_reach_their_targets(name: str, target: Any, trained: dict) -> None:
    t = trained["softmax-4"]
    eps = {"fgsm": 32 / 255}.get(name, 24 / 255)
    params: dict[str, Any] = {"eps": eps, "target": target}
    if name in ("pgd", "apgd"):
        params["steps"] = 20
    if name == "square":
        params["queries"] = 300
    result = get_attack(name, **params)(t.model, t.images, t.labels)
    if target == "least-likely":
        with torch.no_grad():
            probs = t.model.probabilities(t.images)
        wanted = probs.scatter(1, t.labels.view(-1, 1), 2.0).argmin(1)
    else:
        wanted = torch.full_like(t.labels, 2 if target == 2 else 3)
    reached = result.predictions == wanted
    assert torch.equal(result.success, reached)
    assert result.success_rate >= (0.3 if name == "fgsm" else 0.6)


def test_targeted_dlr_and_binary_targets(trained: dict) -> None:
    t = trained["softmax-4"]
    result = get_attack("apgd", eps=24 / 255, steps=20, loss="dlr", target=1)(
        t.model, t.images, t.labels
    )
    assert result.success_rate >= 0.6
    assert torch.all(result.predictions[result.success] == 1)
    b = trained["binary-logit"]
    zeros = b.labels == 0
    result = get_attack("pgd", eps=24 / 255, target="malignant")(
        b.model, b.images[zeros], b.labels[zeros]
    )
    assert result.success_rate >= 0.9
    assert torch.all(result.predictions[result.success] == 1)


def test_multi_label_attacks_flip_findings(trained: dict) -> None:
    t = trained["multi-label"]
    untargeted = get_attack("pgd", eps=16 / 255, steps=10)(t.model, t.images, t.labels)
    assert untargeted.success_rate >= 0.9
    assert torch.all(untargeted.flipped[untargeted.success] >= 1)
    assert untargeted.flipped.float().mean() >= 1.0

    every = get_attack("pgd", eps=32 / 255, steps=20, target="least-likely")(
        t.model, t.images, t.labels
    )
    assert every.success_rate >= 0.5
    assert torch.all(every.flipped[every.success] == 3)
    assert every.flipped.float().mean() > untargeted.flipped.float().mean()

    one = get_attack("pgd", eps=16 / 255, steps=10, finding="b")(t.model, t.images, t.labels)
    assert one.success_rate >= 0.5
    assert torch.equal(one.success, one.predictions[:, 1] != t.labels[:, 1])


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a gradient was requested")


class _Guard(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NoBackward.apply(x)


def test_square_needs_no_gradient(trained: dict) -> None:
    t = trained["softmax-2"]
    guarded = DiagnosticModel(nn.Sequential(_Guard(), t.model.net), t.model.card, t.head)
    guarded.eval()
    with pytest.raises(AssertionError, match="gradient was requested"):
        get_attack("fgsm")(guarded, t.images, t.labels)
    result = get_attack("square", eps=16 / 255, queries=300)(guarded, t.images, t.labels)
    assert t.accuracy(result.images) <= 0.3
    assert torch.all(result.iterations <= 300)
    assert result.iterations.float().mean() < 300  # fooled images stop querying


def test_autoattack_is_at_least_as_strong_as_its_first_stage(trained: dict) -> None:
    t = trained["softmax-4"]
    for eps in (6 / 255, 8 / 255):
        first = get_attack("apgd", eps=eps, steps=10)(t.model, t.images, t.labels)
        cascade = get_attack("autoattack", eps=eps, steps=10, queries=100, target_classes=3)(
            t.model, t.images, t.labels
        )
        assert torch.all(cascade.success[first.success])
        assert cascade.success.sum() >= first.success.sum()


@pytest.mark.parametrize("kind", ["softmax-2", "multi-label"])
def test_trained_gap_beats_random_noise_of_the_same_norm(kind: str, trained: dict) -> None:
    t = trained[kind]
    eps = 16 / 255
    gap = get_attack("gap", eps=eps, width=8, blocks=1, epochs=4)
    assert isinstance(gap, FittedAttack)
    gap.fit(t.model, t.train_images, t.train_labels)
    result = gap(t.model, t.images, t.labels)
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, t.images.shape, generator=g).float() * 2 - 1
    noisy = F.quantize_8bit((t.images + eps * signs).clamp(0, 1), t.images, eps)
    noise_fooled = 1.0 - t.accuracy(noisy)
    assert result.success_rate >= noise_fooled + 0.4
    assert torch.all(result.linf <= eps + 1e-6)


def test_minimum_eps_search_brackets_each_image(trained: dict) -> None:
    t = trained["softmax-4"]
    found = min_eps(t.model, t.images, t.labels, eps_max=32 / 255, steps=10, search_steps=5)
    assert found.shape == (len(t.images),)
    assert torch.all(found > 0)
    assert torch.all(torch.isfinite(found))
    # PGD at the budget found fools more images than at half of it.
    per_image_hi = get_attack("pgd", eps=float(found.median()), steps=10)
    at_median = per_image_hi(t.model, t.images, t.labels).success_rate
    assert 0.2 <= at_median <= 1.0
    assert float((found <= found.median()).float().mean()) >= 0.5
    # Not found within a tiny budget: inf.
    tiny = min_eps(t.model, t.images, t.labels, eps_max=1 / 255, steps=5, search_steps=2)
    assert torch.all(torch.isinf(tiny) | (tiny <= 1 / 255))
    assert torch.isinf(tiny).any()


def test_minimum_norm_attacks_find_small_perturbations(trained: dict) -> None:
    t = trained["softmax-2"]
    deepfool = _run("deepfool", t)
    cw = _run("cw_l2", t)
    pgd_l2 = get_attack("pgd", norm="l2", eps=float(cw.l2[cw.success].median()), steps=20)
    # A budget of C&W's median size lets PGD fool a fair share too (the sizes are real).
    assert pgd_l2(t.model, t.images, t.labels).success_rate >= 0.3
    assert deepfool.success_rate >= 0.9
    assert cw.success_rate >= 0.9
    with torch.no_grad():
        probs = heads.probabilities(t.model(cw.images), t.head)
    assert torch.all(probs.max(1).values[cw.success] < 1.0)
