"""``quantitative``: clean vs adversarial performance, per attack setting.

The first analysis of Xu et al. (2021), *Towards Evaluating the Robustness of Deep
Diagnostic Models by Adversarial Attack* (MedIA 69, 101977), section "quantitative
results", with the statistics a report needs to be trusted:

- accuracy (multi-label: every finding right), balanced accuracy, AUROC per finding
  (single-label: one-vs-rest per class) and its mean, sensitivity and specificity at the
  card's thresholds, the mean confidence of the wrong answers, for the clean images and for
  each attack setting;
- fooling rate (share of images whose prediction changes under attack; multi-label: any
  finding decision changes), attack success rate (share of the images right on clean that
  the attack makes wrong), perturbation sizes (L-infinity and L2 norms of ``adv - clean`` in
  [0, 1] pixel units, as reported by the attack and as measured on the 8-bit images);
- the robustness curve (accuracy against eps for each attack, clean accuracy at eps 0) and
  the distribution of each image's minimum fooling eps when the audit computed it;
- percentile bootstrap intervals (seeded, paired between clean and adversarial) for
  accuracy, AUROC and fooling rate.

``collect`` stores probabilities and labels only; every number is computed in
``summarize``.

Arrays (per image, keyed by dataset position, see :mod:`workers.analyses.alignment`):
``index``, ``labels``, ``clean_probs`` ``[N, K]``, ``min_eps`` (nan = not computed), and per
attack key ``adv_index[k]``, ``adv_probs[k]``, ``linf[k]``, ``l2[k]`` (measured),
``attack_linf[k]``, ``attack_l2[k]``, ``attack_success[k]`` (from the attack, nan when
absent).

Injected parameters read (see :mod:`workers.analyses.analysis_params`):
``BatchContext.params["attack_stats"][key]`` = ``{"linf", "l2", "success"}`` per-image
arrays, ``BatchContext.params["min_eps"]`` ``[N]`` (optional),
``SummaryContext.params["attacks"]`` = ``{key: {"name", "eps", "params"}}`` and
``SummaryContext.params["seed"]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from app.core.catalogue.analyses import QuantitativeParams
from models.wrapper import DiagnosticModel
from workers.analyses import metrics as M
from workers.analyses.alignment import attack_field, attack_rows, clean_rows
from workers.analyses.analysis_params import parse_params
from workers.analyses.attack_keys import AttackInfo, attack_infos
from workers.analyses.base import Analysis, BatchContext, Section, SummaryContext
from workers.analyses.bootstrap import Bootstrap
from workers.analyses.jsonable import jsonable
from workers.analyses.quantitative_figures import (
    auroc_figure,
    min_eps_figure,
    robustness_curve_figure,
)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def labels_numpy(labels: torch.Tensor, task: str) -> np.ndarray:
    """Labels as stored: ``int64 [N]`` (single-label) or ``int8 [N, K]`` (multi-label)."""
    arr = _numpy(labels)
    return arr.astype(np.int8) if task == "multi-label" else arr.astype(np.int64)


def perturbation_norms(clean: torch.Tensor, adv: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L-infinity and L2 norms of ``adv - clean`` (``[N, C, H, W]`` in [0, 1])."""
    delta = (adv.detach().float() - clean.detach().float()).flatten(1)
    linf = delta.abs().amax(dim=1) if delta.shape[1] else torch.zeros(delta.shape[0])
    l2 = delta.norm(p=2, dim=1)
    return linf.cpu().numpy().astype(np.float64), l2.cpu().numpy().astype(np.float64)


