"""What every attack shares: model state, inputs, masks, eps = 0, quantization, seeds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models import heads
from models.errors import ConflictError, InvalidParametersError, LabelMismatchError
from workers.attacks import FittedAttack, get_attack

#: Quick settings for every attack (the budgeted ones at eps = 16/255).
QUICK: dict[str, dict[str, Any]] = {
    "fgsm": {"eps": 16 / 255},
    "pgd": {"eps": 16 / 255, "steps": 10},
    "bim": {"eps": 16 / 255, "steps": 10},
    "apgd": {"eps": 16 / 255, "steps": 10},
    "autoattack": {"eps": 16 / 255, "steps": 10, "queries": 50},
    "square": {"eps": 16 / 255, "queries": 100},
    "deepfool": {"steps": 20},
    "cw_l2": {"steps": 20, "search_steps": 2, "lr": 0.05},
    "min_eps": {"eps_max": 32 / 255, "steps": 5, "search_steps": 3},
    "gap": {"eps": 16 / 255, "width": 4, "blocks": 1, "epochs": 1},
    "uap": {"eps": 16 / 255, "epochs": 1},
}
BUDGETED = ["fgsm", "pgd", "bim", "apgd", "autoattack", "square", "gap", "uap"]


def build(name: str, trained: Any, **overrides: Any) -> Any:
    attack = get_attack(name, **{**QUICK[name], **overrides})
    if isinstance(attack, FittedAttack):
        attack.fit(trained.model, trained.train_images[:64], trained.train_labels[:64])
    return attack


def fitted(name: str, **overrides: Any) -> FittedAttack[Any]:
    attack = get_attack(name, **{**QUICK[name], **overrides})
    assert isinstance(attack, FittedAttack)
    return attack


def test_quick_settings_cover_every_attack() -> None:
    from workers.attacks import list_attacks

    assert sorted(QUICK) == list_attacks()


@pytest.mark.parametrize("name", BUDGETED)
def test_eps_zero_changes_nothing(name: str, trained: dict) -> None:
    t = trained["softmax-2"]
    result = build(name, t, eps=0.0)(t.model, t.images, t.labels)
    assert torch.equal(result.images, t.images)
    assert not result.success.any()
    assert torch.all(result.linf == 0)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_model_mode_and_flags_are_restored(name: str, trained: dict) -> None:
    t = trained["softmax-2"]
    attack = build(name, t)
    model = t.model
    model.train()
    model.net.features[1].eval()  # a frozen batch norm inside a training model
    first = next(model.net.parameters())
    first.requires_grad_(False)
    before_modes = [m.training for m in model.modules()]
    before_flags = [p.requires_grad for p in model.parameters()]
    try:
        attack(model, t.images[:8], t.labels[:8])
        assert [m.training for m in model.modules()] == before_modes
        assert [p.requires_grad for p in model.parameters()] == before_flags
        assert all(p.grad is None for p in model.parameters())
    finally:
        first.requires_grad_(True)
        model.eval()


class _Exploding(nn.Module):
    """Raises on its ``limit``-th forward, to fail in the middle of an attack."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.head = inner.head
        self.limit = limit
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.limit:
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("name", ["pgd", "square", "deepfool", "apgd"])
def test_model_state_is_restored_on_error(name: str, trained: dict) -> None:
    t = trained["softmax-2"]
    model = _Exploding(t.model, limit=3)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        build(name, t)(model, t.images[:8], t.labels[:8])
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    t.model.eval()


@pytest.mark.parametrize("name", BUDGETED)
def test_mask_confines_the_perturbation(name: str, trained: dict) -> None:
    t = trained["multi-label"]
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    attack = get_attack(name, **QUICK[name])
    if isinstance(attack, FittedAttack):
        attack.fit(t.model, t.train_images[:64], t.train_labels[:64], mask=mask)
    result = attack(t.model, t.images, t.labels, mask=mask.expand(len(t.images), 1, 16, 16))
    delta = (result.images - t.images).abs()
    assert torch.all(delta * (1 - mask) == 0)
    assert delta.sum() > 0


