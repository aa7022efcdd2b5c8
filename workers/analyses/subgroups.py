"""``subgroups``: clean and worst-case robust accuracy per patient group and acquisition.

Robustness differs by patient group and by how the image was taken; an average hides the
group that fails. For every metadata attribute of the dataset (CSV columns, DICOM tags such
as ``PatientSex``, a banded ``PatientAge``, ``ViewPosition``, ``Manufacturer``), and every
value of it (a group), this section reports:

- the clean accuracy and AUROC of the group, and its robust accuracy at every budget under
  the per-image worst case of :mod:`workers.analyses.worst_case` (right on the clean image
  and under every attack of the budget);
- for each of these accuracies, whether the group is significantly below the rest of the
  images: a one-sided Fisher exact test (group vs every other image with a value of the
  attribute), with the Holm correction over every test of the section (every attribute,
  group and budget), at family-wise level ``alpha``;
- the worst group per budget among groups of at least ``min_group_size`` images (smaller
  groups are shown, marked ``small``, and neither flagged nor used by the policy).

Intervals are percentile bootstraps, Wilson where every image of the group agrees.
Attributes that would single out patients are left out: identifier-like names (``id``,
``uid``, ``name``, ``birth``, ``date``, ``accession``, ``mrn``, ...) and attributes with
more distinct values than ``MAX_GROUPS`` or than half the images.

Metadata arrives as one ``{attribute: value}`` dict per dataset image, in dataset order; an
empty value is "missing" and the image is left out of that attribute's groups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workers.analyses import metrics as M
from workers.analyses.alignment import clean_rows
from workers.analyses.attack_keys import attack_infos
from workers.analyses.base import Section, SummaryContext
from workers.analyses.bootstrap import Bootstrap
from workers.analyses.jsonable import jsonable
from workers.analyses.stats import fisher_less, holm
from workers.analyses.worst_case import Union, budgets, union_of

NAME = "subgroups"
NO_METADATA = "the dataset has no metadata"
ALPHA = 0.05
MIN_GROUP_SIZE = 10
MAX_GROUPS = 20
CLEAN = "clean"
_IDENTIFYING = re.compile(
    r"(^|_)(id|uid|name|birth|date|accession|mrn|ssn|address|phone|email)($|_)"
    r"|(id|uid|name|date)$",
    re.IGNORECASE,
)
TEST = (
    "one-sided Fisher exact test of the group's accuracy against the rest of the images "
    "with a value of the attribute; Holm correction over every test of the section"
)


def is_identifying(attribute: str) -> bool:
    """Whether an attribute name looks like a patient or study identifier."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", attribute)
    return bool(_IDENTIFYING.search(snake))


