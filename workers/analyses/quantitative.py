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

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch

from app.core.catalogue.analyses import QuantitativeParams
from models.wrapper import DiagnosticModel
from workers.analyses import metrics as M
from workers.analyses.alignment import attack_field, attack_rows, clean_rows
from workers.analyses.analysis_params import parse_params
from workers.analyses.attack_keys import AttackInfo, attack_infos
from workers.analyses.base import Analysis, BatchContext, Figure, Section, SummaryContext
from workers.analyses.jsonable import jsonable
from workers.analyses.plotting import PALETTE, new_figure, render_png

MAX_AUROC_SERIES = 4


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
        boot = _Bootstrap(params.n_bootstrap, params.confidence, seed)
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
            "thresholds": None if thresholds is None else thresholds.tolist(),
            "bootstrap": {
                "resamples": params.n_bootstrap,
                "confidence": params.confidence,
                "seed": seed,
                "method": "percentile; paired multinomial resampling of images",
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
        boot: _Bootstrap,
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
            "fooling_rate_ci": boot.interval(M.accuracy_statistic(flipped), n),
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


class _Bootstrap:
    """Seeded resamples shared by every interval of a section (drawn once when small)."""

    #: Keep the drawn resamples in memory up to this many counts (float32: 4 bytes each).
    CACHE_ELEMENTS = 32_000_000

    def __init__(self, n_boot: int, confidence: float, seed: int) -> None:
        self.n_boot = n_boot
        self.confidence = confidence
        self.seed = seed
        self._cache: dict[int, list[np.ndarray]] = {}

    def weights(self, n: int) -> Iterable[np.ndarray]:
        if n * self.n_boot > self.CACHE_ELEMENTS:
            return M.bootstrap_weights(n, self.n_boot, self.seed)
        if n not in self._cache:
            self._cache[n] = list(M.bootstrap_weights(n, self.n_boot, self.seed))
        return self._cache[n]

    def interval(self, statistic: M.Statistic, n: int) -> list[float] | None:
        if self.n_boot == 0 or n == 0:
            return None
        lo, hi = M.bootstrap_ci(
            statistic, n, n_boot=self.n_boot, confidence=self.confidence, seed=self.seed,
            weights=self.weights(n),
        )
        return None if np.isnan(lo) else [lo, hi]

    def auroc_intervals(
        self, probs: np.ndarray, truth: np.ndarray
    ) -> tuple[list[list[float] | None], list[float] | None]:
        """Per-column AUROC intervals and the interval of their mean, from one pass."""
        k = probs.shape[1]
        if self.n_boot == 0 or probs.shape[0] == 0:
            return [None] * k, None
        per_chunks = []
        for w in self.weights(probs.shape[0]):
            per_chunks.append(
                np.stack([M.weighted_auroc(probs[:, j], truth[:, j], w) for j in range(k)])
            )
        per = np.concatenate(per_chunks, axis=1)
        defined = ~np.isnan(per)
        count = defined.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, np.where(defined, per, 0.0).sum(axis=0) / count, np.nan)
        cols: list[list[float] | None] = []
        for j in range(k):
            lo, hi = M.percentile_interval(per[j], self.confidence)
            cols.append(None if np.isnan(lo) else [lo, hi])
        lo, hi = M.percentile_interval(mean, self.confidence)
        return cols, (None if np.isnan(lo) else [lo, hi])


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
    boot: _Bootstrap,
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
    block: dict[str, Any] = {
        "n_images": n,
        "accuracy": _mean(ok),
        "accuracy_ci": boot.interval(M.accuracy_statistic(ok), n),
        "balanced_accuracy": _finite(M.balanced_accuracy(pred, labels, task, k)),
        "auroc": dict(zip(label_names, [_finite(a) for a in aucs], strict=True)),
        "auroc_ci": dict(zip(label_names, auc_cis, strict=True)),
        "mean_auroc": float(defined.mean()) if defined.size else None,
        "mean_auroc_ci": mean_auc_ci,
        "sensitivity": dict(zip(label_names, [_finite(s) for s in sens], strict=True)),
        "specificity": dict(zip(label_names, [_finite(s) for s in spec], strict=True)),
        "mean_confidence_wrong": _finite(M.mean_confidence_wrong(probs, labels, task,
                                                                 thresholds)),
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


# ---------------------------------------------------------------------- figures


def robustness_curve_figure(curves: dict[str, list[dict[str, Any]]]) -> Figure | None:
    if not any(len(points) > 1 for points in curves.values()):
        return None
    fig, ax = new_figure(6.4, 4.0)
    for i, (group, points) in enumerate(sorted(curves.items())):
        color = PALETTE[i % len(PALETTE)]
        xs = [p["eps_255"] for p in points]
        ys = [np.nan if p["accuracy"] is None else p["accuracy"] for p in points]
        ax.plot(xs, ys, marker="o", color=color, label=group)
        cis = [p["accuracy_ci"] for p in points]
        if all(ci is not None for ci in cis):
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=color,
                            alpha=0.15, linewidth=0)
    ax.set_xlabel("eps (grey levels of 255, L-infinity)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure(
        name="quantitative_robustness_curve",
        title="Robustness curve",
        png=render_png(fig),
        caption="Accuracy against the attack budget (eps 0 = clean); bands: bootstrap "
        "intervals.",
    )


def auroc_figure(
    clean: dict[str, Any], attacks: dict[str, Any], label_names: list[str]
) -> Figure | None:
    if clean["mean_auroc"] is None:
        return None
    ranked = sorted(
        (k for k, b in attacks.items() if b["adversarial"]["mean_auroc"] is not None),
        key=lambda k: attacks[k]["adversarial"]["mean_auroc"],
    )[:MAX_AUROC_SERIES]
    series = [("clean", clean), *((k, attacks[k]["adversarial"]) for k in ranked)]
    k = len(label_names)
    fig, ax = new_figure(max(6.4, 0.55 * k * len(series) / 2 + 2), 4.0)
    width = 0.8 / len(series)
    x = np.arange(k)
    for i, (name, block) in enumerate(series):
        vals = [np.nan if block["auroc"][lbl] is None else block["auroc"][lbl]
                for lbl in label_names]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name,
               color=PALETTE[i % len(PALETTE)])
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, label_names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center",
                  fontsize=8)
    ax.set_ylabel("AUROC")
    ax.set_ylim(0, 1.2)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=8, loc="upper center", ncol=min(len(series), 3), frameon=False)
    caption = "AUROC per finding, clean and under the strongest attacks (dashed: chance)."
    if len(attacks) > len(ranked):
        caption += f" {len(ranked)} of {len(attacks)} attack settings shown (lowest mean AUROC)."
    return Figure(name="quantitative_auroc", title="AUROC per finding, clean vs adversarial",
                  png=render_png(fig), caption=caption)


def min_eps_figure(summary: dict[str, Any] | None) -> Figure | None:
    if summary is None or "histogram" not in summary:
        return None
    edges = np.asarray(summary["histogram"]["edges"]) * 255.0
    counts = summary["histogram"]["counts"]
    fig, ax = new_figure(6.4, 3.6)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=PALETTE[0],
           edgecolor="white")
    ax.set_xlabel("minimum eps that fools the model (grey levels of 255)")
    ax.set_ylabel("images")
    caption = f"{summary['n_images']} images"
    if summary["n_not_fooled"]:
        caption += f"; {summary['n_not_fooled']} not fooled within the searched range"
    return Figure(name="quantitative_min_eps", title="Minimum fooling eps per image",
                  png=render_png(fig), caption=caption + ".")