@pytest.mark.parametrize("name", ["deepfool", "cw_l2", "min_eps"])
def test_mask_confines_minimum_norm_attacks(name: str, trained: dict) -> None:
    t = trained["softmax-2"]
    mask = torch.zeros(len(t.images), 1, 16, 16)
    mask[..., :, :8] = 1
    result = get_attack(name, **QUICK[name])(t.model, t.images, t.labels, mask=mask)
    assert torch.all((result.images - t.images) * (1 - mask) == 0)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_success_is_judged_on_the_returned_quantized_images(name: str, trained: dict) -> None:
    t = trained["multi-label"]
    result = build(name, t)(t.model, t.images, t.labels)
    images = result.images
    assert torch.allclose(images * 255, (images * 255).round(), atol=1e-4)
    with torch.no_grad():
        outputs = t.model(images)
    wrong = ~heads.correct(outputs, t.labels, t.head, t.model.thresholds)
    assert torch.equal(result.success, wrong)
    assert torch.equal(result.predictions, heads.predict(outputs, t.head, t.model.thresholds))
    assert torch.allclose(result.outputs, outputs, atol=1e-5)
    flipped = (result.predictions != t.labels).sum(1)
    assert torch.equal(result.flipped, flipped)


def test_quantize_false_keeps_continuous_images(trained: dict) -> None:
    t = trained["softmax-2"]
    result = get_attack("pgd", eps=5.5 / 255, quantize=False)(t.model, t.images, t.labels)
    off_grid = ((result.images * 255) - (result.images * 255).round()).abs() > 1e-3
    assert off_grid.any()


@pytest.mark.parametrize("name", ["pgd", "square", "apgd", "deepfool"])
def test_a_seed_gives_the_same_result(name: str, trained: dict) -> None:
    t = trained["softmax-4"]
    a = get_attack(name, **QUICK[name])(t.model, t.images, t.labels)
    b = get_attack(name, **QUICK[name])(t.model, t.images, t.labels)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.iterations, b.iterations)
    g = torch.Generator().manual_seed(0)
    c = get_attack(name, **QUICK[name])(t.model, t.images, t.labels, generator=g)
    assert c.images.shape == a.images.shape


def test_different_seeds_differ(trained: dict) -> None:
    t = trained["softmax-4"]
    a = get_attack("pgd", eps=8 / 255, seed=1)(t.model, t.images, t.labels)
    b = get_attack("pgd", eps=8 / 255, seed=2)(t.model, t.images, t.labels)
    assert not torch.equal(a.images, b.images)


def test_result_fields(trained: dict) -> None:
    t = trained["softmax-2"]
    n = len(t.images)
    result = get_attack("pgd", eps=16 / 255, steps=7)(t.model, t.images, t.labels)
    assert result.success.dtype == torch.bool
    assert result.success.shape == (n,)
    assert result.iterations.dtype == torch.long
    assert torch.all(result.iterations == 7)
    assert result.linf.shape == result.l2.shape == result.loss.shape == (n,)
    assert result.norm_found is None
    assert result.attack == "pgd"
    assert result.params["steps"] == 7
    arrays = result.to_numpy()
    assert set(arrays) >= {"success", "linf", "l2", "iterations", "loss", "flipped"}
    assert all(isinstance(a, np.ndarray) and a.shape[0] == n for a in arrays.values())
    summary = result.summary()
    assert summary["success_rate"] == pytest.approx(float(result.success.float().mean()))
    assert summary["linf_max"] == pytest.approx(16 / 255, abs=1e-6)
    # The reported loss is the true label's loss on the returned images.
    with torch.no_grad():
        expected = heads.loss(t.model(result.images), t.labels, t.head, reduction="none")
    assert torch.allclose(result.loss, expected, atol=1e-4)


def test_plain_module_needs_a_head(trained: dict) -> None:
    t = trained["softmax-2"]
    plain = nn.Sequential(t.model)  # no .head attribute
    with pytest.raises(InvalidParametersError, match="pass head="):
        get_attack("fgsm")(plain, t.images, t.labels)
    result = get_attack("fgsm", eps=16 / 255)(plain, t.images, t.labels, head="softmax")
    reference = get_attack("fgsm", eps=16 / 255)(t.model, t.images, t.labels)
    assert torch.equal(result.images, reference.images)
    with pytest.raises(InvalidParametersError, match="unknown head 'softmaxx'"):
        get_attack("fgsm")(plain, t.images, t.labels, head="softmaxx")


