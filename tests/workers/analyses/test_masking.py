"""Gradient masking is caught: models that hide their gradients must not come out robust.

Each model is the trained blob CNN behind a preprocessing step in pixel space:

- ``round``: ``round(x * 255) / 255`` inside the graph: the input gradient is zero, PGD
  cannot move, and the model looks robust to it while a black-box attack still breaks it;
- ``straight-through``: ``x + (round(x * 255) / 255 - x).detach()``, the same forward
  with the gradient kept: not masking, no masking flag;
- ``random``: Gaussian noise added at every call (a randomized defense): outputs differ for
  the same input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from models.wrapper import DiagnosticModel
from workers.analyses.sanity import SanityAnalysis
from workers.audit import run_audit

MASKING_CHECKS = ("zero_gradients", "vanishing_gradients", "loss_vs_steps",
                  "nondeterministic_outputs")


class PixelStep(nn.Module):
    """``net`` behind ``step`` applied to the [0, 1] image (the wrapper normalizes first)."""

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor,
                 step: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.net, self.step = net, step
        self.register_buffer("m", mean.clone())
        self.register_buffer("s", std.clone())

    def forward(self, z: Tensor) -> Tensor:
        x = self.step(z * self.s + self.m)
        return self.net((x - self.m) / self.s)


def _round(x: Tensor) -> Tensor:
    return torch.round(x * 255) / 255


def _straight_through(x: Tensor) -> Tensor:
    return x + (torch.round(x * 255) / 255 - x).detach()


def _random(x: Tensor) -> Tensor:
    return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)


STEPS = {"round": _round, "straight-through": _straight_through, "random": _random}


def wrapped(kit: Any, kind: str) -> tuple[DiagnosticModel, Tensor, Tensor]:
    trained = kit.trained("softmax")
    base: DiagnosticModel = trained.model
    net = PixelStep(base.net, base.mean, base.std, STEPS[kind])
    model = DiagnosticModel(net, base.card, base.head).eval()
    return model, trained.images[:48], trained.labels[:48]


def checks(section: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in section.data["checks"]}


@pytest.fixture(scope="module")
def rounded_audit(kit: Any) -> dict[str, Any]:
    model, x, y = wrapped(kit, "round")
    report, _ = run_audit(
        model, x, y,
        [{"name": "pgd", "params": {"eps": 8 / 255, "steps": 10}},
         {"name": "square", "params": {"eps": 8 / 255, "queries": 300}}],
        analyses=[{"name": "quantitative", "params": {"n_bootstrap": 100}}, {"name": "sanity"}],
        policy={"require_reliable": True, "min_accuracy": {"pgd": 0.5}},
    )
    return report


def test_rounding_inside_the_graph_looks_robust_to_pgd(rounded_audit: dict[str, Any]) -> None:
    pgd = rounded_audit["attacks"]["pgd:eps=8/255,steps=10"]["adversarial"]["accuracy"]
    clean = rounded_audit["summary"]["clean_accuracy"]
    # The trap: with no gradient PGD barely moves the model.
    assert clean == 1.0
    assert pgd >= 0.9


def test_rounding_is_flagged_and_fails_the_gate(rounded_audit: dict[str, Any]) -> None:
    sanity = rounded_audit["sections"]["sanity"]
    by_name = {c["name"]: c for c in sanity["checks"]}
    assert sanity["reliable"] is False
    assert by_name["zero_gradients"]["flagged"] is True
    assert by_name["zero_gradients"]["details"]["fraction"] == 1.0
    assert by_name["vanishing_gradients"]["flagged"] is True
    assert by_name["loss_vs_steps"]["flagged"] is True
    assert by_name["loss_vs_steps"]["details"]["fraction"] == 1.0
    assert by_name["nondeterministic_outputs"]["flagged"] is False
    summary = rounded_audit["summary"]
    assert summary["reliable"] is False
    assert "may be unreliable" in summary["verdict_detail"]
    results = {r["rule"]: r for r in rounded_audit["policy"]["results"]}
    assert results["require_reliable"]["passed"] is False
    assert results["min_accuracy"]["passed"] is True  # the PGD number alone would pass
    assert summary["verdict"] == "fail"


def test_worst_case_is_no_kinder_than_either_attack(rounded_audit: dict[str, Any]) -> None:
    budget = rounded_audit["sections"]["worst_case"]["budgets"]["linf:eps=8/255"]
    singles = [rounded_audit["attacks"][k]["adversarial"]["accuracy"] for k in budget["attacks"]]
    assert budget["robust_accuracy"] <= min(singles)
    assert budget["n_robust"] == round(budget["robust_accuracy"] * budget["n_images"])
    assert sum(budget["first_broken_by"].values()) + budget["not_broken"] == budget["n_images"]


def test_straight_through_rounding_is_not_masking(kit: Any) -> None:
    model, x, y = wrapped(kit, "straight-through")
    section, _ = kit.run(SanityAnalysis(), model, x, y, {})
    by_name = checks(section)
    for name in MASKING_CHECKS:
        assert by_name[name]["flagged"] is False, by_name[name]["message"]
    assert by_name["loss_vs_steps"]["status"] == "passed"
    assert by_name["loss_vs_steps"]["details"]["fraction"] < 0.5


def test_randomized_transform_is_flagged(kit: Any) -> None:
    model, x, y = wrapped(kit, "random")
    section, _ = kit.run(SanityAnalysis(), model, x, y, {})
    by_name = checks(section)
    assert section.data["reliable"] is False
    assert by_name["nondeterministic_outputs"]["flagged"] is True
    assert by_name["nondeterministic_outputs"]["details"]["images"] == x.shape[0]
    assert by_name["zero_gradients"]["flagged"] is False


def test_checks_without_anything_to_compare_are_not_applicable(kit: Any) -> None:
    model, x, y = wrapped(kit, "straight-through")
    section, _ = kit.run(SanityAnalysis(), model, x, y, {})
    by_name = checks(section)
    # No adversarial images were given: no eps to sweep, no black-box attack to compare.
    assert by_name["accuracy_vs_eps"]["status"] == "not applicable"
    assert by_name["black_box_beats_white_box"]["status"] == "not applicable"
    assert by_name["zero_gradients"]["status"] == "passed"
