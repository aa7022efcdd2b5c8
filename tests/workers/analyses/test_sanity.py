"""``sanity``: each flag raised by the fault it detects, and none on a sound evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.card import Head, ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.base import BatchContext, SummaryContext
from workers.analyses.sanity import SanityAnalysis

N = 100


def sound_arrays(clean_acc: float, adv_acc: dict[str, float]) -> dict[str, np.ndarray]:
    """Arrays of an evaluation with finite gradients and deterministic outputs."""
    out: dict[str, np.ndarray] = {
        "index": np.arange(N),
        "clean_correct": np.arange(N) < round(clean_acc * N),
        "grad_norm": np.ones(N),
        "grad_zero": np.zeros(N, dtype=bool),
        "grad_nonfinite": np.zeros(N, dtype=bool),
        "output_nonfinite": np.zeros(N, dtype=bool),
        "repeat_max_diff": np.zeros(N),
        "repeat_exceeds": np.zeros(N, dtype=bool),
        "repeat_pred_changed": np.zeros(N, dtype=bool),
    }
    for key, acc in adv_acc.items():
        out[attack_field("adv_index", key)] = np.arange(N)
        out[attack_field("adv_correct", key)] = np.arange(N) < round(acc * N)
    return out


def summary(keys: list[str], **params: Any) -> SummaryContext:
    return SummaryContext(labels=("a", "b"), task="single-label", head="softmax",
                          attack_keys=keys, params=params)


def checks_by_name(section: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in section.data["checks"]}


def test_sound_evaluation_raises_no_flag() -> None:
    acc = {"pgd:eps=2/255": 0.6, "pgd:eps=4/255": 0.4, "pgd:eps=8/255": 0.1,
           "square:eps=8/255": 0.3}
    sec = SanityAnalysis().summarize(sound_arrays(0.9, acc), summary(list(acc)))
    assert sec.data["reliable"] is True
    assert sec.flags == []
    assert not any(c["flagged"] for c in sec.data["checks"])


def test_accuracy_rising_with_eps_is_flagged() -> None:
    acc = {"pgd:eps=2/255": 0.3, "pgd:eps=4/255": 0.5, "pgd:eps=8/255": 0.1}
    sec = SanityAnalysis().summarize(sound_arrays(0.9, acc), summary(list(acc)))
    check = checks_by_name(sec)["accuracy_vs_eps"]
    assert check["flagged"]
    assert "from 0.300 at eps 2/255 to 0.500 at eps 4/255" in check["message"]
    assert sec.data["reliable"] is False
    assert any("may be unreliable" in f for f in sec.flags)


def test_tolerance_absorbs_small_rises() -> None:
    acc = {"pgd:eps=2/255": 0.30, "pgd:eps=4/255": 0.32, "pgd:eps=8/255": 0.1}
    strict = SanityAnalysis().summarize(sound_arrays(0.9, acc), summary(list(acc)))
    lenient = SanityAnalysis().summarize(sound_arrays(0.9, acc),
                                         summary(list(acc), accuracy_tolerance=0.05))
    assert checks_by_name(strict)["accuracy_vs_eps"]["flagged"]
    assert not checks_by_name(lenient)["accuracy_vs_eps"]["flagged"]


def test_attack_without_any_effect_at_a_large_budget_is_flagged() -> None:
    acc = {"pgd:eps=8/255": 0.9, "pgd:eps=16/255": 0.9}
    sec = SanityAnalysis().summarize(sound_arrays(0.9, acc), summary(list(acc)))
    check = checks_by_name(sec)["accuracy_vs_eps"]
    assert check["flagged"]
    assert "does not fall" in check["message"]


def test_black_box_beating_white_box_is_flagged_across_eps_spellings() -> None:
    keys = ["pgd:eps=8/255", "square:eps=0.0314"]
    meta = {"square:eps=0.0314": {"name": "square", "eps": 0.0314, "params": {"eps": 0.0314}}}
    acc = {"pgd:eps=8/255": 0.5, "square:eps=0.0314": 0.2}
    sec = SanityAnalysis().summarize(sound_arrays(0.9, acc), summary(keys, attacks=meta))
    check = checks_by_name(sec)["black_box_beats_white_box"]
    assert check["flagged"]
    assert check["details"]["comparisons"][0]["best_white_box"] == "pgd:eps=8/255"
    fine = SanityAnalysis().summarize(
        sound_arrays(0.9, {"pgd:eps=8/255": 0.1, "square:eps=0.0314": 0.2}),
        summary(keys, attacks=meta),
    )
    assert not checks_by_name(fine)["black_box_beats_white_box"]["flagged"]


def test_parameters_are_validated() -> None:
    with pytest.raises(InvalidParametersError, match=r"accuracy_tolerance must be in \[0, 1\]"):
        SanityAnalysis().parse_params({"accuracy_tolerance": 2})


# ---------------------------------------------------------------------- real models


CARD = ModelCard(name="m", task="single-label", labels=("normal", "pneumonia"),
                 input={"channels": 1, "height": 8, "width": 8})


class NaNGradient(nn.Module):
    """Finite outputs, NaN input gradients: sqrt at 0 has an infinite derivative."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        return self.fc(flat) + torch.sqrt(flat * 0.0).sum(1, keepdim=True)


