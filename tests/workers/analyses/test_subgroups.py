"""``subgroups``: per-group clean and worst-case accuracy, and which group is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from workers.analyses.alignment import attack_field
from workers.analyses.base import SummaryContext
from workers.analyses.bootstrap import Bootstrap
from workers.analyses.subgroups import NO_METADATA, summarize_subgroups

N = 60
PGD, SQUARE = "pgd:eps=8/255", "square:eps=8/255"
BUDGET = "linf:eps=8/255"


def _probs(p_true: np.ndarray) -> np.ndarray:
    return np.stack([p_true, 1 - p_true], axis=1)


def arrays() -> dict[str, np.ndarray]:
    """Every image right on clean. Women (even images) fall to PGD or Square half each;
    men (odd images) survive both, except image 1."""
    clean = np.full(N, 0.9)
    pgd, square = clean.copy(), clean.copy()
    women = np.arange(0, N, 2)
    pgd[women[::2]] = 0.1
    square[women[1::2]] = 0.1
    square[1] = 0.1
    out = {"index": np.arange(N), "labels": np.zeros(N, dtype=np.int64),
           "clean_probs": _probs(clean)}
    for key, p in ((PGD, pgd), (SQUARE, square)):
        out[attack_field("adv_index", key)] = np.arange(N)
        out[attack_field("adv_probs", key)] = _probs(p)
    return out


def metadata() -> list[dict[str, str]]:
    return [{"PatientSex": "F" if i % 2 == 0 else "M",
             "view": "AP" if i < 50 else "PA" if i < 55 else "",
             "PatientID": f"p{i:03d}", "site": f"s{i}"} for i in range(N)]


def ctx() -> SummaryContext:
    return SummaryContext(labels=("normal", "disease"), task="single-label", head="softmax",
                          attack_keys=[PGD, SQUARE], params={"seed": 0})


def test_group_below_the_rest_is_flagged() -> None:
    sec = summarize_subgroups(arrays(), ctx(), Bootstrap(200, 0.95, 0), metadata())
    sex = sec.data["attributes"]["PatientSex"]["groups"]
    women = sex["F"]["metrics"][BUDGET]
    men = sex["M"]["metrics"][BUDGET]
    assert women["accuracy"] == 0.0  # every woman falls to one of the two attacks
    assert men["accuracy"] == pytest.approx(29 / 30)
    assert women["rest_accuracy"] == pytest.approx(29 / 30)
    assert women["significantly_below"] is True
    assert women["p_adjusted"] < 1e-6
    assert men["significantly_below"] is False
    assert women["accuracy_ci_method"] == "wilson"
    assert women["accuracy_ci"][0] == 0.0
    assert women["accuracy_ci"][1] > 0.05
    flagged = [(f["attribute"], f["group"], f["measure"]) for f in sec.data["flagged"]]
    assert flagged == [("PatientSex", "F", BUDGET)]
    assert any("PatientSex=F" in flag for flag in sec.flags)
    worst = sec.data["worst_group"][BUDGET]
    assert (worst["attribute"], worst["group"], worst["accuracy"]) == ("PatientSex", "F", 0.0)
    assert sec.data["worst_group"]["clean"]["accuracy"] == 1.0


def test_small_groups_and_missing_values() -> None:
    sec = summarize_subgroups(arrays(), ctx(), Bootstrap(0, 0.95, 0), metadata())
    view = sec.data["attributes"]["view"]
    assert view["n_missing"] == 5
    assert view["groups"]["PA"]["n_images"] == 5
    assert view["groups"]["PA"]["small"] is True
    assert "p_adjusted" not in view["groups"]["PA"]["metrics"][BUDGET]  # not tested


@pytest.mark.parametrize(("name", "identifying"), [
    ("PatientID", True), ("PatientName", True), ("StudyDate", True),
    ("AccessionNumber", True), ("patient_mrn", True), ("StudyInstanceUID", True),
    ("PatientSex", False), ("PatientAge", False), ("ViewPosition", False),
    ("Manufacturer", False), ("BodyPartExamined", False),
])
def test_identifier_names(name: str, identifying: bool) -> None:
    from workers.analyses.subgroups import is_identifying

    assert is_identifying(name) is identifying


def test_identifying_attributes_are_left_out() -> None:
    sec = summarize_subgroups(arrays(), ctx(), Bootstrap(0, 0.95, 0), metadata())
    assert set(sec.data["attributes"]) == {"PatientSex", "view"}
    skipped = sec.data["skipped_attributes"]
    assert skipped["PatientID"] == "may identify patients"
    assert skipped["site"].startswith("60 distinct values")
    assert "p001" not in str(sec.data)


@pytest.mark.parametrize("meta", [None, [], [{} for _ in range(N)]])
def test_not_applicable_without_metadata(meta: list[dict[str, str]] | None) -> None:
    sec = summarize_subgroups(arrays(), ctx(), Bootstrap(0, 0.95, 0), meta)
    assert sec.applicable is False
    assert sec.reason == NO_METADATA