def attribute_values(
    metadata: Sequence[Mapping[str, str]], positions: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({attribute: values [N] ("" = missing)}, {skipped attribute: why})`` for the
    audited images (``positions`` into ``metadata``)."""
    rows = [metadata[int(p)] if 0 <= int(p) < len(metadata) else {} for p in positions]
    names = sorted({str(k) for row in rows for k in row})
    kept: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    limit = min(MAX_GROUPS, max(len(rows) // 2, 2))
    for name in names:
        values = np.array([str(row.get(name, "") or "").strip() for row in rows], dtype=object)
        distinct = {v for v in values if v}
        if is_identifying(name):
            skipped[name] = "may identify patients"
        elif len(distinct) > limit:
            skipped[name] = f"{len(distinct)} distinct values, more than {limit}"
        elif distinct:
            kept[name] = values
    return kept, skipped


def _rate_block(ok: np.ndarray, boot: Bootstrap) -> dict[str, Any]:
    ci, method = boot.proportion(ok)
    return {"accuracy": float(ok.mean()) if ok.size else None, "accuracy_ci": ci,
            "accuracy_ci_method": method, "n_correct": int(ok.sum())}


def _group_metrics(
    member: np.ndarray, present: np.ndarray, outcomes: dict[str, np.ndarray],
    probs: np.ndarray, truth_bin: np.ndarray, boot: Bootstrap,
) -> dict[str, Any]:
    rest = present & ~member
    metrics: dict[str, Any] = {}
    for what, ok in outcomes.items():
        block = _rate_block(ok[member], boot)
        k_rest, n_rest = int(ok[rest].sum()), int(rest.sum())
        block["rest_accuracy"] = k_rest / n_rest if n_rest else None
        block["difference"] = (None if block["rest_accuracy"] is None
                               else block["accuracy"] - block["rest_accuracy"])
        block["p_value"] = fisher_less(block["n_correct"], int(member.sum()), k_rest, n_rest)
        metrics[what] = block
    aucs = [M.auroc(probs[member, j], truth_bin[member, j]) for j in range(probs.shape[1])]
    defined = [a for a in aucs if np.isfinite(a)]
    metrics[CLEAN]["mean_auroc"] = float(np.mean(defined)) if defined else None
    return metrics


def _flag(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    """Holm over every (attribute, group, measure) test of non-small groups; mark the
    significant ones in place and return them."""
    tests = [(a, g, w, m) for a, block in attributes.items()
             for g, grp in block["groups"].items() if not grp["small"]
             for w, m in grp["metrics"].items()]
    adjusted = holm([m["p_value"] for *_, m in tests])
    flagged = []
    for (attribute, group, what, m), p_adj in zip(tests, adjusted, strict=True):
        m["p_adjusted"] = p_adj
        m["significantly_below"] = bool(p_adj < ALPHA and (m["difference"] or 0) < 0)
        if m["significantly_below"]:
            flagged.append({"attribute": attribute, "group": group, "measure": what,
                            "accuracy": m["accuracy"], "rest_accuracy": m["rest_accuracy"],
                            "p_adjusted": p_adj})
    return flagged


def _worst(attributes: dict[str, Any], measures: list[str]) -> dict[str, Any]:
    worst: dict[str, Any] = {}
    for what in measures:
        best: dict[str, Any] | None = None
        for attribute, block in attributes.items():
            for group, grp in block["groups"].items():
                acc = grp["metrics"][what]["accuracy"]
                if grp["small"] or acc is None:
                    continue
                if best is None or acc < best["accuracy"]:
                    best = {"attribute": attribute, "group": group, "accuracy": acc,
                            "n_images": grp["n_images"]}
        worst[what] = best
    return worst


def summarize_subgroups(
    arrays: dict[str, np.ndarray], ctx: SummaryContext, boot: Bootstrap,
    metadata: Sequence[Mapping[str, str]] | None,
) -> Section:
    """The ``subgroups`` section from the arrays of ``quantitative`` and the metadata."""
    if not metadata or not any(metadata):
        return Section(NAME, applicable=False, data={}, reason=NO_METADATA)
    thresholds = np.asarray(ctx.thresholds, dtype=np.float64) if ctx.thresholds else None
    infos = attack_infos(list(ctx.attack_keys), ctx.params.get("attacks"))
    groups, _ = budgets(infos)
    unions: dict[str, Union] = {}
    for budget, keys in groups.items():
        u = union_of(arrays, keys, ctx.task, thresholds)
        if u is not None:
            unions[budget] = u
    base = union_of_clean(arrays, ctx.task, thresholds)
    if base is None:
        return Section(NAME, applicable=False, data={}, reason="no images were audited")
    positions, clean_ok, probs, labels = base
    outcomes: dict[str, np.ndarray] = {CLEAN: clean_ok}
    for budget, u in unions.items():
        # Images an attack did not cover (a partial audit) count as unknown, not robust.
        robust = np.full(positions.shape, False)
        covered = np.isin(positions, u.positions)
        robust[covered] = u.robust[np.searchsorted(u.positions, positions[covered])]
        if covered.all():
            outcomes[budget] = robust
    values, skipped = attribute_values(metadata, positions)
    if not values:
        return Section(NAME, applicable=False, data={"skipped_attributes": skipped},
                       reason="no metadata attribute with groups to compare")
    truth_bin = M.binary_matrix(labels, ctx.task, probs.shape[1])
    attributes: dict[str, Any] = {}
    for attribute, vals in values.items():
        present = vals != ""
        block: dict[str, Any] = {"n_missing": int((~present).sum()), "groups": {}}
        for group in sorted({v for v in vals if v}):
            member = vals == group
            block["groups"][group] = {
                "n_images": int(member.sum()),
                "small": bool(member.sum() < MIN_GROUP_SIZE),
                "metrics": _group_metrics(member, present, outcomes, probs, truth_bin, boot),
            }
        attributes[attribute] = block
    flagged = _flag(attributes)
    data = {
        "n_images": int(positions.size),
        "measures": list(outcomes),
        "test": TEST,
        "alpha": ALPHA,
        "min_group_size": MIN_GROUP_SIZE,
        "accuracy_definition": M.accuracy_definition(ctx.task),
        "attributes": attributes,
        "skipped_attributes": skipped,
        "flagged": flagged,
        "worst_group": _worst(attributes, list(outcomes)),
    }
    flags = [
        f"{f['attribute']}={f['group']}: {f['measure']} accuracy {f['accuracy']:.3f} is "
        f"significantly below the rest ({f['rest_accuracy']:.3f}; Holm-adjusted p "
        f"{f['p_adjusted']:.3g})"
        for f in flagged
    ]
    return Section(NAME, applicable=True, data=jsonable(data), flags=flags)


def union_of_clean(
    arrays: dict[str, np.ndarray], task: str, thresholds: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(positions, clean correct, clean probs, labels)`` of every audited image."""
    if "clean_probs" not in arrays or arrays["clean_probs"].shape[0] == 0:
        return None
    positions, rows = clean_rows(arrays, "clean_probs")
    probs = arrays["clean_probs"][rows].astype(np.float64)
    labels = arrays["labels"][rows]
    ok = M.correct(M.predictions(probs, task, thresholds), labels, task)
    return positions, np.asarray(ok), probs, labels
