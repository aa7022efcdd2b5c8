"""``perturbations``: how stable a diagnosis is under common acquisition changes.

The common-perturbation benchmark of Xu et al. (2021, MedIA 69, 101977), after ImageNet-C
and ImageNet-P (Hendrycks & Dietterich 2019), on the model's own images, with the
perturbations of :mod:`workers.perturbations` (noise, blur, intensity, JPEG, geometry and
the artefacts of the image's modality):

- **corruption accuracy**: accuracy, balanced accuracy and AUROC at each severity, the
  relative drop from clean, the share of predictions changed from clean, and mCE-style
  means (:func:`workers.perturbations.metrics.corruption_summary`);
- **flip probability**: each image becomes a sequence of ``frames`` frames; noise frames
  are compared with the first, the others with the frame ``difficulty`` steps later.
  Multi-label models report each finding's flip rate, their mean and the rate at which any
  finding flips; models with three classes or more also report the top-k distance.

``collect`` runs everything on the batch, frame by frame (one perturbed copy of the batch
alive at a time), and stores probabilities and flip counts per image; ``summarize`` computes
every number. Arrays (per image unless noted): ``index``, ``labels``, ``clean_probs``
``[N, K]``, ``probs.<name>.<severity>`` ``[N, K]``, ``flips.<name>`` ``[N]`` or ``[N, K]``,
``any_flips.<name>`` ``[N]``, ``pairs.<name>`` ``[N]``, ``topk.<name>`` ``[N]`` (sum of
top-k distances), and for the example image only ``example.index`` ``[1]`` and
``example.frames`` ``[1, P, 1 + S, C, h, w]`` uint8 thumbnails (clean, then each severity).

Parameters: see :class:`PerturbationsParams`. Randomness is seeded from the batch seed, the
batch's first dataset position and the perturbation's name, so adding a perturbation does
not change the others; all severities of a perturbation share the seed (the same noise
field, directions and artefact layout, only stronger), so severity curves are paired.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from app.core.catalogue.analyses import DEFAULT_FRAMES
from app.core.catalogue.analyses import PerturbationsParams as CataloguePerturbationsParams
from models.card import Head
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import clean_rows
from workers.analyses.analysis_params import parse_params
from workers.analyses.base import (
    Analysis,
    BatchContext,
    Figure,
    Section,
    SummaryContext,
    merge_arrays,
)
from workers.analyses.jsonable import jsonable
from workers.analyses.plotting import PALETTE, new_grid, render_png
from workers.perturbations import (
    IMAGENET_P,
    Family,
    Modality,
    Perturbation,
    derive_seed,
    get_perturbation,
    iter_sequence,
    list_perturbations,
    pairs_compared,
    perturbations_for,
)
from workers.perturbations.metrics import (
    FlipCounter,
    changed_share,
    classification_metrics,
    corruption_summary,
    relative_drop,
    top_k_for,
)

logger = logging.getLogger(__name__)

NAME = "perturbations"
#: A relative drop of the headline metric at severity 1 or 2 above this is flagged.
FRAGILE_DROP = 0.10
#: A flip probability above this is flagged.
UNSTABLE_FLIP = 0.05
#: Example thumbnails are at most this many pixels on a side.
THUMBNAIL = 64

Metric = Literal["accuracy", "balanced_accuracy", "auroc"]


class PerturbationsParams(CataloguePerturbationsParams):
    """The catalogue's :class:`~app.core.catalogue.analyses.PerturbationsParams` (the API
    validates with it), plus the look-ups of the perturbations it names."""

    def corruptions(self, channels: int) -> list[Perturbation]:
        names = (
            self.perturbations
            if self.perturbations is not None
            else perturbations_for(channels, self.modality)
        )
        return [get_perturbation(n) for n in names]

    def sequence_list(self, channels: int) -> list[Perturbation]:
        if self.sequences is not None:
            return [get_perturbation(n) for n in self.sequences]
        chosen = {p.name for p in self.corruptions(channels)}
        return [get_perturbation(n) for n in IMAGENET_P if n in chosen]

    def headline(self, task: str) -> str:
        return self.metric or ("auroc" if task == "multi-label" else "accuracy")


def _parse(params: dict[str, Any]) -> PerturbationsParams:
    return parse_params(PerturbationsParams, params, NAME)


class PerturbationsAnalysis(Analysis):
    """Corruption accuracy and flip probability under common perturbations."""

    name: ClassVar[str] = NAME
    needs_adversarial: ClassVar[bool] = False

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        params = _parse(ctx.params)
        model, x = ctx.model, ctx.clean
        n, channels = x.shape[0], x.shape[1]
        head = model.head
        thresholds = model.thresholds if head == Head.SIGMOID else None
        top_k = top_k_for(model.num_labels) if head == Head.SOFTMAX and model.num_labels > 2 else 0
        first = int(ctx.indices[0]) if len(ctx.indices) else 0
        out: dict[str, np.ndarray] = {
            "index": np.asarray(ctx.indices, dtype=np.int64),
            "labels": ctx.labels.detach().cpu().numpy(),
        }
        example_rows = np.nonzero(np.asarray(ctx.indices) == params.example_index)[0]
        example_row = int(example_rows[0]) if example_rows.size else None
        strips: list[torch.Tensor] = []
        with torch.inference_mode():
            out["clean_probs"] = _probabilities(model, x)
            for p in params.corruptions(channels):
                strip = [x[example_row]] if example_row is not None else []
                # Common random numbers: every severity redraws the same noise field,
                # directions and layout, only stronger, so severity curves are paired.
                seed = derive_seed(ctx.seed, p.name, first)
                for s in params.severities:
                    xp = p(x, s, generator=_generator(x.device, seed))
                    out[f"probs.{p.name}.{s}"] = _probabilities(model, xp)
                    if example_row is not None:
                        strip.append(xp[example_row])
                    del xp
                if strip:
                    strips.append(torch.stack(strip))
            for p in params.sequence_list(channels):
                gen = _generator(x.device, derive_seed(ctx.seed, p.name, "sequence", first))
                counter = FlipCounter(
                    p.sequence_rule, params.difficulty, head, thresholds, top_k=top_k or None
                )
                for frame in iter_sequence(
                    p, x, frames=params.frames, difficulty=params.difficulty, generator=gen
                ):
                    counter.update(model(frame))
                out[f"flips.{p.name}"] = counter.flips
                out[f"pairs.{p.name}"] = np.full(n, counter.pairs, dtype=np.int64)
                if head == Head.SIGMOID:
                    out[f"any_flips.{p.name}"] = counter.any_flips
                distance = counter.top_k_distance_sum
                if distance is not None:
                    out[f"topk.{p.name}"] = distance
        if strips:
            out["example.index"] = np.asarray([params.example_index], dtype=np.int64)
            out["example.frames"] = _thumbnails(torch.stack(strips))[None]
        return out

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = _parse(ctx.params)
        task = ctx.task
        thresholds = ctx.thresholds
        metric = params.headline(task)
        if "clean_probs" not in arrays or arrays["clean_probs"].shape[0] == 0:
            return Section(name=NAME, applicable=False, data={}, reason="no images were evaluated")
        _, rows = clean_rows(arrays, "labels")
        labels = arrays["labels"][rows]
        clean_probs = arrays["clean_probs"][rows]
        clean = classification_metrics(clean_probs, labels, task, thresholds)
        corrupted = _corruption_keys(arrays)
        sequenced = [n for n in list_perturbations() if f"flips.{n}" in arrays]
        names = [n for n in list_perturbations() if n in corrupted or n in sequenced]

        table: dict[str, dict[str, Any]] = {}
        by_metric: dict[str, list[float]] = {}
        for name in names:
            p = get_perturbation(name)
            entry: dict[str, Any] = {
                "family": p.family.value,
                "description": p.description,
                "units": p.units,
                "severities": [],
            }
            for s in corrupted.get(name, []):
                probs = arrays[f"probs.{name}.{s}"][rows]
                values = classification_metrics(probs, labels, task, thresholds)
                entry["severities"].append(
                    {
                        "severity": s,
                        "amount": p.amount(s),
                        **values,
                        "relative_drop": relative_drop(clean[metric], values[metric]),
                        "changed": changed_share(clean_probs, probs, task, thresholds),
                    }
                )
            if entry["severities"]:
                by_metric[name] = [row[metric] for row in entry["severities"]]
            entry["sequence"] = (
                _sequence_stats(arrays, rows, p, params, ctx.labels, task)
                if name in sequenced
                else None
            )
            entry["flip_probability"] = (
                entry["sequence"]["flip_probability"] if entry["sequence"] else None
            )
            table[name] = entry

        summary = corruption_summary(clean[metric], by_metric)
        for name, stats in summary.pop("per_perturbation").items():
            table[name].update(stats)
        flips = {n: table[n]["flip_probability"] for n in sequenced}
        summary["clean_metric"] = clean[metric]
        summary["mean_flip_probability"] = _nanmean(list(flips.values()))
        topk = [table[n]["sequence"].get("top_k_distance") for n in sequenced]
        summary["mean_top_k_distance"] = _nanmean([t for t in topk if t is not None])
        families = _family_means(table)
        example = _example(arrays)

        data = {
            "metric": metric,
            "n_images": int(labels.shape[0]),
            "parameters": {
                "severities": list(params.severities),
                "frames": params.frames,
                "difficulty": params.difficulty,
                "modality": params.modality,
                "corruptions": list(corrupted),
                "sequences": sequenced,
            },
            "clean": clean,
            "perturbations": table,
            "families": families,
            "summary": summary,
            "example_index": example[0] if example else None,
        }
        figures = _figures(table, clean, metric, params.severities, example)
        return Section(
            name=NAME,
            applicable=True,
            data=jsonable(data),
            figures=figures,
            flags=_flags(table, metric),
        )


# --- collect helpers ---------------------------------------------------------------------


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _probabilities(model: DiagnosticModel, x: torch.Tensor) -> np.ndarray:
    return model.probabilities(x).float().cpu().numpy()


def _thumbnails(frames: torch.Tensor) -> np.ndarray:
    """``[P, S, C, H, W]`` in [0, 1] -> uint8 with the longer side at most THUMBNAIL."""
    p, s, c, h, w = frames.shape
    flat = frames.reshape(p * s, c, h, w).float()
    scale = THUMBNAIL / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        flat = F.interpolate(flat, size=size, mode="area")
    u8 = (flat.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return u8.reshape(p, s, c, *u8.shape[-2:]).numpy()


# --- summary helpers ---------------------------------------------------------------------


def _corruption_keys(arrays: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Perturbation -> severities found in ``probs.<name>.<severity>`` keys (registry order)."""
    found: dict[str, list[int]] = {}
    for key in arrays:
        if key.startswith("probs."):
            _, name, severity = key.split(".")
            found.setdefault(name, []).append(int(severity))
    return {n: sorted(found[n]) for n in list_perturbations() if n in found}


