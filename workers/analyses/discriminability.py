"""``discriminability``: do the deep features still separate the classes under attack?

Xu et al. (2021), "discriminability of features": a 2-D embedding of the penultimate
features shows classes that are separable on clean images mixing on adversarial ones.
This analysis gives the picture and the numbers behind it:

- **features**: the input of the network's last linear layer (the penultimate features),
  or the output of a user-named layer (spatial maps averaged over space), for the clean
  images and for each attack. Features wider than ``projection_dim`` (128) are reduced by a
  fixed Gaussian random projection (entries N(0, 1/k), seed :data:`PROJECTION_SEED`; the
  same matrix in every shard, and distances kept within a small factor by the
  Johnson-Lindenstrauss lemma), then stored as float16: at most 256 bytes per image and
  setting.
- **silhouette score** (scikit-learn, Euclidean) of the features grouped by the *true*
  class, clean vs adversarial, on a stratified sample of at most ``max_points`` images
  (the same images for every setting). Near 1: tight, separate classes; near 0 or below:
  mixed.
- **linear probe**: a logistic regression trained on the clean features of a stratified
  ``1 - probe_test_fraction`` of the images, its accuracy on the held-out clean features
  and on the adversarial features of the same held-out images.
- **embedding**: PCA (fitted on the clean sample, the fast option) or t-SNE (fitted on all
  the points at once, so that panels share one map); ``method="auto"`` uses t-SNE up to
  2000 points and PCA beyond. Scatter plots coloured by class, clean and each attack side
  by side.

Groups: single-label models use the true class. Multi-label models use "no finding" vs
"any finding" (an image with at least one positive finding): per-finding groups overlap,
and a silhouette needs one group per point.

Arrays: ``index``, ``labels``, ``features_clean`` ``[N, d]`` float16; per attack
``adv_index[k]``, ``features[k]`` ``[N, d]`` float16; texts ``feature_source``,
``feature_dim``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from app.core.catalogue.analyses import DiscriminabilityParams
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
from workers.analyses.layers import (
    LayerAccessError,
    TapPoint,
    module_tree,
    penultimate_point,
    validate_layers,
)
from workers.analyses.plotting import PALETTE, new_grid, render_png

PROJECTION_SEED = 20210301
TSNE_MAX_POINTS = 2000
PROBE_MAX_IMAGES = 20_000
FLOAT16_MAX = 65504.0



# --------------------------------------------------------------------------- collect


@functools.lru_cache(maxsize=16)
def projection_matrix(dim: int, k: int) -> Tensor:
    """The fixed ``[dim, k]`` Gaussian projection (entries N(0, 1/k)), on the CPU."""
    g = torch.Generator().manual_seed(PROJECTION_SEED + dim)
    return torch.randn(dim, k, generator=g) / math.sqrt(k)


def feature_vectors(act: Tensor) -> Tensor:
    """``[N, D]`` vectors from an activation: spatial maps and token sequences averaged."""
    a = act.detach().float()
    if a.dim() == 4:
        return a.mean(dim=(2, 3))
    if a.dim() == 3:
        return a.mean(dim=1)
    return a.flatten(1)


def reduce_features(feats: Tensor, k: int) -> Tensor:
    """Random projection to ``k`` dimensions when wider, then float16 (clamped to its range)."""
    if feats.shape[1] > k:
        feats = feats @ projection_matrix(feats.shape[1], k).to(feats.device)
    return feats.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16)


class DiscriminabilityAnalysis(Analysis):
    """Separability of deep features by class, clean vs adversarial (module docstring)."""

    name: ClassVar[str] = "discriminability"
    Params: ClassVar[type[DiscriminabilityParams]] = DiscriminabilityParams

    def parse_params(self, params: dict[str, Any] | None) -> DiscriminabilityParams:
        return parse_params(DiscriminabilityParams, params, self.name)

    def not_applicable(self, model: DiagnosticModel) -> str | None:
        try:
            LayerReader(model, [penultimate_point(model)])
        except LayerAccessError as exc:
            return str(exc)
        return None

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        params = self.parse_params(ctx.params)
        model = ctx.model
        n = ctx.clean.shape[0]
        index = np.asarray(ctx.indices).astype(np.int64)
        labels = ctx.labels.detach().cpu().numpy()
        out: dict[str, np.ndarray] = {
            "index": index,
            "labels": labels.astype(np.int8 if model.card.task == "multi-label" else np.int64),
        }
        try:
            if params.layer is not None:
                validate_layers(module_tree(model.net), [params.layer])
                point = TapPoint(params.layer)
                source = f"output of {params.layer} (averaged over space)"
            else:
                point = penultimate_point(model)
                source = f"input of the last linear layer ({point.path})"
            reader = LayerReader(model, [point])
            with torch.no_grad():
                _, (act,) = reader(ctx.clean)
                feats = feature_vectors(act)
                dim = int(feats.shape[1])
                out["features_clean"] = (
                    reduce_features(feats, params.projection_dim).cpu().numpy()
                )
                for key, adv in ctx.adversarial.items():
                    _, (act,) = reader(adv)
                    out[attack_field("adv_index", key)] = index
                    out[attack_field("features", key)] = (
                        reduce_features(feature_vectors(act), params.projection_dim)
                        .cpu().numpy()
                    )
        except LayerAccessError as exc:
            if params.layer is not None:
                raise InvalidParametersError(str(exc)) from exc
            return {"index": index, **not_applicable_arrays(str(exc), n)}
        out.update(text_array("feature_source", source, n))
        out.update(text_array("feature_dim", str(dim), n))
        return out

    # ------------------------------------------------------------------ summarize

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = self.parse_params(ctx.params)
        reason = not_applicable_reason(arrays)
        if reason is not None:
            return Section(self.name, applicable=False, data={}, reason=reason)
        if "features_clean" not in arrays or arrays["features_clean"].shape[0] == 0:
            return Section(self.name, applicable=False, data={},
                           reason="no images were analysed")
        seed = int(ctx.params.get("seed", 0) or 0)
        rows = unique_rows(arrays["index"])
        positions = arrays["index"][rows]
        clean = arrays["features_clean"][rows].astype(np.float64)
        groups, group_names, grouping = _groups(arrays["labels"][rows], ctx)

        adversarial: dict[str, np.ndarray] = {}
        missing: list[str] = []
        for key in ctx.attack_keys:
            field = attack_field("features", key)
            if field not in arrays:
                missing.append(key)
                continue
            adversarial[key] = _aligned(arrays, key, positions)

        rng = np.random.default_rng(seed)
        sample = _stratified(groups, params.max_points, rng)
        separable = _separable(groups)
        clean_block, attacks, probe = _separation(clean, adversarial, groups, sample,
                                                  separable, params.probe_test_fraction, rng)

        n_points = sample.size * (1 + len(adversarial))
        method = params.method
        if method == "auto":
            method = "tsne" if n_points <= TSNE_MAX_POINTS else "pca"
        coords = embed(clean[sample], [f[sample] for f in adversarial.values()], method, seed)
        counts = [int(np.count_nonzero(groups == g)) for g in range(len(group_names))]
        data: dict[str, Any] = {
            "feature_source": read_text(arrays, "feature_source"),
            "feature_dim": int(read_text(arrays, "feature_dim") or clean.shape[1]),
            "stored_dim": int(clean.shape[1]),
            "projection": (
                f"Gaussian random projection to {clean.shape[1]} dimensions "
                f"(seed {PROJECTION_SEED})"
                if int(read_text(arrays, "feature_dim") or 0) > clean.shape[1]
                else None
            ),
            "grouping": grouping,
            "groups": group_names,
            "group_counts": counts,
            "n_images": int(rows.shape[0]),
            "sample_size": int(sample.size),
            "embedding": method,
            "clean": clean_block,
            "attacks": attacks,
        }
        if probe is not None:
            data["probe"] = {
                "model": "logistic regression on standardized clean features",
                "train_images": probe["train"],
                "test_images": probe["test"],
                "chance_accuracy": probe["chance"],
            }
        if not separable:
            data["note"] = "fewer than two groups with two images each: no silhouette or probe"
        if missing:
            data["missing_attacks"] = missing
        figure = embedding_figure(coords, groups[sample], group_names,
                                  ["clean", *adversarial], data, method)
        return Section(self.name, applicable=True, data=jsonable(data), figures=[figure])


def _separation(
    clean: np.ndarray, adversarial: dict[str, np.ndarray], groups: np.ndarray,
    sample: np.ndarray, separable: bool, test_fraction: float, rng: np.random.Generator,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Silhouettes of the sampled points and the linear probe's accuracies, clean and per
    attack (``None`` where fewer than two groups can be compared)."""
    clean_block: dict[str, Any] = {
        "silhouette": _silhouette(clean[sample], groups[sample]) if separable else None,
    }
    attacks: dict[str, Any] = {}
    for key, feats in adversarial.items():
        ok = ~np.isnan(feats[sample, 0])
        attacks[key] = {
            "n_images": int(np.count_nonzero(~np.isnan(feats[:, 0]))),
            "silhouette": (
                _silhouette(feats[sample][ok], groups[sample][ok]) if separable else None
            ),
        }
    probe = _probe(clean, adversarial, groups, test_fraction, rng) if separable else None
    if probe is not None:
        clean_block["probe_accuracy"] = probe["clean"]
        for key in attacks:
            attacks[key]["probe_accuracy"] = probe["attacks"].get(key)
    return clean_block, attacks, probe


