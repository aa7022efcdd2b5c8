"""One sentence of interpretation for an attack row whose pattern is notable."""

from __future__ import annotations

from typing import Any

from workers.reports.views import attack_note, cell, generic_blocks


def block(clean_acc: float, acc: float, auroc: float) -> dict[str, Any]:
    return {"clean": {"accuracy": clean_acc}, "adversarial": {"accuracy": acc,
                                                              "mean_auroc": auroc}}


def flips(missed: float, alarm: float) -> dict[str, Any]:
    return {"missed_disease": {"count": 1, "at_risk": 10, "rate": missed},
            "false_alarm": {"count": 1, "at_risk": 10, "rate": alarm}}


def test_false_alarms_with_the_ranking_kept() -> None:
    # The GAP pattern: accuracy 0.03, AUROC 0.906, only healthy calls flipped.
    note = attack_note(block(0.8, 0.03, 0.906), flips(0.0, 0.45), "multi-label")
    assert note == (
        "False alarms only: 45% of the healthy calls turned diseased and no disease was "
        "missed; exact-match accuracy falls to 0.030 while the mean AUROC stays 0.906: the "
        "scores still rank diseased above healthy cases and the errors are threshold "
        "crossings."
    )


def test_missed_disease_only() -> None:
    note = attack_note(block(0.9, 0.6, 0.6), flips(0.3, 0.0), "single-label")
    assert note is not None
    assert note.startswith("Missed disease only: 30% of the disease calls turned healthy")
    assert "AUROC" not in note


def test_ordinary_rows_get_no_sentence() -> None:
    assert attack_note(block(0.9, 0.5, 0.55), flips(0.2, 0.2), "single-label") is None
    assert attack_note(block(0.9, 0.9, 0.95), None, "single-label") is None


def test_generic_blocks_are_tables() -> None:
    blocks = generic_blocks({"epochs": [{"epoch": 1, "loss": 0.123456789}],
                             "note": "x", "nested": {"a": {"b": 1.0}}})
    kinds = [(b["kind"], b["title"]) for b in blocks]
    assert kinds == [("kv", None), ("table", "epochs"), ("table", "nested")]
    assert blocks[1]["rows"] == [["1", "0.123"]]
    assert cell({"eps": 0.0156862745, "steps": 10}) == "eps=0.016; steps=10"