def _nanmean(values: Sequence[float | None]) -> float:
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _sequence_stats(
    arrays: dict[str, np.ndarray],
    rows: np.ndarray,
    p: Perturbation,
    params: PerturbationsParams,
    label_names: tuple[str, ...],
    task: str,
) -> dict[str, Any]:
    flips = arrays[f"flips.{p.name}"][rows].astype(np.float64)
    pairs = arrays[f"pairs.{p.name}"][rows].astype(np.float64)
    total = float(pairs.sum())
    stats: dict[str, Any] = {
        "rule": p.sequence_rule.value,
        "frames": params.frames,
        "difficulty": params.difficulty,
        "pairs_per_image": pairs_compared(p.sequence_rule, params.frames, params.difficulty),
    }
    if p.sweep is None:
        stats["noise_severity"] = params.difficulty
    else:
        stats["sweep"] = list(p.sweep)
    if task == "multi-label":
        per_finding = flips.sum(axis=0) / total
        stats["flip_probability_per_finding"] = dict(
            zip(label_names, per_finding.tolist(), strict=False)
        )
        stats["flip_probability"] = float(per_finding.mean())
        any_key = f"any_flips.{p.name}"
        if any_key in arrays:
            stats["any_finding_flip_probability"] = float(arrays[any_key][rows].sum() / total)
    else:
        stats["flip_probability"] = float(flips.sum() / total)
    topk_key = f"topk.{p.name}"
    if topk_key in arrays:
        stats["top_k_distance"] = float(arrays[topk_key][rows].sum() / total)
    return stats