# --------------------------------------------------------------------------- numbers


def _groups(labels: np.ndarray, ctx: SummaryContext) -> tuple[np.ndarray, list[str], str]:
    if ctx.task == "multi-label":
        any_finding = np.any(np.asarray(labels) > 0, axis=1).astype(np.int64).reshape(-1)
        return any_finding, ["no finding", "any finding"], "any finding vs no finding"
    return np.asarray(labels).astype(np.int64), list(ctx.labels), "true class"


def _aligned(arrays: dict[str, np.ndarray], key: str, positions: np.ndarray) -> np.ndarray:
    """The attack's features on the rows of ``positions`` (nan rows where not attacked)."""
    feats = arrays[attack_field("features", key)]
    index = arrays[attack_field("adv_index", key)]
    rows = unique_rows(index)
    out = np.full((positions.shape[0], feats.shape[1]), np.nan)
    where = np.searchsorted(positions, index[rows])
    where = np.minimum(where, max(positions.shape[0] - 1, 0))
    found = positions[where] == index[rows]
    out[where[found]] = feats[rows[found]].astype(np.float64)
    return out


def _stratified(groups: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``cap`` row numbers, each group in proportion (at least one of each)."""
    n = groups.shape[0]
    if n <= cap:
        return np.arange(n)
    picked = []
    labels, counts = np.unique(groups, return_counts=True)
    for g, count in zip(labels, counts, strict=True):
        take = max(1, round(cap * count / n))
        members = np.flatnonzero(groups == g)
        picked.append(rng.choice(members, size=min(take, count), replace=False))
    return np.sort(np.concatenate(picked))


def _separable(groups: np.ndarray) -> bool:
    _, counts = np.unique(groups, return_counts=True)
    return int(np.count_nonzero(counts >= 2)) >= 2


def _silhouette(x: np.ndarray, groups: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    keep = np.isin(groups, np.unique(groups)[np.unique(groups, return_counts=True)[1] >= 2])
    x, groups = x[keep], groups[keep]
    if np.unique(groups).size < 2 or groups.size <= np.unique(groups).size:
        return None
    return float(silhouette_score(x, groups, metric="euclidean"))


def _probe(
    clean: np.ndarray,
    adversarial: dict[str, np.ndarray],
    groups: np.ndarray,
    test_fraction: float,
    rng: np.random.Generator,
) -> dict[str, Any] | None:
    """Train on clean features, test on held-out clean and adversarial features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    values, counts = np.unique(groups, return_counts=True)
    usable = np.flatnonzero(np.isin(groups, values[counts >= 2]))
    usable = usable[_stratified(groups[usable], PROBE_MAX_IMAGES, rng)]
    y = groups[usable]
    n_test = max(round(test_fraction * usable.size), np.unique(y).size)
    if usable.size - n_test < np.unique(y).size:
        return None
    train, test = train_test_split(
        usable, test_size=n_test, stratify=y, random_state=int(rng.integers(2**31))
    )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(clean[train], groups[train])
    result: dict[str, Any] = {
        "train": int(train.size),
        "test": int(test.size),
        "clean": float(probe.score(clean[test], groups[test])),
        "chance": float(np.max(np.unique(groups[test], return_counts=True)[1]) / test.size),
        "attacks": {},
    }
    for key, feats in adversarial.items():
        ok = test[~np.isnan(feats[test, 0])]
        result["attacks"][key] = float(probe.score(feats[ok], groups[ok])) if ok.size else None
    return result


def embed(clean: np.ndarray, others: list[np.ndarray], method: str, seed: int) -> list[np.ndarray]:
    """2-D coordinates of the clean points and of each other set (nan rows stay nan)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        if clean.shape[0] < 2 or clean.shape[1] < 2:
            return [np.zeros((clean.shape[0], 2))] + [np.zeros((o.shape[0], 2)) for o in others]
        pca.fit(clean)
        out = [pca.transform(clean)]
        for o in others:
            ok = ~np.isnan(o[:, 0])
            coords = np.full((o.shape[0], 2), np.nan)
            if ok.any():
                coords[ok] = pca.transform(o[ok])
            out.append(coords)
        return out
    from sklearn.manifold import TSNE

    sets = [clean, *others]
    oks = [~np.isnan(s[:, 0]) for s in sets]
    stacked = np.concatenate([s[ok] for s, ok in zip(sets, oks, strict=True)])
    if stacked.shape[0] < 5:
        return [np.zeros((s.shape[0], 2)) for s in sets]
    perplexity = float(min(30.0, max(2.0, (stacked.shape[0] - 1) / 3.0)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    points = tsne.fit_transform(stacked)
    out, start = [], 0
    for s, ok in zip(sets, oks, strict=True):
        coords = np.full((s.shape[0], 2), np.nan)
        count = int(ok.sum())
        coords[ok] = points[start : start + count]
        start += count
        out.append(coords)
    return out


# --------------------------------------------------------------------------- figure


def embedding_figure(
    coords: list[np.ndarray],
    groups: np.ndarray,
    group_names: list[str],
    titles: list[str],
    data: dict[str, Any],
    method: str,
) -> Figure:
    """Scatter plots of the embedding, one panel per setting, coloured by group."""
    panels = len(coords)
    ncols = min(panels, 4)
    nrows = math.ceil(panels / ncols)
    fig, axes = new_grid(nrows, ncols, 3.6 * ncols, 3.4 * nrows + 0.4)
    finite = np.concatenate([c[~np.isnan(c[:, 0])] for c in coords] or [np.zeros((0, 2))])
    lo = finite.min(axis=0) if finite.size else np.zeros(2)
    hi = finite.max(axis=0) if finite.size else np.ones(2)
    pad = 0.05 * np.maximum(hi - lo, 1e-9)
    for p in range(nrows * ncols):
        ax = axes[p // ncols, p % ncols]
        if p >= panels:
            ax.set_axis_off()
            continue
        c = coords[p]
        for g, name in enumerate(group_names):
            sel = (groups == g) & ~np.isnan(c[:, 0])
            if sel.any():
                ax.scatter(c[sel, 0], c[sel, 1], s=6, alpha=0.7, color=PALETTE[g % len(PALETTE)],
                           label=name, linewidths=0)
        block = data["clean"] if p == 0 else data["attacks"][titles[p]]
        sil = block.get("silhouette")
        ax.set_title(titles[p] + ("" if sil is None else f"\nsilhouette {sil:.2f}"), fontsize=9)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xticks([])
        ax.set_yticks([])
        if p == 0 and len(group_names) <= 12:
            ax.legend(fontsize=7, markerscale=2, loc="best")
    name = "t-SNE" if method == "tsne" else "PCA"
    return Figure(
        name="discriminability_embedding",
        title=f"Deep features ({name})",
        png=render_png(fig),
        caption=f"{name} embedding of the features ({data['feature_source']}), coloured by "
        f"{data['grouping']}; clean images first, then each attack on the same images.",
    )
