"""Each adversarial method raises PGD robust accuracy over plain training on a multi-label
(sigmoid) head with two findings, each with its own shortcut (see ``conftest.py``).

Accuracy is exact match (both findings right), so a robust model scores about 0.9^2 = 0.8
and a constant prediction about 0.25; ``FLOOR`` sits between. The attack is PGD-20 on the
BCE over all findings, as in the paper's multi-label attacks.
"""

from __future__ import annotations

from typing import Any

import pytest

from models.card import Head

MARGIN = 0.4
FLOOR = 0.6


def test_plain_training_learns_the_shortcuts(trained: Any) -> None:
    _, clean, robust = trained(Head.SIGMOID, "clean")
    assert clean >= 0.95
    assert robust <= 0.2


@pytest.mark.parametrize("method", ["pgd_at", "trades", "mpadvt", "maadvt"])
def test_adversarial_training_raises_robust_accuracy(trained: Any, method: str) -> None:
    _, _, baseline = trained(Head.SIGMOID, "clean")
    result, clean, robust = trained(Head.SIGMOID, method)
    assert robust >= baseline + MARGIN, (robust, baseline)
    assert robust >= FLOOR
    assert robust <= clean
    assert result.best.robust_acc >= FLOOR - 0.1