def test_inputs_are_validated(trained: dict) -> None:
    t = trained["softmax-2"]
    attack = get_attack("fgsm")
    with pytest.raises(InvalidParametersError, match=r"images must be in \[0, 1\]"):
        attack(t.model, t.images * 2, t.labels)
    with pytest.raises(InvalidParametersError, match="float tensor"):
        attack(t.model, t.images[0], t.labels)
    with pytest.raises(LabelMismatchError, match=r"class indices must be in \[0, 1\]"):
        attack(t.model, t.images, t.labels + 5)
    with pytest.raises(LabelMismatchError, match="single-label labels"):
        attack(t.model, t.images, t.labels.float())
    m = trained["multi-label"]
    with pytest.raises(LabelMismatchError, match="multi-label labels"):
        attack(m.model, m.images, m.labels[:, :2])
    with pytest.raises(InvalidParametersError, match="mask must have shape"):
        attack(t.model, t.images, t.labels, mask=torch.ones(3, 1, 16, 16))


def test_targets_and_findings_are_checked(trained: dict) -> None:
    t, m = trained["softmax-4"], trained["multi-label"]
    with pytest.raises(InvalidParametersError) as info:
        get_attack("pgd", target="c9")(t.model, t.images, t.labels)
    assert str(info.value) == "unknown target label 'c9'; valid: 'least-likely', c0, c1, c2, c3"
    with pytest.raises(InvalidParametersError, match=r"target must be in \[0, 3\]"):
        get_attack("pgd", target=4)(t.model, t.images, t.labels)
    with pytest.raises(InvalidParametersError, match="single-label models"):
        get_attack("pgd", target=1)(m.model, m.images, m.labels)
    with pytest.raises(InvalidParametersError, match="multi-label"):
        get_attack("pgd", finding=0)(t.model, t.images, t.labels)
    with pytest.raises(InvalidParametersError, match="unknown finding 'z'; valid: a, b, c"):
        get_attack("pgd", finding="z")(m.model, m.images, m.labels)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("softmax-2", {"loss": "dlr"}, "untargeted DLR loss needs at least 3 classes"),
        ("softmax-2", {"loss": "dlr", "target": 1}, "targeted DLR loss needs at least 4"),
        ("binary-logit", {"loss": "dlr"}, "needs a softmax head"),
        ("multi-label", {"loss": "dlr"}, "needs a softmax head"),
    ],
)
def test_dlr_refuses_models_it_is_not_defined_for(
    kind: str, params: dict, message: str, trained: dict
) -> None:
    t = trained[kind]
    with pytest.raises(InvalidParametersError, match=message):
        get_attack("apgd", **params)(t.model, t.images, t.labels)


def test_fitted_attacks_refuse_to_run_unfitted_or_on_another_model(
    trained: dict, tmp_path: Any
) -> None:
    t, other = trained["softmax-2"], trained["binary-logit"]
    for name in ("gap", "uap"):
        attack = get_attack(name, **QUICK[name])
        assert isinstance(attack, FittedAttack)
        with pytest.raises(ConflictError, match="must be fitted first"):
            attack(t.model, t.images, t.labels)
        attack.fit(t.model, t.train_images[:64], t.train_labels[:64])
        with pytest.raises(InvalidParametersError, match="fitted for another model"):
            attack(other.model, other.images, other.labels)
        path = tmp_path / attack.cache_name(t.model)
        attack.save(path)
        with pytest.raises(InvalidParametersError, match="fitted with other parameters"):
            fitted(name, eps=8 / 255).load(path)
        with pytest.raises(InvalidParametersError, match="fitted for another model"):
            fitted(name).load(path, other.model)
        # quantize/autocast do not change the fitted state.
        loaded = fitted(name, quantize=False).load(path, t.model)
        assert torch.allclose(
            loaded(t.model, t.images, t.labels).images,
            attack(t.model, t.images, t.labels).images,
            atol=1 / 255 + 1e-6,
        )
