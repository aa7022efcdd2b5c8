"""Registry, parameter validation, the learning-rate schedule and the head-aware losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.card import Head
from models.errors import InvalidParametersError
from models.heads import loss as head_loss
from workers.defenses import defense_class, get_defense, list_defenses
from workers.defenses.losses import kl_divergence, kl_per_finding, mart_loss
from workers.defenses.maadvt import MAAdvTParams
from workers.defenses.mpadvt import MPAdvTParams
from workers.defenses.pgd_at import PGDATParams
from workers.defenses.trades import TRADESParams
from workers.defenses.training import learning_rate


def test_registry_lists_the_five_methods() -> None:
    assert list_defenses() == ["clean", "maadvt", "mpadvt", "noise", "pgd_at", "trades"]
    for name in list_defenses():
        assert defense_class(name).name == name


def test_unknown_defense_lists_valid_names() -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_defense("adv_dropout")
    assert info.value.message == (
        "unknown defense 'adv_dropout'; valid: clean, maadvt, mpadvt, noise, pgd_at, trades"
    )


def test_defaults_per_method() -> None:
    pgd = get_defense("pgd_at").params
    assert isinstance(pgd, PGDATParams)
    assert (pgd.eps, pgd.steps) == (4 / 255, 7)
    assert pgd.attack_step() == pytest.approx(2.5 * (4 / 255) / 7)
    assert pgd.validation_budget() == (4 / 255, 10, pytest.approx(2.5 * (4 / 255) / 10))
    trades = get_defense("trades").params
    assert isinstance(trades, TRADESParams)
    assert trades.beta == 6.0
    mart = get_defense("maadvt").params
    assert isinstance(mart, MAAdvTParams)
    assert mart.beta == 6.0
    mp = get_defense("mpadvt").params
    assert isinstance(mp, MPAdvTParams)
    assert (mp.eps_min, mp.eps_max, mp.steps_min, mp.steps_max, mp.p) == (0.01, 0.04, 1, 9, 0.5)
    assert mp.validation_budget()[0] == pytest.approx(0.025)
    assert get_defense("clean").params.select_by == "clean"
    assert pgd.select_by == "robust"
    # The validation budget follows the training budget unless given.
    assert get_defense("pgd_at", eps=8 / 255).params.validation_budget()[0] == 8 / 255
    assert get_defense("pgd_at", eps=8 / 255, eval_eps=0.01).params.validation_budget()[0] == 0.01


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("pgd_at", {"eps": 0.0}, "eps must be in (0, 1]"),
        ("pgd_at", {"eps": 1.5}, "eps must be in (0, 1]"),
        ("pgd_at", {"steps": 0}, "steps must be in [1, 1000]"),
        ("trades", {"beta": -1.0}, "beta must be in [0, 100]"),
        ("clean", {"lr": 0.0}, "lr must be in (0, 10]"),
        ("clean", {"epochs": 0}, "epochs must be in [1, 1000]"),
        ("clean", {"momentum": 1.0}, "momentum must be in [0, 1)"),
        ("clean", {"eval_eps": 2.0}, "eval_eps must be in (0, 1]"),
        ("mpadvt", {"p": 1.5}, "p must be in [0, 1]"),
        ("mpadvt", {"eps_min": 0.05, "eps_max": 0.02}, "eps_min must be <= eps_max"),
        ("mpadvt", {"steps_min": 5, "steps_max": 2}, "steps_min must be <= steps_max"),
    ],
)
def test_exact_error_messages(method: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_defense(method, **params)
    assert info.value.message == message


def test_unknown_parameter_names_the_valid_ones() -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_defense("clean", beta=6.0)
    assert info.value.message.startswith("unknown parameter 'beta' for defense 'clean'; valid: ")
    assert "epochs" in info.value.message
    assert "beta" not in info.value.message.split("valid: ")[1]


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_defense("pgd_at", eps=-1.0, steps=0, optimizer="rmsprop")
    fields = [e["field"] for e in info.value.details["errors"]]
    assert sorted(fields) == ["eps", "optimizer", "steps"]


def test_params_are_frozen() -> None:
    params = get_defense("pgd_at").params
    with pytest.raises(Exception, match="frozen"):
        params.epochs = 5  # type: ignore[misc]


def test_learning_rate_schedules() -> None:
    cosine = get_defense("clean", epochs=4, lr=0.1).params
    assert learning_rate(cosine, 1, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cosine, 3, 0, 10) == pytest.approx(0.05)  # half way
    assert learning_rate(cosine, 4, 9, 10) == pytest.approx(
        0.05 * (1 + math.cos(math.pi * 39 / 40))
    )
    step = get_defense("clean", epochs=4, lr=0.1, schedule="step").params
    assert [learning_rate(step, e, 0, 10) for e in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001]
    )
    constant = get_defense("clean", epochs=4, lr=0.1, schedule="constant").params
    assert {learning_rate(constant, e, 5, 10) for e in (1, 4)} == {0.1}


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize(
    ("head", "width"), [(Head.SOFTMAX, 3), (Head.BINARY_LOGIT, 1), (Head.SIGMOID, 4)]
)
def test_kl_is_zero_for_equal_outputs_and_positive_otherwise(head: Head, width: int) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, width, generator=g) * 3
    b = torch.randn(5, width, generator=g) * 3
    assert kl_divergence(a, a, head).abs().max() < 1e-6
    assert (kl_divergence(a, b, head) > 0).all()


def test_binary_logit_kl_equals_two_class_softmax_kl() -> None:
    z = torch.tensor([[-2.0], [0.3], [4.0]])
    w = torch.tensor([[1.0], [-0.5], [3.0]])
    as_softmax = kl_divergence(F.pad(z, (1, 0)), F.pad(w, (1, 0)), Head.SOFTMAX)
    torch.testing.assert_close(kl_divergence(z, w, Head.BINARY_LOGIT), as_softmax)
    # A sigmoid head's per-finding KL is the binary KL of each column.
    zz, ww = torch.cat([z, -w], 1), torch.cat([w, z], 1)
    per = kl_per_finding(zz, ww, Head.SIGMOID)
    torch.testing.assert_close(per[:, :1], kl_divergence(z, w, Head.BINARY_LOGIT)[:, None])


def _mart_reference(
    logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """The MART authors' loss (github.com/YisenWang/MART, train_wideresnet.py)."""
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y
    )
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze()
    kl = torch.nn.KLDivLoss(reduction="none")
    loss_robust = (1.0 / len(y)) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs)
    )
    return loss_adv + beta * loss_robust


