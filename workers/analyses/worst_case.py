"""``worst_case``: robust accuracy under the union of the attacks of each budget.

An image counts as robust at a budget (a norm and an eps, e.g. ``linf:eps=4/255``) only if
it is classified right on the clean image and under every attack setting of that budget:
the per-image worst case of AutoAttack (Croce & Hein, 2020, ICML) and RobustBench (Croce
et al., 2021, NeurIPS Datasets and Benchmarks), not the weakest attack's average. An image
that survives PGD but falls to Square counts as broken.

Rules, per image and budget (the candidates are the clean image, then the budget's attack
settings in the audit's order, as AutoAttack credits an image to the first attack of its
sequence that breaks it):

- ``first_broken_by``: the first candidate under which the image is misclassified
  (``"clean"``: already wrong without attack); images no candidate breaks are ``not_broken``.
- worst-case output (for the AUROC): the output of that first breaking candidate; for an
  image no candidate breaks, the candidate with the highest loss
  (:func:`workers.analyses.metrics.per_image_loss`). Robust accuracy is exactly the accuracy
  of these outputs.
- multi-label, per finding: a finding is robust when its decision is right under every
  candidate; its worst-case probability is the candidate's lowest probability where the
  finding is present and highest where it is absent (the worst binary cross-entropy on that
  finding), which is what the per-finding AUROC is computed on.

Attacks without a budget (minimum-norm attacks: DeepFool, C&W) belong to no budget and are
listed under ``unbudgeted_attacks``. Intervals are percentile bootstraps of the images
(the quantitative analysis's resamples and seed); a proportion at 0 or 1, where the
bootstrap has no spread, gets its Wilson interval instead (see
:mod:`workers.analyses.stats`).

This section is derived from the per-image arrays of ``quantitative`` (``labels``,
``clean_probs``, ``adv_probs[k]``); the engine computes it whenever ``quantitative`` ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.analyses import metrics as M
from workers.analyses.alignment import attack_field, attack_rows, clean_rows
from workers.analyses.attack_keys import AttackInfo, attack_infos
from workers.analyses.base import Section, SummaryContext
from workers.analyses.bootstrap import Bootstrap
from workers.analyses.jsonable import jsonable

NAME = "worst_case"
RULE = (
    "an image is robust at a budget only if it is right on the clean image and under every "
    "attack setting of that budget; it is credited to the first candidate that breaks it "
    "(clean first, then the attacks in the audit's order); the worst-case output of an "
    "unbroken image is the candidate with the highest loss"
)
FIRST_BROKEN_ORDER = "clean image first, then the budget's attacks in the audit's order"


@dataclass(frozen=True)
class Union:
    """The per-image worst case of one budget (rows aligned with ``positions``)."""

    positions: np.ndarray
    labels: np.ndarray
    candidates: list[str]
    probs: np.ndarray  # [C, N, K], candidate 0 is the clean image
    correct: np.ndarray  # [C, N]

    @property
    def robust(self) -> np.ndarray:
        return np.asarray(self.correct.all(axis=0))

    def first_broken(self) -> np.ndarray:
        """``[N]`` index of the first breaking candidate; ``-1`` where none breaks."""
        wrong = ~self.correct
        first = np.argmax(wrong, axis=0)
        return np.where(wrong.any(axis=0), first, -1)

    def worst_probs(self, task: str) -> np.ndarray:
        """``[N, K]`` the worst-case output of each image (see the module docstring)."""
        losses = np.stack([M.per_image_loss(p, self.labels, task) for p in self.probs])
        first = self.first_broken()
        choice = np.where(first >= 0, first, np.argmax(losses, axis=0))
        return self.probs[choice, np.arange(self.probs.shape[1])]

    def finding_worst(self) -> tuple[np.ndarray, np.ndarray]:
        """Multi-label: ``[N, K]`` per-finding worst probability and per-finding robustness."""
        truth = np.asarray(self.labels).astype(bool)
        worst = np.where(truth, self.probs.min(axis=0), self.probs.max(axis=0))
        return worst, truth


def budgets(infos: dict[str, AttackInfo]) -> tuple[dict[str, list[str]], list[str]]:
    """``({budget key: attack keys in audit order}, attack keys without a budget)``."""
    groups: dict[str, list[str]] = {}
    unbudgeted: list[str] = []
    for key, info in infos.items():
        if info.budget is None:
            unbudgeted.append(key)
        else:
            groups.setdefault(info.budget, []).append(key)
    return groups, unbudgeted


def union_of(
    arrays: dict[str, np.ndarray], keys: Iterable[str], task: str,
    thresholds: np.ndarray | None,
) -> Union | None:
    """The clean image and ``keys``' adversarial outputs on the images every one covers."""
    keys = [k for k in keys if attack_field("adv_probs", k) in arrays]
    if not keys or "clean_probs" not in arrays:
        return None
    all_positions, rows = clean_rows(arrays, "clean_probs")
    positions = all_positions
    by_key = {}
    for key in keys:
        pos, _, a_rows = attack_rows(arrays, key, "adv_probs")
        by_key[key] = dict(zip(pos.tolist(), a_rows.tolist(), strict=True))
        positions = positions[np.isin(positions, pos)]
    if positions.size == 0:
        return None
    # Only the images every attack of the budget covers (a partial audit covers fewer).
    c_rows = rows[np.searchsorted(all_positions, positions)]
    labels = arrays["labels"][c_rows]
    probs = [arrays["clean_probs"][c_rows].astype(np.float64)]
    for key in keys:
        a_rows = np.array([by_key[key][p] for p in positions.tolist()], dtype=np.int64)
        probs.append(arrays[attack_field("adv_probs", key)][a_rows].astype(np.float64))
    stacked = np.stack(probs)
    correct = np.stack([M.correct(M.predictions(p, task, thresholds), labels, task)
                        for p in stacked])
    return Union(positions, labels, ["clean", *keys], stacked, correct)