def _per_image(value: Any, n: int, what: str) -> np.ndarray:
    arr = _numpy(value).astype(np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{what} has {arr.shape[0]} values for a batch of {n} images")
    return arr


class QuantitativeAnalysis(Analysis):
    """Clean vs adversarial metrics per attack setting (see the module docstring)."""

    name: ClassVar[str] = "quantitative"
    Params: ClassVar[type[QuantitativeParams]] = QuantitativeParams
    #: Without attacks it reports the clean metrics alone.
    needs_adversarial: ClassVar[bool] = False

    def parse_params(self, params: dict[str, Any] | None) -> QuantitativeParams:
        return parse_params(QuantitativeParams, params, self.name)

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        self.parse_params(ctx.params)
        model: DiagnosticModel = ctx.model
        task = model.card.task
        n = ctx.clean.shape[0]
        index = np.asarray(ctx.indices).astype(np.int64)
        out: dict[str, np.ndarray] = {
            "index": index,
            "labels": labels_numpy(ctx.labels, task),
        }
        stats: dict[str, dict[str, Any]] = ctx.params.get("attack_stats") or {}
        with torch.no_grad():
            out["clean_probs"] = _numpy(model.probabilities(ctx.clean)).astype(np.float32)
            for key, adv in ctx.adversarial.items():
                out[attack_field("adv_index", key)] = index
                out[attack_field("adv_probs", key)] = _numpy(model.probabilities(adv)).astype(
                    np.float32
                )
                linf, l2 = perturbation_norms(ctx.clean, adv)
                out[attack_field("linf", key)] = linf
                out[attack_field("l2", key)] = l2
                given = stats.get(key) or {}
                for field in ("linf", "l2", "success"):
                    value = given.get(field)
                    out[attack_field(f"attack_{field}", key)] = (
                        _per_image(value, n, f"attack_stats[{key!r}][{field!r}]")
                        if value is not None
                        else np.full(n, np.nan)
                    )
        min_eps = ctx.params.get("min_eps")
        out["min_eps"] = (
            _per_image(min_eps, n, "min_eps") if min_eps is not None else np.full(n, np.nan)
        )
        return out

    # ------------------------------------------------------------------ summarize

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = self.parse_params(ctx.params)
        if "clean_probs" not in arrays or arrays["clean_probs"].shape[0] == 0:
            return Section(self.name, applicable=False, data={}, reason="no images were audited")
        seed = (
            params.bootstrap_seed
            if params.bootstrap_seed is not None
            else int(ctx.params.get("seed", 0) or 0)
        )
        boot = Bootstrap(params.n_bootstrap, params.confidence, seed)
        task, labels_names = ctx.task, list(ctx.labels)
        thresholds = np.asarray(ctx.thresholds, dtype=np.float64) if ctx.thresholds else None

        positions, rows = clean_rows(arrays, "clean_probs")
        labels = arrays["labels"][rows]
        clean_probs = arrays["clean_probs"][rows].astype(np.float64)
        clean = metric_block(clean_probs, labels, task, labels_names, thresholds, boot)

        infos = attack_infos(list(ctx.attack_keys), ctx.params.get("attacks"))
        attacks: dict[str, Any] = {}
        missing: list[str] = []
        for key, info in infos.items():
            if attack_field("adv_probs", key) not in arrays:
                missing.append(key)
                continue
            attacks[key] = self._attack_block(arrays, key, info, task, labels_names,
                                              thresholds, boot, (positions, clean))

        curves = robustness_curves(clean, attacks, infos)
        min_eps = min_eps_summary(arrays.get("min_eps"), rows, params.min_eps_bins)
        data: dict[str, Any] = {
            "n_images": int(positions.shape[0]),
            "task": task,
            "head": ctx.head,
            "labels": labels_names,
            "accuracy_definition": M.accuracy_definition(task),
            "thresholds": None if thresholds is None else thresholds.tolist(),
            "bootstrap": {
                "resamples": params.n_bootstrap,
                "confidence": params.confidence,
                "seed": seed,
                "method": "percentile; paired multinomial resampling of images; Wilson "
                "score interval for a proportion where every image agrees (0 or 1)",
            },
            "clean": clean,
            "attacks": attacks,
            "robustness_curves": curves,
            "min_eps": min_eps,
        }
        if missing:
            data["missing_attacks"] = missing
        figures = [
            fig
            for fig in (
                robustness_curve_figure(curves),
                auroc_figure(clean, attacks, labels_names),
                min_eps_figure(min_eps),
            )
            if fig is not None
        ]
        return Section(self.name, applicable=True, data=jsonable(data), figures=figures)

    def _attack_block(
        self,
        arrays: dict[str, np.ndarray],
        key: str,
        info: AttackInfo,
        task: str,
        label_names: list[str],
        thresholds: np.ndarray | None,
        boot: Bootstrap,
        all_clean: tuple[np.ndarray, dict[str, Any]],
    ) -> dict[str, Any]:
        positions, c_rows, a_rows = attack_rows(arrays, key, "adv_probs")
        labels = arrays["labels"][c_rows]
        p_clean = arrays["clean_probs"][c_rows].astype(np.float64)
        p_adv = arrays[attack_field("adv_probs", key)][a_rows].astype(np.float64)
        # Clean metrics on the attacked images: the audit-wide ones when it covers them all.
        clean = (
            all_clean[1]
            if np.array_equal(positions, all_clean[0])
            else metric_block(p_clean, labels, task, label_names, thresholds, boot)
        )
        adversarial = metric_block(p_adv, labels, task, label_names, thresholds, boot)

        pred_c = M.predictions(p_clean, task, thresholds)
        pred_a = M.predictions(p_adv, task, thresholds)
        flipped = M.changed(pred_c, pred_a, task)
        ok_clean = M.correct(pred_c, labels, task)
        ok_adv = M.correct(pred_a, labels, task)
        n = labels.shape[0]
        block: dict[str, Any] = {
            "name": info.name,
            "eps": info.eps,
            "eps_255": None if info.eps is None else info.eps * 255.0,
            "params": info.params,
            "n_images": n,
            "clean": clean,
            "adversarial": adversarial,
            "fooling_rate": _mean(flipped),
            "fooling_rate_ci": boot.proportion(flipped)[0],
            "attack_success_rate": _mean(~ok_adv[ok_clean]),
            "n_initially_correct": int(ok_clean.sum()),
            "accuracy_drop": _diff(clean["accuracy"], adversarial["accuracy"]),
            "accuracy_drop_ci": boot.interval(
                M.accuracy_statistic(ok_clean.astype(np.float64) - ok_adv), n
            ),
            "perturbation": _norms(arrays, key, a_rows, "attack_"),
            "perturbation_measured": _norms(arrays, key, a_rows, ""),
        }
        if task == "multi-label":
            per = np.asarray(pred_c != pred_a).mean(axis=0) if n else np.full(len(label_names),
                                                                               np.nan)
            block["fooling_rate_per_finding"] = dict(zip(label_names, per.tolist(), strict=True))
        success = arrays.get(attack_field("attack_success", key))
        if success is not None:
            s = success[a_rows]
            s = s[~np.isnan(s)]
            block["attack_reported_success_rate"] = float(s.mean()) if s.size else None
        return block


# ---------------------------------------------------------------------- metric blocks


def _mean(mask: np.ndarray) -> float | None:
    return float(np.mean(mask)) if np.asarray(mask).size else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _norms(arrays: dict[str, np.ndarray], key: str, rows: np.ndarray,
           prefix: str) -> dict[str, float | None] | None:
    linf = arrays.get(attack_field(f"{prefix}linf", key))
    l2 = arrays.get(attack_field(f"{prefix}l2", key))
    if linf is None or l2 is None:
        return None
    linf, l2 = linf[rows], l2[rows]
    if linf.size == 0 or np.isnan(linf).all():
        return None
    return {
        "linf_mean": _finite(np.nanmean(linf)),
        "linf_max": _finite(np.nanmax(linf)),
        "l2_mean": _finite(np.nanmean(l2)) if not np.isnan(l2).all() else None,
        "l2_max": _finite(np.nanmax(l2)) if not np.isnan(l2).all() else None,
    }


def metric_block(
    probs: np.ndarray,
    labels: np.ndarray,
    task: str,
    label_names: list[str],
    thresholds: np.ndarray | None,
    boot: Bootstrap,
) -> dict[str, Any]:
    """The metrics of one set of predictions (clean, or one attack's)."""
    k = probs.shape[1]
    n = probs.shape[0]
    pred = M.predictions(probs, task, thresholds)
    ok = M.correct(pred, labels, task)
    truth_bin = M.binary_matrix(labels, task, k)
    pred_bin = M.binary_matrix(pred, task, k)
    sens, spec = M.sensitivity_specificity(pred_bin, truth_bin)
    aucs = M.per_label_auroc(probs, labels, task)
    auc_cis, mean_auc_ci = boot.auroc_intervals(probs, truth_bin.astype(bool))
    defined = aucs[~np.isnan(aucs)]
    accuracy_ci, accuracy_method = boot.proportion(ok)
    loss = M.per_image_loss(probs, labels, task) if n else np.zeros(0)
    block: dict[str, Any] = {
        "n_images": n,
        "accuracy": _mean(ok),
        "accuracy_ci": accuracy_ci,
        "accuracy_ci_method": accuracy_method,
        "balanced_accuracy": _finite(M.balanced_accuracy(pred, labels, task, k)),
        "auroc": dict(zip(label_names, [_finite(a) for a in aucs], strict=True)),
        "auroc_ci": dict(zip(label_names, auc_cis, strict=True)),
        "mean_auroc": float(defined.mean()) if defined.size else None,
        "mean_auroc_ci": mean_auc_ci,
        "sensitivity": dict(zip(label_names, [_finite(s) for s in sens], strict=True)),
        "specificity": dict(zip(label_names, [_finite(s) for s in spec], strict=True)),
        "mean_confidence_wrong": _finite(M.mean_confidence_wrong(probs, labels, task,
                                                                 thresholds)),
        "mean_loss": float(loss.mean()) if n else None,
    }
    if task == "multi-label":
        block["finding_accuracy"] = float((pred_bin == truth_bin).mean()) if n else None
    return block


# ---------------------------------------------------------------------- curves and min eps


def robustness_curves(
    clean: dict[str, Any], attacks: dict[str, Any], infos: dict[str, AttackInfo]
) -> dict[str, list[dict[str, Any]]]:
    """Accuracy against eps for each group of settings (see :attr:`AttackInfo.group`).

    Every curve starts at eps 0 with the clean accuracy; points are sorted by eps.
    """
    curves: dict[str, list[dict[str, Any]]] = {}
    for key, block in attacks.items():
        info = infos[key]
        if info.eps is None:
            continue
        curves.setdefault(info.group, []).append(
            {
                "key": key,
                "eps": info.eps,
                "eps_255": info.eps * 255.0,
                "accuracy": block["adversarial"]["accuracy"],
                "accuracy_ci": block["adversarial"]["accuracy_ci"],
            }
        )
    for group, points in curves.items():
        points.sort(key=lambda p: p["eps"])
        curves[group] = [
            {
                "key": None,
                "eps": 0.0,
                "eps_255": 0.0,
                "accuracy": clean["accuracy"],
                "accuracy_ci": clean["accuracy_ci"],
            },
            *points,
        ]
    return curves


def min_eps_summary(
    values: np.ndarray | None, rows: np.ndarray, bins: int
) -> dict[str, Any] | None:
    """Distribution of per-image minimum eps; ``None`` when the audit did not compute it.

    ``nan`` means not computed for that image, ``inf`` not fooled within the search range.
    """
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)[rows]
    v = v[~np.isnan(v)]
    if v.size == 0:
        return None
    finite = v[np.isfinite(v)]
    out: dict[str, Any] = {
        "n_images": int(v.size),
        "n_not_fooled": int(v.size - finite.size),
        "unit": "L-infinity eps in [0, 1] pixel units",
    }
    if finite.size:
        hi = float(finite.max()) if finite.max() > 0 else 1.0 / 255.0
        counts, edges = np.histogram(finite, bins=bins, range=(0.0, hi))
        q = np.quantile(finite, [0.1, 0.25, 0.5, 0.75, 0.9])
        out.update(
            {
                "mean": float(finite.mean()),
                "median": float(q[2]),
                "quantiles": {"p10": q[0], "p25": q[1], "p50": q[2], "p75": q[3], "p90": q[4]},
                "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
            }
        )
    return out
