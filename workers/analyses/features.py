"""``features``: how far each block's activations move under attack, block by block.

Xu et al. (2021), *Towards Evaluating the Robustness of Deep Diagnostic Models by
Adversarial Attack* (MedIA 69, 101977), "intermediate features": an adversarial
perturbation of a few grey levels grows as it travels through the network, until the
deep features of the adversarial image are far from those of the clean one.

For every attack setting and every main block ``l`` of the network (found by
:func:`workers.analyses.layers.find_blocks`, or named by the user), the per-image relative
change of the block's output, flattened::

    r_l(x) = ||f_l(x_adv) - f_l(x)||_2 / ||f_l(x)||_2

with depth 0 the input image itself in [0, 1] pixel space (``||x_adv - x|| / ||x||``), so
``r_l / r_0`` says how much block ``l`` amplifies the perturbation. An unchanged activation
gives exactly 0; a zero clean activation with a non-zero change is undefined (nan, counted
in ``undefined``).

Memory: per batch, the clean activations of the tapped blocks are held while each attack's
adversarial batch runs; nothing of a batch survives its ``collect``.

Arrays: ``index``; per attack key ``adv_index[k]`` ``[N]`` and ``change[k]`` ``[N, 1 + L]``
float32 (column 0 the input); texts (see :mod:`workers.analyses.feature_arrays`) ``layers``
(JSON list ``["input", block, ...]``) and ``layer_source``.

Parameters: ``layers`` (optional list of module paths in depth order, ``node:<name>`` for
graph programs) replaces the automatic choice of blocks.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import torch

from app.core.catalogue.analyses import FeaturesParams
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.analysis_params import parse_params
from workers.analyses.base import Analysis, BatchContext, Figure, Section, SummaryContext
from workers.analyses.feature_arrays import (
    not_applicable_arrays,
    not_applicable_reason,
    read_text,
    text_array,
    unique_rows,
)
from workers.analyses.jsonable import jsonable
from workers.analyses.layer_taps import LayerReader
from workers.analyses.layers import LayerAccessError, TapPoint, find_blocks
from workers.analyses.plotting import PALETTE, new_figure, render_png


def relative_change(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """``[N]`` ``||adv - clean|| / ||clean||`` per image (0 where equal, nan for 0/0+)."""
    c = clean.detach().flatten(1).float()
    a = adv.detach().flatten(1).float()
    diff = (a - c).norm(dim=1)
    norm = c.norm(dim=1)
    ratio = diff / norm.clamp_min(torch.finfo(torch.float32).tiny)
    ratio = torch.where(norm > 0, ratio, torch.full_like(ratio, float("nan")))
    return torch.where(diff == 0, torch.zeros_like(ratio), ratio)


class FeaturesAnalysis(Analysis):
    """Layer-wise relative feature change, clean vs adversarial (module docstring)."""

    name: ClassVar[str] = "features"
    Params: ClassVar[type[FeaturesParams]] = FeaturesParams

    def parse_params(self, params: dict[str, Any] | None) -> FeaturesParams:
        return parse_params(FeaturesParams, params, self.name)

    def not_applicable(self, model: DiagnosticModel) -> str | None:
        # Judged on the automatic blocks: user-named layers are checked in ``collect``.
        try:
            blocks = find_blocks(model)
            LayerReader(model, [TapPoint(b) for b in blocks.names])
        except LayerAccessError as exc:
            return str(exc)
        return None

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        params = self.parse_params(ctx.params)
        n = ctx.clean.shape[0]
        index = np.asarray(ctx.indices).astype(np.int64)
        out: dict[str, np.ndarray] = {"index": index}
        try:
            blocks = find_blocks(ctx.model, params.layers)
            reader = LayerReader(ctx.model, [TapPoint(b) for b in blocks.names])
            with torch.no_grad():
                _, clean_acts = reader(ctx.clean)
                for key, adv in ctx.adversarial.items():
                    _, adv_acts = reader(adv)
                    columns = [relative_change(ctx.clean, adv)]
                    columns += [relative_change(c, a) for c, a in zip(clean_acts, adv_acts,
                                                                       strict=True)]
                    del adv_acts
                    out[attack_field("adv_index", key)] = index
                    out[attack_field("change", key)] = (
                        torch.stack(columns, dim=1).cpu().numpy().astype(np.float32)
                    )
        except LayerAccessError as exc:
            if params.layers is not None:
                raise InvalidParametersError(str(exc)) from exc
            return {"index": index, **not_applicable_arrays(str(exc), n)}
        out.update(text_array("layers", json.dumps(["input", *blocks.names]), n))
        out.update(text_array("layer_source", blocks.source, n))
        return out

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        self.parse_params(ctx.params)
        reason = not_applicable_reason(arrays)
        if reason is not None:
            return Section(self.name, applicable=False, data={}, reason=reason)
        names_text = read_text(arrays, "layers")
        if names_text is None:
            return Section(self.name, applicable=False, data={},
                           reason="no adversarial images were analysed")
        names: list[str] = json.loads(names_text)
        attacks: dict[str, Any] = {}
        missing: list[str] = []
        for key in ctx.attack_keys:
            field = attack_field("change", key)
            if field not in arrays:
                missing.append(key)
                continue
            rows = unique_rows(arrays[attack_field("adv_index", key)])
            attacks[key] = depth_statistics(arrays[field][rows].astype(np.float64), names)
        data: dict[str, Any] = {
            "metric": "relative L2 change ||f(x_adv) - f(x)|| / ||f(x)|| per image; "
            "depth 0 is the input image in [0, 1] pixel space",
            "layers": names,
            "layer_source": read_text(arrays, "layer_source"),
            "attacks": attacks,
        }
        if missing:
            data["missing_attacks"] = missing
        figures = [] if not attacks else [depth_figure(names, attacks)]
        return Section(self.name, applicable=True, data=jsonable(data), figures=figures)


def depth_statistics(values: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per-depth statistics of ``[n, 1 + L]`` relative changes (nan = undefined)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=0)

    def per_column(fn: Any) -> list[float]:
        return [float(fn(values[defined[:, j], j])) if count[j] else float("nan")
                for j in range(values.shape[1])]

    mean = np.array(per_column(np.mean))
    median = per_column(np.median)
    q25 = per_column(lambda v: np.quantile(v, 0.25))
    q75 = per_column(lambda v: np.quantile(v, 0.75))
    with np.errstate(invalid="ignore", divide="ignore"):
        amplification = np.where(mean[0] > 0, mean / mean[0], np.nan)
        steps = mean[1:] / mean[:-1]
    steps = np.where(np.isfinite(steps), steps, np.nan)
    jump: dict[str, Any] | None = None
    if np.any(~np.isnan(steps)):
        j = int(np.nanargmax(steps))
        jump = {"layer": names[j + 1], "from": names[j], "ratio": float(steps[j])}
    return {
        "n_images": int(values.shape[0]),
        "mean": mean.tolist(),
        "median": median,
        "q25": q25,
        "q75": q75,
        "undefined": (values.shape[0] - count).tolist(),
        "amplification": amplification.tolist(),
        "largest_increase": jump,
    }


def depth_figure(names: list[str], attacks: dict[str, Any]) -> Figure:
    """Mean relative change by depth, one line per attack, the quartiles shaded."""
    fig, ax = new_figure(max(6.4, 0.55 * len(names) + 2.5), 4.2)
    depth = np.arange(len(names))
    means = [np.asarray(s["mean"], dtype=np.float64) for s in attacks.values()]
    positive = np.concatenate([m[np.isfinite(m) & (m > 0)] for m in means] or [np.zeros(0)])
    log = positive.size > 0 and positive.max() / positive.min() > 30 and all(
        np.all(m[np.isfinite(m)] > 0) for m in means
    )
    for i, (key, stats) in enumerate(attacks.items()):
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(depth, stats["mean"], marker="o", color=colour, label=key)
        lo = np.asarray(stats["q25"], dtype=np.float64)
        hi = np.asarray(stats["q75"], dtype=np.float64)
        if not log or np.all(lo[np.isfinite(lo)] > 0):
            ax.fill_between(depth, lo, hi, color=colour, alpha=0.15, linewidth=0)
    if log:
        ax.set_yscale("log")
    ax.set_xticks(depth)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("depth (block)")
    ax.set_ylabel("relative change ||f(x_adv) - f(x)|| / ||f(x)||")
    ax.set_title("Feature change by depth (mean, quartiles shaded)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return Figure(
        name="features_by_depth",
        title="Feature change by depth",
        png=render_png(fig),
        caption="Mean relative change of each block's activations between clean and "
        "adversarial images; depth 0 is the input. A rising line shows the network "
        "amplifying the perturbation.",
    )