def test_mart_loss_matches_the_reference_implementation() -> None:
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(8, 4, generator=g) * 2
    adv = torch.randn(8, 4, generator=g) * 2
    y = torch.randint(0, 4, (8,), generator=g)
    ours = mart_loss(clean, adv, y, Head.SOFTMAX, beta=6.0)
    torch.testing.assert_close(ours, _mart_reference(clean, adv, y, 6.0), rtol=1e-4, atol=1e-5)


def test_mart_binary_heads_match_two_class_softmax() -> None:
    g = torch.Generator().manual_seed(2)
    z, w = torch.randn(6, 1, generator=g), torch.randn(6, 1, generator=g)
    y = torch.randint(0, 2, (6,), generator=g)
    two_class = mart_loss(F.pad(z, (1, 0)), F.pad(w, (1, 0)), y, Head.SOFTMAX, beta=6.0)
    torch.testing.assert_close(
        mart_loss(z, w, y, Head.BINARY_LOGIT, beta=6.0), two_class, rtol=1e-5, atol=1e-6
    )
    # Multi-label: each finding is such a binary problem, averaged over findings.
    labels = torch.stack([y.float(), 1 - y.float()], 1)
    zz, ww = torch.cat([z, -z], 1), torch.cat([w, -w], 1)
    torch.testing.assert_close(
        mart_loss(zz, ww, labels, Head.SIGMOID, beta=6.0), two_class, rtol=1e-5, atol=1e-6
    )


def test_mart_boost_on_two_outcomes_is_about_a_second_cross_entropy() -> None:
    z = torch.tensor([[0.5], [-1.0], [2.0]])
    y = torch.tensor([1, 1, 0])
    ce = head_loss(z, y, Head.BINARY_LOGIT)
    assert mart_loss(z, z, y, Head.BINARY_LOGIT, beta=0.0) == pytest.approx(2 * float(ce), rel=1e-3)