def _family_means(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for family in Family:
        members = [e for e in table.values() if e["family"] == family.value]
        if not members:
            continue
        out[family.value] = {
            "mean_relative_drop": _nanmean([e.get("mean_relative_drop") for e in members]),
            "mean_flip_probability": _nanmean([e["flip_probability"] for e in members]),
        }
    return out


def _flags(table: dict[str, dict[str, Any]], metric: str) -> list[str]:
    flags = []
    for name, entry in table.items():
        for row in entry["severities"]:
            drop = row["relative_drop"]
            if (
                row["severity"] <= 2
                and drop is not None
                and np.isfinite(drop)
                and (drop > FRAGILE_DROP)
            ):
                flags.append(
                    f"{name}: {metric} drops {100 * drop:.0f}% at severity {row['severity']}"
                )
                break
        fp = entry["flip_probability"]
        if fp is not None and np.isfinite(fp) and fp > UNSTABLE_FLIP:
            flags.append(f"{name}: flip probability {fp:.3f}")
    return flags


def _example(arrays: dict[str, np.ndarray]) -> tuple[int, np.ndarray] | None:
    if "example.frames" not in arrays or arrays["example.frames"].shape[0] == 0:
        return None
    # A batch merged twice contributes the same example twice: keep the first.
    return int(arrays["example.index"][0]), arrays["example.frames"][0]


# --- figures -----------------------------------------------------------------------------


def _figures(
    table: dict[str, dict[str, Any]],
    clean: dict[str, float],
    metric: str,
    severities: Sequence[int],
    example: tuple[int, np.ndarray] | None,
) -> list[Figure]:
    figures = []
    corrupted = {n: e for n, e in table.items() if e["severities"]}
    if corrupted:
        figures.append(
            _severity_plot(
                corrupted,
                metric,
                clean[metric],
                name="perturbations_metric_vs_severity",
                title=f"{metric} against severity",
            )
        )
        figures.append(
            _severity_plot(
                corrupted,
                "changed",
                0.0,
                name="perturbations_changed_vs_severity",
                title="Predictions changed from clean against severity",
            )
        )
    sequenced = {n: e for n, e in table.items() if e["sequence"]}
    if sequenced:
        figures.append(_flip_plot(sequenced))
    if example is not None:
        names = [n for n, e in table.items() if e["severities"]]
        figures.extend(_example_strips(example, names, table, severities))
    return figures


def _families(entries: dict[str, dict[str, Any]]) -> list[str]:
    return [f.value for f in Family if any(e["family"] == f.value for e in entries.values())]


def _severity_plot(
    entries: dict[str, dict[str, Any]], key: str, at_zero: float, *, name: str, title: str
) -> Figure:
    families = _families(entries)
    ncols = min(3, len(families))
    nrows = -(-len(families) // ncols)
    fig, axes = new_grid(nrows, ncols, 4.2 * ncols, 3.2 * nrows)
    for i, family in enumerate(families):
        ax = axes[i // ncols][i % ncols]
        members = [(n, e) for n, e in entries.items() if e["family"] == family]
        for j, (pname, entry) in enumerate(members):
            xs = [0] + [r["severity"] for r in entry["severities"]]
            ys = [at_zero] + [
                r[key] if r[key] is not None else float("nan") for r in entry["severities"]
            ]
            ax.plot(xs, ys, marker="o", color=PALETTE[j % len(PALETTE)], label=pname)
        ax.set_title(family)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel(key)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for i in range(len(families), nrows * ncols):
        axes[i // ncols][i % ncols].set_visible(False)
    fig.suptitle(title)
    return Figure(name=name, title=title, png=render_png(fig))


def _flip_plot(entries: dict[str, dict[str, Any]]) -> Figure:
    names = list(entries)
    fig, axes = new_grid(1, 1, 6.4, 0.9 + 0.32 * len(names))
    ax = axes[0][0]
    values = [entries[n]["flip_probability"] for n in names]
    colours = [
        PALETTE[[f.value for f in Family].index(entries[n]["family"]) % len(PALETTE)] for n in names
    ]
    ys = np.arange(len(names))
    ax.barh(ys, values, color=colours)
    anys = [entries[n]["sequence"].get("any_finding_flip_probability") for n in names]
    if any(a is not None for a in anys):
        ax.scatter(
            [a if a is not None else np.nan for a in anys],
            ys,
            marker="|",
            s=200,
            color="black",
            label="any finding",
        )
        ax.legend(fontsize=7)
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlabel("flip probability")
    ax.grid(axis="x", alpha=0.3)
    title = "Flip probability of perturbation sequences"
    ax.set_title(title)
    return Figure(
        name="perturbations_flip_probability",
        title=title,
        png=render_png(fig),
        caption="Noise: frames vs the first frame; others: frames `difficulty` steps apart.",
    )


def _example_strips(
    example: tuple[int, np.ndarray],
    names: list[str],
    table: dict[str, dict[str, Any]],
    severities: Sequence[int],
) -> list[Figure]:
    """One figure per family: a mosaic with a row per perturbation and a column per
    severity (clean first), drawn as a single image (one axes renders fast)."""
    index, frames = example  # [P, 1 + S, C, h, w] uint8
    if frames.shape[0] != len(names):
        logger.warning(
            "example strips skipped: %d rows for %d perturbations", len(frames), len(names)
        )
        return []
    columns = ["clean", *[f"severity {s}" for s in severities]][: frames.shape[1]]
    _, ncols, c, h, w = frames.shape
    gap = max(1, h // 16)
    figures = []
    for family in _families({n: table[n] for n in names}):
        rows = [i for i, n in enumerate(names) if table[n]["family"] == family]
        mosaic = np.full(
            (len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, c), 255, dtype=np.uint8
        )
        for r, i in enumerate(rows):
            for col in range(ncols):
                y0, x0 = r * (h + gap), col * (w + gap)
                mosaic[y0 : y0 + h, x0 : x0 + w] = frames[i, col].transpose(1, 2, 0)
        fig, axes = new_grid(1, 1, 1.0 + 1.1 * ncols, 0.6 + 1.1 * len(rows))
        ax = axes[0][0]
        if c == 1:
            ax.imshow(mosaic[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([col * (w + gap) + w / 2 for col in range(ncols)], columns, fontsize=8)
        ax.set_yticks(
            [r * (h + gap) + h / 2 for r in range(len(rows))], [names[i] for i in rows], fontsize=8
        )
        ax.tick_params(length=0)
        ax.xaxis.tick_top()
        for spine in ax.spines.values():
            spine.set_visible(False)
        title = f"Example frames: {family} (image {index})"
        figures.append(
            Figure(name=f"perturbations_examples_{family}", title=title, png=render_png(fig))
        )
    return figures


# --- plain-library entry point -----------------------------------------------------------


def perturbation_section(
    model: DiagnosticModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    perturbations: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    sequences: Sequence[str] | None = None,
    frames: int = DEFAULT_FRAMES,
    difficulty: int = 1,
    modality: Modality | str | None = None,
    metric: Metric | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> Section:
    """Run the analysis over an in-memory dataset, without the service.

    Args:
        model: the wrapped model (moved to nothing; images go to its device).
        images: ``[N, C, H, W]`` float images in ``[0, 1]`` at the model's input size.
        labels: ``[N]`` class indices or ``[N, K]`` 0/1 findings.
        seed: fixes every random draw (batches are seeded from it and their first index).

    Returns the report section, figures included.
    """
    params: dict[str, Any] = {
        "severities": list(severities),
        "frames": frames,
        "difficulty": difficulty,
    }
    if perturbations is not None:
        params["perturbations"] = list(perturbations)
    if sequences is not None:
        params["sequences"] = list(sequences)
    if modality is not None:
        params["modality"] = str(modality)
    if metric is not None:
        params["metric"] = metric
    _parse(params)  # fail before any work
    analysis = PerturbationsAnalysis()
    card = model.card
    device = model.device
    was_training = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, images.shape[0], batch_size):
            stop = min(start + batch_size, images.shape[0])
            ctx = BatchContext(
                model=model,
                clean=images[start:stop].to(device),
                labels=labels[start:stop].to(device),
                adversarial={},
                indices=np.arange(start, stop),
                seed=derive_seed(seed, "batch", start),
                params=params,
            )
            parts.append(analysis.collect(ctx))
    finally:
        model.train(was_training)
    summary_ctx = SummaryContext(
        labels=card.labels,
        task=card.task,
        head=model.head.value,
        attack_keys=[],
        params=params,
        thresholds=card.threshold_vector() if card.task == "multi-label" else None,
    )
    return analysis.summarize(merge_arrays(parts), summary_ctx)


def evaluate_perturbations(
    model: DiagnosticModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    perturbations: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    sequences: Sequence[str] | None = None,
    frames: int = DEFAULT_FRAMES,
    difficulty: int = 1,
    modality: Modality | str | None = None,
    metric: Metric | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """The JSON numbers of :func:`perturbation_section` (figures listed by name only)."""
    return perturbation_section(
        model,
        images,
        labels,
        perturbations=perturbations,
        severities=severities,
        sequences=sequences,
        frames=frames,
        difficulty=difficulty,
        modality=modality,
        metric=metric,
        seed=seed,
        batch_size=batch_size,
    ).to_json()
