"""``clinical``: which way the attacks flip diagnoses.

An adversarial flip is not clinically neutral: a missed disease (a diseased case that the
attack makes look healthy) and a false alarm (a healthy case that the attack makes look
diseased) have different costs. For every attack setting this analysis counts both, per
finding (multi-label) or per class (single-label).

Healthy and diseased:

- **single-label**: one class is "healthy", the one whose label reads like ``No Finding``,
  ``normal``, ``benign``, ``healthy``, ``grade 0`` or ``no DR`` (case, spaces, ``-`` and
  ``_`` ignored; the ``healthy_label`` parameter names it explicitly). Every other class is a
  disease. Without a healthy class the section is not applicable.
- **multi-label**: every finding is its own disease (positive = diseased, at the card's
  threshold); a healthy-like label (``No Finding``) is not a disease and is left out of the
  per-finding counts. An image is "healthy" when no disease finding is positive.

Counts, per attack, on the images both clean and attacked:

- ``missed_disease``: truly diseased, called diseased on the clean image, called healthy
  under attack. Rate = count / (truly diseased and called diseased on clean).
- ``false_alarm``: truly healthy, called healthy on the clean image, called diseased under
  attack. Rate = count / (truly healthy and called healthy on clean).

Per class (single-label): ``missed_disease`` is attributed to the true class, ``false_alarm``
to the disease class the attack produced; ``disease_swaps`` counts diseased calls moved to
another disease (a grade changed, for example). Per finding (multi-label): the same counts
on that finding's own decision. ``prediction_flips`` counts the directions of every changed
call whatever the truth.

Arrays: ``index``, ``labels``, ``clean_pred``, and per attack ``adv_index[k]``,
``adv_pred[k]`` (predicted class ``[N]`` or 0/1 decisions ``[N, K]``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import torch

from app.core.catalogue.analyses import ClinicalParams
from models.errors import InvalidParametersError
from workers.analyses.alignment import attack_field, attack_rows
from workers.analyses.analysis_params import parse_params
from workers.analyses.base import Analysis, BatchContext, Figure, Section, SummaryContext
from workers.analyses.jsonable import jsonable
from workers.analyses.plotting import PALETTE, new_grid, render_png
from workers.analyses.quantitative import labels_numpy

MAX_FIGURE_ATTACKS = 4

_HEALTHY = re.compile(r"^(no ?finding|no ?findings|normal|benign|healthy|grade ?0|no ?dr)$")


def _normal_form(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label.strip().lower())


def is_healthy_label(label: str) -> bool:
    """Whether a label reads like the healthy class (``No Finding``, ``normal``, ``no DR``...)."""
    return bool(_HEALTHY.match(_normal_form(label)))


def healthy_index(labels: tuple[str, ...] | list[str], override: str | None = None) -> int | None:
    """Position of the healthy label: ``override`` when given (it must be a label)."""
    if override is not None:
        if override not in labels:
            raise InvalidParametersError(
                f"healthy_label {override!r} is not a label of the model; labels: "
                + ", ".join(labels)
            )
        return list(labels).index(override)
    found = [i for i, label in enumerate(labels) if is_healthy_label(label)]
    return found[0] if found else None


class ClinicalAnalysis(Analysis):
    """Missed diseases and false alarms caused by each attack (see the module docstring)."""

    name: ClassVar[str] = "clinical"
    Params: ClassVar[type[ClinicalParams]] = ClinicalParams

    def parse_params(self, params: dict[str, Any] | None) -> ClinicalParams:
        return parse_params(ClinicalParams, params, self.name)

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        self.parse_params(ctx.params)
        model = ctx.model
        task = model.card.task
        index = np.asarray(ctx.indices).astype(np.int64)
        out: dict[str, np.ndarray] = {"index": index, "labels": labels_numpy(ctx.labels, task)}
        with torch.no_grad():
            out["clean_pred"] = model.predict(ctx.clean).cpu().numpy().astype(np.int64)
            for key, adv in ctx.adversarial.items():
                out[attack_field("adv_index", key)] = index
                out[attack_field("adv_pred", key)] = model.predict(adv).cpu().numpy().astype(
                    np.int64
                )
        return out

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = self.parse_params(ctx.params)
        labels = list(ctx.labels)
        healthy = healthy_index(labels, params.healthy_label)
        if ctx.task != "multi-label" and healthy is None:
            return Section(
                self.name,
                applicable=False,
                data={},
                reason="no label reads like a healthy class (No Finding, normal, benign, "
                "healthy, grade 0, no DR); set the healthy_label parameter",
            )
        if "clean_pred" not in arrays or arrays["clean_pred"].shape[0] == 0:
            return Section(self.name, applicable=False, data={}, reason="no images were audited")
        attacks: dict[str, Any] = {}
        for key in ctx.attack_keys:
            if attack_field("adv_pred", key) not in arrays:
                continue
            _, c_rows, a_rows = attack_rows(arrays, key, "adv_pred")
            truth = arrays["labels"][c_rows]
            clean = arrays["clean_pred"][c_rows]
            adv = arrays[attack_field("adv_pred", key)][a_rows]
            if ctx.task == "multi-label":
                attacks[key] = multi_label_flips(truth, clean, adv, labels, healthy)
            else:
                assert healthy is not None
                attacks[key] = single_label_flips(truth, clean, adv, labels, healthy)
        data = {
            "task": ctx.task,
            "healthy_label": None if healthy is None else labels[healthy],
            "diseases": [lbl for i, lbl in enumerate(labels) if i != healthy],
            "attacks": attacks,
        }
        fig = flips_figure(attacks)
        return Section(self.name, applicable=True, data=jsonable(data),
                       figures=[fig] if fig is not None else [])


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _counts(count: int, total: int) -> dict[str, Any]:
    return {"count": int(count), "at_risk": int(total), "rate": _rate(int(count), int(total))}


def single_label_flips(
    truth: np.ndarray, clean: np.ndarray, adv: np.ndarray, labels: list[str], healthy: int
) -> dict[str, Any]:
    """Flip directions of one attack on a single-label task (class indices ``[N]``)."""
    truth, clean, adv = (np.asarray(a).astype(np.int64) for a in (truth, clean, adv))
    sick_truth, sick_clean, sick_adv = truth != healthy, clean != healthy, adv != healthy
    missed_risk = sick_truth & sick_clean
    missed = missed_risk & ~sick_adv
    alarm_risk = ~sick_truth & ~sick_clean
    alarm = alarm_risk & sick_adv
    swaps = sick_clean & sick_adv & (clean != adv)
    per_class: dict[str, Any] = {}
    for c, label in enumerate(labels):
        if c == healthy:
            continue
        per_class[label] = {
            "missed_disease": _counts(
                int((missed & (truth == c)).sum()), int((missed_risk & (truth == c)).sum())
            ),
            "false_alarm": _counts(int((alarm & (adv == c)).sum()), int(alarm_risk.sum())),
            "disease_swaps_from": int((swaps & (clean == c)).sum()),
            "disease_swaps_to": int((swaps & (adv == c)).sum()),
        }
    return {
        "n_images": int(truth.shape[0]),
        "missed_disease": _counts(int(missed.sum()), int(missed_risk.sum())),
        "false_alarm": _counts(int(alarm.sum()), int(alarm_risk.sum())),
        "disease_swaps": int(swaps.sum()),
        "per_label": per_class,
        "prediction_flips": {
            "diseased_to_healthy": int((sick_clean & ~sick_adv).sum()),
            "healthy_to_diseased": int((~sick_clean & sick_adv).sum()),
            "disease_to_other_disease": int(swaps.sum()),
        },
    }


def multi_label_flips(
    truth: np.ndarray,
    clean: np.ndarray,
    adv: np.ndarray,
    labels: list[str],
    healthy: int | None,
) -> dict[str, Any]:
    """Flip directions of one attack on a multi-label task (0/1 decisions ``[N, K]``)."""
    truth, clean, adv = (np.asarray(a).astype(bool) for a in (truth, clean, adv))
    diseases = [j for j in range(len(labels)) if j != healthy]
    per_finding: dict[str, Any] = {}
    for j in diseases:
        t, c, a = truth[:, j], clean[:, j], adv[:, j]
        per_finding[labels[j]] = {
            "missed_disease": _counts(int((t & c & ~a).sum()), int((t & c).sum())),
            "false_alarm": _counts(int((~t & ~c & a).sum()), int((~t & ~c).sum())),
        }
    cols = np.asarray(diseases, dtype=np.int64)
    sick_truth = truth[:, cols].any(axis=1)
    sick_clean = clean[:, cols].any(axis=1)
    sick_adv = adv[:, cols].any(axis=1)
    missed_risk = sick_truth & sick_clean
    alarm_risk = ~sick_truth & ~sick_clean
    finding_missed = sum(v["missed_disease"]["count"] for v in per_finding.values())
    finding_missed_risk = sum(v["missed_disease"]["at_risk"] for v in per_finding.values())
    finding_alarm = sum(v["false_alarm"]["count"] for v in per_finding.values())
    finding_alarm_risk = sum(v["false_alarm"]["at_risk"] for v in per_finding.values())
    return {
        "n_images": int(truth.shape[0]),
        # Finding decisions pooled over the diseases:
        "missed_disease": _counts(finding_missed, finding_missed_risk),
        "false_alarm": _counts(finding_alarm, finding_alarm_risk),
        # Whole images: a diseased image that now shows no finding at all, and the reverse.
        "images_made_healthy": _counts(int((missed_risk & ~sick_adv).sum()),
                                       int(missed_risk.sum())),
        "images_made_diseased": _counts(int((alarm_risk & sick_adv).sum()),
                                        int(alarm_risk.sum())),
        "per_label": per_finding,
        "prediction_flips": {
            "positive_to_negative": int((clean[:, cols] & ~adv[:, cols]).sum()),
            "negative_to_positive": int((~clean[:, cols] & adv[:, cols]).sum()),
        },
    }


def flips_figure(attacks: dict[str, Any]) -> Figure | None:
    """Missed-disease and false-alarm rates per finding/class, for the strongest attacks."""
    if not attacks:
        return None

    def strength(key: str) -> float:
        block = attacks[key]
        return (block["missed_disease"]["count"] + block["false_alarm"]["count"]) / max(
            block["n_images"], 1
        )

    shown = sorted(attacks, key=strength, reverse=True)[:MAX_FIGURE_ATTACKS]
    names = list(attacks[shown[0]]["per_label"])
    if not names:
        return None
    fig, grid = new_grid(2, 1, max(6.4, 0.9 * len(names) + 2.5), 5.2, sharex=True)
    axes = grid[:, 0]
    x = np.arange(len(names))
    width = 0.8 / len(shown)
    top = max(
        (attacks[k]["per_label"][n][f]["rate"] or 0.0
         for k in shown for n in names for f in ("missed_disease", "false_alarm")),
        default=0.0,
    )
    ylim = min(1.0, max(0.1, top * 1.2))  # small rates stay readable
    for panel, (field, title) in enumerate(
        (("missed_disease", "missed disease (diseased -> healthy)"),
         ("false_alarm", "false alarm (healthy -> diseased)"))
    ):
        ax = axes[panel]
        for i, key in enumerate(shown):
            rates = [attacks[key]["per_label"][n][field]["rate"] for n in names]
            ax.bar(x + (i - (len(shown) - 1) / 2) * width,
                   [np.nan if r is None else r for r in rates], width,
                   color=PALETTE[i % len(PALETTE)], label=key)
        ax.set_ylabel("rate")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, ylim)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(x, names, rotation=45 if len(names) > 4 else 0,
                       ha="right" if len(names) > 4 else "center", fontsize=8)
    caption = "Share of the calls at risk that the attack flipped, per finding or class."
    if len(attacks) > len(shown):
        caption += f" {len(shown)} of {len(attacks)} attack settings shown (most flips)."
    return Figure(name="clinical_flips", title="Direction of flips", png=render_png(fig),
                  caption=caption)