class Quantizing(nn.Module):
    """Rounds its input: gradients are exactly zero everywhere (shattered gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.round(z * 4).flatten(1))


def wrapped(net: nn.Module) -> DiagnosticModel:
    torch.manual_seed(0)
    return DiagnosticModel(net, CARD, Head.SOFTMAX)


def plain_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 2))


def run(model: DiagnosticModel) -> Any:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=gen)
    y = torch.randint(0, 2, (32,), generator=gen)
    batch = BatchContext(model=model, clean=x, labels=y, adversarial={}, indices=np.arange(32),
                         seed=0)
    with torch.inference_mode():  # the audit may call collect like this
        arrays = SanityAnalysis().collect(batch)
    return SanityAnalysis().summarize(arrays, summary([]))


def test_sound_model_raises_no_flag() -> None:
    model = wrapped(plain_net()).eval()
    sec = run(model)
    assert sec.data["reliable"] is True
    assert checks_by_name(sec)["zero_gradients"]["details"]["median_gradient_norm"] > 0


def test_dropout_left_in_train_mode_is_nondeterministic() -> None:
    model = wrapped(plain_net()).train()
    sec = run(model)
    check = checks_by_name(sec)["nondeterministic_outputs"]
    assert check["flagged"]
    assert check["details"]["images"] > 0
    assert sec.data["reliable"] is False
    assert model.training  # the analysis checks the model as given, it does not change it


def test_nan_gradients_are_flagged() -> None:
    sec = run(wrapped(NaNGradient()).eval())
    checks = checks_by_name(sec)
    assert checks["nonfinite_gradients"]["flagged"]
    assert checks["nonfinite_gradients"]["details"]["count"] == 32
    assert not checks["nonfinite_outputs"]["flagged"]
    assert sec.data["reliable"] is False


def test_zero_gradients_are_flagged() -> None:
    sec = run(wrapped(Quantizing()).eval())
    check = checks_by_name(sec)["zero_gradients"]
    assert check["flagged"]
    assert check["details"]["fraction"] == 1.0
    assert "may be unreliable" in check["message"]


def test_one_weak_attack_beside_a_working_one_is_not_masking() -> None:
    acc = {"fgsm:eps=8/255": 0.9, "pgd:eps=8/255": 0.2}
    sec = SanityAnalysis().summarize(sound_arrays(0.9, acc), summary(list(acc)))
    check = checks_by_name(sec)["accuracy_vs_eps"]
    assert check["flagged"] is False
    assert check["details"]["ineffective"] == [
        "fgsm: accuracy does not fall from clean (0.900) up to eps 8/255 (0.900)"]
    assert "a weak attack, not a sign of masking" in check["message"]
