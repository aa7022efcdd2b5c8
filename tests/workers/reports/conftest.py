"""Sections of a small single-label audit with known numbers, and the report built from them.

No model is run: the per-image arrays are made by hand, so the expected metrics are known
(the analyses themselves are tested in ``tests/workers/analyses``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from workers.analyses.alignment import attack_field
from workers.analyses.base import Section, SummaryContext
from workers.analyses.bootstrap import Bootstrap
from workers.analyses.clinical import ClinicalAnalysis
from workers.analyses.quantitative import QuantitativeAnalysis
from workers.analyses.sanity import SanityAnalysis
from workers.analyses.subgroups import summarize_subgroups
from workers.analyses.worst_case import summarize_worst_case
from workers.reports.builder import build_report
from workers.reports.images import perturbation_heatmap, to_png

LABELS = ("normal", "pneumonia")
N = 100
KEYS = ("pgd:eps=4/255", "pgd:eps=8/255", "square:eps=8/255")
#: Images whose prediction each attack flips (all images start correct).
FLIPPED = {"pgd:eps=4/255": 30, "pgd:eps=8/255": 60, "square:eps=8/255": 40}


def _probs(pred: np.ndarray) -> np.ndarray:
    p1 = np.where(pred == 1, 0.9, 0.1)
    return np.stack([1 - p1, p1], axis=1)


def _arrays(flipped: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    labels = np.arange(N) % 2
    index = np.arange(N)
    quant: dict[str, np.ndarray] = {
        "index": index, "labels": labels, "clean_probs": _probs(labels),
        "min_eps": np.linspace(1, 12, N) / 255,
    }
    clin: dict[str, np.ndarray] = {"index": index, "labels": labels, "clean_pred": labels}
    sanity: dict[str, np.ndarray] = {
        "index": index,
        "clean_correct": np.ones(N, dtype=bool),
        "grad_norm": np.ones(N),
        "grad_zero": np.zeros(N, dtype=bool),
        "grad_nonfinite": np.zeros(N, dtype=bool),
        "output_nonfinite": np.zeros(N, dtype=bool),
        "repeat_max_diff": np.zeros(N),
        "repeat_exceeds": np.zeros(N, dtype=bool),
        "repeat_pred_changed": np.zeros(N, dtype=bool),
    }
    for key, count in flipped.items():
        adv_pred = np.where(index < count, 1 - labels, labels)
        quant[attack_field("adv_index", key)] = index
        quant[attack_field("adv_probs", key)] = _probs(adv_pred)
        quant[attack_field("attack_linf", key)] = np.full(N, float(key.split("=")[1][0]) / 255)
        quant[attack_field("attack_l2", key)] = np.full(N, 0.5)
        clin[attack_field("adv_index", key)] = index
        clin[attack_field("adv_pred", key)] = adv_pred
        sanity[attack_field("adv_index", key)] = index
        sanity[attack_field("adv_correct", key)] = adv_pred == labels
    return {"quantitative": quant, "clinical": clin, "sanity": sanity}


def metadata() -> list[dict[str, str]]:
    """Images 0-29 (the ones pgd at 4/255 flips) are women: the group below the rest."""
    return [{"PatientSex": "F" if i < 30 or i >= 80 else "M",
             "ViewPosition": "PA" if i % 2 else "AP"} for i in range(N)]


def make_sections(flipped: dict[str, int] | None = None,
                  meta: list[dict[str, str]] | None = None) -> list[Section]:
    """The sections the engine would make: quantitative, then the two derived from it
    (worst_case, subgroups), then clinical and sanity."""
    flipped = flipped or FLIPPED
    arrays = _arrays(flipped)
    ctx_q = SummaryContext(labels=LABELS, task="single-label", head="softmax",
                           attack_keys=list(flipped), params={"seed": 0, "n_bootstrap": 200})
    ctx = SummaryContext(labels=LABELS, task="single-label", head="softmax",
                         attack_keys=list(flipped), params={"seed": 0})
    boot = Bootstrap(200, 0.95, 0)
    return [
        QuantitativeAnalysis().summarize(arrays["quantitative"], ctx_q),
        summarize_worst_case(arrays["quantitative"], ctx, boot),
        summarize_subgroups(arrays["quantitative"], ctx, boot, meta),
        ClinicalAnalysis().summarize(arrays["clinical"], ctx),
        SanityAnalysis().summarize(arrays["sanity"], ctx),
    ]


def attacks_meta(keys: tuple[str, ...] | list[str] = KEYS) -> dict[str, dict[str, Any]]:
    out = {}
    for key in keys:
        name, _, rest = key.partition(":")
        eps = int(rest.split("=")[1].split("/")[0]) / 255
        out[key] = {"name": name, "eps": eps, "params": {"eps": eps, "steps": 10}}
    return out


def provenance(model_name: str = "tiny-cnn") -> dict[str, Any]:
    return {
        "model": {"name": model_name, "sha256": "0" * 64, "task": "single-label",
                  "labels": list(LABELS)},
        "dataset": {"name": "phantom-cxr", "sha256": "f" * 64, "n_images": N},
        "parameters": {"attacks": [{"name": "pgd", "params": {"eps": [4 / 255, 8 / 255]}}],
                       "analyses": None, "batch_size": 32},
        "seeds": {"audit": 0},
        "device": "cpu",
        "timings": {"attacks": 1.25, "analyses": 0.5, "report": 0.1},
    }


def make_report(policy: dict[str, Any] | None = None, *, model_name: str = "tiny-cnn",
                sections: list[Section] | None = None) -> dict[str, Any]:
    return build_report({"id": "job-1", "kind": "audit"}, provenance(model_name),
                        sections if sections is not None else default_sections(),
                        attacks_meta(), policy)


@functools.cache
def default_sections() -> list[Section]:
    """Built once: summarizing draws the figures, which takes a second."""
    return make_sections(meta=metadata())


@pytest.fixture(scope="session")
def sections() -> list[Section]:
    return default_sections()


@pytest.fixture
def report(sections: list[Section]) -> dict[str, Any]:
    return make_report(sections=sections)


@pytest.fixture(name="make_report")
def make_report_fixture() -> Callable[..., dict[str, Any]]:
    return make_report


@pytest.fixture(name="make_sections")
def make_sections_fixture() -> Callable[..., list[Section]]:
    return make_sections


@pytest.fixture
def samples() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        clean = rng.random((1, 16, 16))
        adv = np.clip(clean + rng.choice([-4 / 255, 4 / 255], size=clean.shape), 0, 1)
        out.append({
            "attack": KEYS[0],
            "clean_png": to_png(clean),
            "adv_png": to_png(adv),
            "perturbation_png": perturbation_heatmap(clean, adv),
            "true_label": "pneumonia",
            "clean_pred": {"label": "pneumonia", "probability": 0.91},
            "adv_pred": {"label": "normal", "probability": 0.87},
        })
    return out


@functools.cache
def full_audit() -> tuple[dict[str, Any], list[Section]]:
    """A real multi-label audit with every analysis, many attack settings and metadata:
    the widest report the tests render (the tiny blob model trains in a few seconds)."""
    from tests.support.blobs import trained_model
    from workers.audit import run_audit

    trained = trained_model("multi-label")
    n = 24
    meta = [{"PatientSex": "F" if i % 3 else "M", "ViewPosition": "PA" if i % 2 else "AP"}
            for i in range(n)]
    attacks = [
        {"name": "pgd", "params": {"eps": [2 / 255, 4 / 255, 8 / 255], "steps": 5}},
        {"name": "fgsm", "params": {"eps": 8 / 255}},
        {"name": "square", "params": {"eps": 8 / 255, "queries": 30}},
        {"name": "gap", "params": {"eps": 8 / 255, "epochs": 1}},
        {"name": "deepfool"},
    ]
    analyses = [{"name": name} for name in (
        "quantitative", "clinical", "sanity", "features", "gradcam", "discriminability",
        "label_correlation", "perturbations")]
    return run_audit(trained.model, trained.images[:n], trained.labels[:n], attacks,
                     analyses=analyses, masks=trained.masks[:n], metadata=meta,
                     policy={"min_robust_accuracy": {"eps=8/255": 0.5},
                             "require_reliable": True})


@pytest.fixture(name="full_audit", scope="session")
def full_audit_fixture() -> tuple[dict[str, Any], list[Section]]:
    return full_audit()