def _auroc_block(probs: np.ndarray, truth_bin: np.ndarray, names: list[str],
                 boot: Bootstrap) -> dict[str, Any]:
    per = [M.auroc(probs[:, j], truth_bin[:, j]) for j in range(probs.shape[1])]
    defined = [a for a in per if np.isfinite(a)]
    return {
        "auroc": dict(zip(names, per, strict=True)),
        "mean_auroc": float(np.mean(defined)) if defined else None,
        "mean_auroc_ci": boot.interval(M.mean_auroc_statistic(probs, truth_bin),
                                       probs.shape[0]),
    }


def _per_finding(u: Union, names: list[str], thresholds: np.ndarray | None,
                 boot: Bootstrap) -> dict[str, Any]:
    worst, truth = u.finding_worst()
    t = np.full(len(names), 0.5) if thresholds is None else thresholds
    decisions = u.probs >= t  # [C, N, K]
    robust = (decisions == truth[None]).all(axis=0)
    out: dict[str, Any] = {}
    for j, name in enumerate(names):
        ci, method = boot.proportion(robust[:, j])
        out[name] = {
            "robust_accuracy": float(robust[:, j].mean()),
            "robust_accuracy_ci": ci,
            "robust_accuracy_ci_method": method,
            "auroc": M.auroc(worst[:, j], truth[:, j]),
        }
    return out


def budget_block(u: Union, info: dict[str, AttackInfo], task: str, names: list[str],
                 thresholds: np.ndarray | None, boot: Bootstrap) -> dict[str, Any]:
    """The worst case of one budget (see the module docstring for the rules)."""
    first = u.first_broken()
    robust = u.robust
    n = int(robust.size)
    ci, method = boot.proportion(robust)
    attack_keys = u.candidates[1:]
    accuracies = {k: float(u.correct[i + 1].mean()) for i, k in enumerate(attack_keys)}
    strongest = min(attack_keys, key=lambda k: (accuracies[k], attack_keys.index(k)))
    clean_ok = u.correct[0]
    some = info[attack_keys[0]]
    block: dict[str, Any] = {
        "norm": some.norm,
        "eps": some.eps,
        "eps_255": None if some.eps is None else some.eps * 255.0,
        "attacks": attack_keys,
        "n_images": n,
        "clean_accuracy": float(clean_ok.mean()),
        "robust_accuracy": float(robust.mean()),
        "robust_accuracy_ci": ci,
        "robust_accuracy_ci_method": method,
        "n_robust": int(robust.sum()),
        "first_broken_by": {c: int((first == i).sum()) for i, c in enumerate(u.candidates)},
        "not_broken": int((first < 0).sum()),
        "broken_by": {k: int((clean_ok & ~u.correct[i + 1]).sum())
                      for i, k in enumerate(attack_keys)},
        "only_broken_by": {
            k: int((clean_ok & ~u.correct[i + 1]
                    & np.delete(u.correct[1:], i, axis=0).all(axis=0)).sum())
            for i, k in enumerate(attack_keys)
        },
        "strongest_single_attack": strongest,
        "strongest_single_accuracy": accuracies[strongest],
        "union_gain": accuracies[strongest] - float(robust.mean()),
    }
    k = u.probs.shape[2]
    if task == "multi-label":
        worst, truth = u.finding_worst()
        block.update(_auroc_block(worst, truth.astype(np.int8), names, boot))
        block["per_finding"] = _per_finding(u, names, thresholds, boot)
    else:
        truth_bin = M.binary_matrix(u.labels, task, k)
        block.update(_auroc_block(u.worst_probs(task), truth_bin, names, boot))
    return block


def summarize_worst_case(
    arrays: dict[str, np.ndarray], ctx: SummaryContext, boot: Bootstrap
) -> Section:
    """The ``worst_case`` section from the arrays of ``quantitative``."""
    if "clean_probs" not in arrays or arrays["clean_probs"].shape[0] == 0:
        return Section(NAME, applicable=False, data={}, reason="no images were audited")
    infos = attack_infos(list(ctx.attack_keys), ctx.params.get("attacks"))
    groups, unbudgeted = budgets(infos)
    thresholds = np.asarray(ctx.thresholds, dtype=np.float64) if ctx.thresholds else None
    names = list(ctx.labels)
    blocks: dict[str, Any] = {}
    for budget, keys in groups.items():
        u = union_of(arrays, keys, ctx.task, thresholds)
        if u is not None:
            blocks[budget] = budget_block(u, infos, ctx.task, names, thresholds, boot)
    if not blocks:
        reason = ("no attack setting of the audit has a budget (eps)" if not groups
                  else "no budget's attacks were measured")
        return Section(NAME, applicable=False, data={}, reason=reason)
    data = {
        "rule": RULE,
        "first_broken_order": FIRST_BROKEN_ORDER,
        "task": ctx.task,
        "accuracy_definition": M.accuracy_definition(ctx.task),
        "bootstrap": {"resamples": boot.n_boot, "confidence": boot.confidence,
                      "seed": boot.seed},
        "budgets": blocks,
        "unbudgeted_attacks": unbudgeted,
    }
    return Section(NAME, applicable=True, data=jsonable(data))
