"""Predict: decode uploaded images for a model's card, run them, and describe the answer.

Response rules (one entry per card label in card order):

- single-label (softmax or binary-logit head): ``positive`` marks the top label, which is
  also ``top_label``;
- multi-label (sigmoid head): ``positive`` is ``probability >= threshold`` with the card's
  per-finding threshold (0.5 by default); ``top_label`` is the most probable *positive*
  finding, or ``null`` when no finding is positive;
- with randomized smoothing, ``probability`` is the finding's or class's share of the
  noisy votes, ``positive`` the majority, and ``smoothing`` carries the certificate;
  ``top_label`` is ``null`` when the vote abstains.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import torch

from app.api.schemas.models import (
    ImagePrediction,
    NamedImagePrediction,
    PredictBatchResponse,
    Prediction,
    PredictResponse,
    Smoothing,
)
from app.api.services.inference import InferenceService, Loader, Ticket
from app.api.services.multipart import UploadedFile
from app.core.db import ModelRow
from app.core.registry import model_path, row_card
from app.core.storage import Storage
from models.card import ModelCard
from models.errors import RobustDxError
from models.imaging import decode_image, to_model_input
from models.loading import load_model
from models.smoothing import SmoothedPrediction, smooth_predict
from models.wrapper import DiagnosticModel


@dataclass(frozen=True)
class SmoothingRequest:
    """``?defense=smoothing``: sigma in [0, 1] pixel units, ``n`` counted noisy copies,
    ``alpha`` the certificate's failure probability, ``seed`` for a reproducible draw
    (fresh noise otherwise, which is what the certificate assumes against an adaptive
    attacker)."""

    sigma: float
    n: int
    alpha: float
    seed: int | None = None


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


def model_loader(
    path: Path, card: ModelCard, info: dict[str, object], device: torch.device
) -> Loader:
    """A loader for the inference cache that holds no database object."""

    def load() -> DiagnosticModel:
        return load_model(path, card, device=device, info=info).model

    return load


def decode_uploads(
    parts: Sequence[UploadedFile], card: ModelCard, limits: ImageLimits
) -> list[torch.Tensor]:
    """``[C, H, W]`` tensors in [0, 1] at the card's size, in upload order.

    Errors name the file (and its position when several were sent).
    """
    images = []
    for index, part in enumerate(parts):
        try:
            decoded = decode_image(
                part.read(),
                filename=part.filename,
                max_bytes=limits.max_bytes,
                max_pixels=limits.max_pixels,
            )
            images.append(to_model_input(decoded, card))
        except RobustDxError as exc:
            exc.details.setdefault("filename", part.filename)
            if len(parts) > 1:
                exc.details["index"] = index
            raise
    return images


def describe(card: ModelCard, probs: Sequence[float]) -> ImagePrediction:
    labels = card.labels
    if card.task == "multi-label":
        thresholds = card.threshold_vector()
        positive = [p >= t for p, t in zip(probs, thresholds, strict=True)]
        candidates = [i for i, pos in enumerate(positive) if pos]
        top = max(candidates, key=lambda i: probs[i]) if candidates else None
    else:
        top = max(range(len(labels)), key=lambda i: probs[i])
        positive = [i == top for i in range(len(labels))]
    return ImagePrediction(
        predictions=[
            Prediction(label=label, probability=_unit(p), positive=pos)
            for label, p, pos in zip(labels, probs, positive, strict=True)
        ],
        top_label=labels[top] if top is not None else None,
    )


def describe_smoothed(card: ModelCard, result: SmoothedPrediction) -> ImagePrediction:
    shares = [result.vote_shares[label] for label in card.labels]
    if card.task == "multi-label":
        positive = [bool(result.positive.get(label)) for label in card.labels]
        candidates = [i for i, pos in enumerate(positive) if pos]
        top = max(candidates, key=lambda i: shares[i]) if candidates else None
        top_label = card.labels[top] if top is not None else None
        findings = [
            {
                "label": label,
                "vote_share": result.vote_shares[label],
                "positive": bool(result.positive.get(label)),
                "radius": result.finding_radius.get(label, 0.0),
            }
            for label in card.labels
        ]
        smoothing = Smoothing(
            sigma=result.sigma,
            n=result.n,
            n0=result.n0,
            alpha=result.alpha,
            label=None,
            abstained=False,
            radius=None,
            p_lower=None,
            findings=findings,
        )
    else:
        top_label = result.label
        positive = [label == result.label for label in card.labels]
        smoothing = Smoothing(
            sigma=result.sigma,
            n=result.n,
            n0=result.n0,
            alpha=result.alpha,
            label=result.label,
            abstained=result.abstained,
            radius=None if result.abstained else result.radius,
            p_lower=result.p_lower,
        )
    return ImagePrediction(
        predictions=[
            Prediction(label=label, probability=_unit(s), positive=pos)
            for label, s, pos in zip(card.labels, shares, positive, strict=True)
        ],
        top_label=top_label,
        smoothing=smoothing,
    )


def _unit(p: float) -> float:
    return min(1.0, max(0.0, float(p)))


async def predict_uploads(
    service: InferenceService,
    storage: Storage,
    row: ModelRow,
    parts: Sequence[UploadedFile],
    *,
    single: bool,
    limits: ImageLimits,
    smoothing: SmoothingRequest | None = None,
    smoothing_batch: int = 128,
    ticket: Ticket | None = None,
) -> PredictResponse | PredictBatchResponse:
    """Decode, run (micro-batched, or smoothed on the model's lane) and describe.

    ``ticket``: the request's announcement to the model's lane (``InferenceService.expect``).
    """
    card = row_card(row)
    loader = model_loader(model_path(storage, row), card, dict(row.info), service.device)
    if smoothing is None:
        rows = await service.predict(
            row.id, loader, len(parts), lambda: decode_uploads(parts, card, limits), ticket
        )
        answers = [describe(card, probs) for probs in rows]
    else:
        if ticket is not None:
            ticket.release()  # smoothing does not join the batches
        images = await anyio.to_thread.run_sync(lambda: decode_uploads(parts, card, limits))
        seed = smoothing.seed if smoothing.seed is not None else secrets.randbits(63)
        generator = torch.Generator().manual_seed(seed)
        x = torch.stack(images)
        results = await service.call(
            row.id,
            loader,
            lambda model: smooth_predict(
                model,
                x,
                sigma=smoothing.sigma,
                n=smoothing.n,
                alpha=smoothing.alpha,
                batch_size=smoothing_batch,
                generator=generator,
            ),
        )
        answers = [describe_smoothed(card, r) for r in results]
    if single:
        return PredictResponse(model_id=row.id, **answers[0].model_dump())
    return PredictBatchResponse(
        model_id=row.id,
        results=[
            NamedImagePrediction(filename=part.filename, **answer.model_dump())
            for part, answer in zip(parts, answers, strict=True)
        ],
    )
