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

Parameters: see :class:`~workers.analyses.perturbation_params.PerturbationsParams`; the
numbers are computed in :mod:`workers.analyses.perturbation_summary` and drawn in
:mod:`workers.analyses.perturbation_figures`. Randomness is seeded from the batch seed, the
batch's first dataset position and the perturbation's name, so adding a perturbation does
not change the others; all severities of a perturbation share the seed (the same noise
field, directions and artefact layout, only stronger), so severity curves are paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from models.card import Head
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import clean_rows
from workers.analyses.base import (
    Analysis,
    BatchContext,
    Section,
    SummaryContext,
    merge_arrays,
)
from workers.analyses.jsonable import jsonable
from workers.analyses.perturbation_figures import perturbation_figures
from workers.analyses.perturbation_params import (
    DEFAULT_FRAMES,
    NAME,
    Metric,
    PerturbationsParams,
    parse,
)
from workers.analyses.perturbation_summary import (
    corruption_keys,
    example_frames,
    family_means,
    flags,
    perturbation_entry,
    sequence_stats,
)
from workers.analyses.stats import nanmean
from workers.analyses.tensors import thumbnail, to_uint8
from workers.perturbations import (
    Modality,
    derive_seed,
    get_perturbation,
    iter_sequence,
    list_perturbations,
)
from workers.perturbations.metrics import (
    FlipCounter,
    classification_metrics,
    corruption_summary,
    top_k_for,
)

__all__ = ["PerturbationsAnalysis", "PerturbationsParams", "evaluate_perturbations",
           "perturbation_section"]

#: Example thumbnails are at most this many pixels on a side.
THUMBNAIL = 64


class PerturbationsAnalysis(Analysis):
    """Corruption accuracy and flip probability under common perturbations."""

    name: ClassVar[str] = NAME
    needs_adversarial: ClassVar[bool] = False

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        params = parse(ctx.params)
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
        with torch.no_grad():  # not inference_mode: see AuditEngine._grid
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
        params = parse(ctx.params)
        task, thresholds = ctx.task, ctx.thresholds
        metric = params.headline(task)
        if "clean_probs" not in arrays or arrays["clean_probs"].shape[0] == 0:
            return Section(name=NAME, applicable=False, data={}, reason="no images were evaluated")
        _, rows = clean_rows(arrays, "labels")
        labels = arrays["labels"][rows]
        clean_probs = arrays["clean_probs"][rows]
        clean = classification_metrics(clean_probs, labels, task, thresholds)
        corrupted = corruption_keys(arrays)
        sequenced = [n for n in list_perturbations() if f"flips.{n}" in arrays]
        table: dict[str, dict[str, Any]] = {}
        for name in (n for n in list_perturbations() if n in corrupted or n in sequenced):
            entry = perturbation_entry(name, arrays, rows, corrupted.get(name, []), clean,
                                       clean_probs, labels, task, thresholds, metric)
            entry["sequence"] = (
                sequence_stats(arrays, rows, get_perturbation(name), params, ctx.labels, task)
                if name in sequenced else None
            )
            entry["flip_probability"] = (
                entry["sequence"]["flip_probability"] if entry["sequence"] else None
            )
            table[name] = entry
        summary = _summary(table, clean[metric], metric, sequenced)
        example = example_frames(arrays)
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
            "families": family_means(table),
            "summary": summary,
            "example_index": example[0] if example else None,
        }
        figures = perturbation_figures(table, clean, metric, params.severities, example)
        return Section(name=NAME, applicable=True, data=jsonable(data), figures=figures,
                       flags=flags(table, metric))


def _summary(table: dict[str, dict[str, Any]], clean_metric: float, metric: str,
             sequenced: list[str]) -> dict[str, Any]:
    """mCE-style means over the perturbations (written into ``table`` too) and the mean
    flip probability and top-k distance of the sequences."""
    by_metric = {n: [row[metric] for row in e["severities"]]
                 for n, e in table.items() if e["severities"]}
    summary = corruption_summary(clean_metric, by_metric)
    for name, stats in summary.pop("per_perturbation").items():
        table[name].update(stats)
    summary["clean_metric"] = clean_metric
    summary["mean_flip_probability"] = nanmean([table[n]["flip_probability"] for n in sequenced])
    topk = [table[n]["sequence"].get("top_k_distance") for n in sequenced]
    summary["mean_top_k_distance"] = nanmean([t for t in topk if t is not None])
    return summary


# --- collect helpers ---------------------------------------------------------------------


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _probabilities(model: DiagnosticModel, x: torch.Tensor) -> np.ndarray:
    return model.probabilities(x).float().cpu().numpy()


def _thumbnails(frames: torch.Tensor) -> np.ndarray:
    """``[P, S, C, H, W]`` in [0, 1] -> uint8 with the longer side at most THUMBNAIL."""
    p, s, c, h, w = frames.shape
    small = to_uint8(thumbnail(frames.reshape(p * s, c, h, w).float(), THUMBNAIL))
    return small.reshape(p, s, c, *small.shape[-2:])


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
    parse(params)  # fail before any work
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
