"""Predict: decode uploaded images for a model's card, run them, and describe the answer.

Response rules (one entry per card label in card order):

- single-label (softmax or binary-logit head): ``positive`` marks the top label, which is
  also ``top_label``;
- multi-label (sigmoid head): ``positive`` is ``probability >= threshold`` with the card's
  per-finding threshold (0.5 by default); ``top_label`` is the most probable *positive*
  finding, or ``null`` when no finding is positive;
- with randomized smoothing, ``probability`` is null and ``vote_share`` is the finding's
  or class's share of the noisy votes (a vote, not a probability), ``positive`` the
  majority, and ``smoothing`` carries the certificate and the warnings; ``top_label`` is
  ``null`` when the vote abstains.

Fair use: a smoothed request runs on the model's lane ``chunk`` noisy copies at a time
(:class:`models.smoothing.SmoothingVotes`), checking between chunks whether its client is
still there; every request is charged to its tenant's token bucket (:func:`charge`).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import torch

from app.api.schemas.models import (
    ImagePrediction,
    NamedImagePrediction,
    PredictBatchResponse,
    Prediction,
    PredictResponse,
    SmoothedFinding,
    Smoothing,
)
from app.api.services.inference import InferenceService, Loader, Ticket
from app.api.services.multipart import UploadedFile
from app.core.db import ModelRow
from app.core.limits import RateLimiter, check_smoothing_samples
from app.core.registry import model_path, row_card
from app.core.storage import Storage
from models.card import ModelCard
from models.errors import RobustDxError, ServiceUnavailableError
from models.imaging import decode_image, to_model_input
from models.loading import load_model
from models.smoothing import SmoothedPrediction, SmoothingVotes
from models.wrapper import DiagnosticModel

if TYPE_CHECKING:
    from app.api.startup import AppState

#: Selection copies per smoothed image (Cohen et al.'s n0), on top of the n counted ones.
SMOOTHING_N0 = 16
#: Agreement with the plain diagnosis below this (most findings differ) gets a warning.
MIN_AGREEMENT = 0.5


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


def _disagreement_warning(differ: int, total: int, sigma: float) -> str:
    what = "the top label" if total == 1 else f"{differ} of {total} findings"
    return (
        f"the smoothed answer disagrees with the plain diagnosis on {what}: the model was "
        f"likely not trained under Gaussian noise of sigma={sigma:g}, so its smoothed answer "
        "is not a reliable diagnosis (train it with noise augmentation at this sigma, or use "
        "a smaller sigma)"
    )


def describe_smoothed(
    card: ModelCard, result: SmoothedPrediction, plain: Sequence[float]
) -> ImagePrediction:
    """The smoothed answer for one image; ``plain`` is the model's answer on the clean image."""
    shares = [result.vote_shares[label] for label in card.labels]
    plain_answer = describe(card, plain)
    warnings: list[str] = []
    findings: list[SmoothedFinding] | None = None
    if card.task == "multi-label":
        positive = [bool(result.positive.get(label)) for label in card.labels]
        candidates = [i for i, pos in enumerate(positive) if pos]
        top = max(candidates, key=lambda i: shares[i]) if candidates else None
        top_label = card.labels[top] if top is not None else None
        findings = [
            SmoothedFinding(
                label=label,
                vote_share=_unit(result.vote_shares[label]),
                positive=pos,
                certified_radius=result.finding_radius.get(label, 0.0),
                p_lower=_unit(result.finding_p_lower.get(label, 0.0)),
                abstained=result.finding_p_lower.get(label, 0.0) <= 0.5,
            )
            for label, pos in zip(card.labels, positive, strict=True)
        ]
        plain_positive = [p.positive for p in plain_answer.predictions]
        agree = sum(a == b for a, b in zip(positive, plain_positive, strict=True))
        agreement = agree / len(positive)
        abstained = any(f.abstained for f in findings)
        radius = min(f.certified_radius for f in findings)
        p_lower = min(f.p_lower for f in findings)
        differ = len(positive) - agree
    else:
        top_label = result.label
        positive = [label == result.label for label in card.labels]
        agreement = 1.0 if result.label == plain_answer.top_label else 0.0
        abstained = result.abstained
        radius = 0.0 if abstained else result.radius
        p_lower = _unit(result.p_lower or 0.0)
        differ = 0 if abstained or agreement == 1.0 else 1
    if agreement < MIN_AGREEMENT and differ:
        warnings.append(_disagreement_warning(differ, len(positive) if findings else 1,
                                              result.sigma))
    smoothing = Smoothing(
        sigma=result.sigma, n=result.n, n0=result.n0, alpha=result.alpha, label=top_label,
        abstained=abstained, certified_radius=radius, p_lower=p_lower,
        agreement_with_plain=agreement, findings=findings, warnings=warnings,
    )
    return ImagePrediction(
        predictions=[
            Prediction(label=label, vote_share=_unit(s), positive=pos)
            for label, s, pos in zip(card.labels, shares, positive, strict=True)
        ],
        top_label=top_label,
        smoothing=smoothing,
    )


def _unit(p: float) -> float:
    return min(1.0, max(0.0, float(p)))


Disconnected = Callable[[], Awaitable[bool]]


async def _smoothed(
    service: InferenceService,
    row: ModelRow,
    loader: Loader,
    images: list[torch.Tensor],
    smoothing: SmoothingRequest,
    chunk: int,
    disconnected: Disconnected | None,
) -> list[SmoothedPrediction]:
    """Smoothing votes, ``chunk`` noisy copies per turn on the model's lane."""
    seed = smoothing.seed if smoothing.seed is not None else secrets.randbits(63)
    generator = torch.Generator().manual_seed(seed)
    x = torch.stack(images)

    def start(model: DiagnosticModel) -> SmoothingVotes:
        return SmoothingVotes(
            model, x, sigma=smoothing.sigma, n=smoothing.n, alpha=smoothing.alpha,
            n0=SMOOTHING_N0, batch_size=chunk, generator=generator,
        )

    votes = await service.call(row.id, loader, start, row.tenant_id)
    while not await service.call(
        row.id, loader, lambda model: votes.run(model, chunk), row.tenant_id
    ):
        if disconnected is not None and await disconnected():
            # Nobody will read the answer: give the model back to the others now.
            raise ServiceUnavailableError("the client went away; smoothing stopped")
    return votes.results()


async def predict_uploads(
    service: InferenceService,
    storage: Storage,
    row: ModelRow,
    parts: Sequence[UploadedFile],
    *,
    single: bool,
    limits: ImageLimits,
    smoothing: SmoothingRequest | None = None,
    chunk: int = 64,
    ticket: Ticket | None = None,
    disconnected: Disconnected | None = None,
    decoders: anyio.CapacityLimiter | None = None,
) -> PredictResponse | PredictBatchResponse:
    """Decode, run (micro-batched, or smoothed on the model's lane ``chunk`` copies at a
    time) and describe.

    ``ticket``: the request's announcement to the model's lane (``InferenceService.expect``).
    ``disconnected``: polled between smoothing chunks; the work stops when it says True.
    ``decoders``: the tenant's share of decoding threads (:func:`decode_limiter`).
    """
    card = row_card(row)
    loader = model_loader(model_path(storage, row), card, dict(row.info), service.device)
    if smoothing is None:
        rows = await service.predict(
            row.id, loader, len(parts), lambda: decode_uploads(parts, card, limits), ticket,
            row.tenant_id, decoders,
        )
        answers = [describe(card, probs) for probs in rows]
    else:
        if ticket is not None:
            ticket.release()  # smoothing does not join the batches
        images = await anyio.to_thread.run_sync(
            lambda: decode_uploads(parts, card, limits), limiter=decoders
        )
        plain = await service.infer(row.id, loader, images, row.tenant_id)
        results = await _smoothed(service, row, loader, images, smoothing, chunk, disconnected)
        answers = [
            describe_smoothed(card, r, p) for r, p in zip(results, plain, strict=True)
        ]
    if single:
        return PredictResponse(model_id=row.id, **answers[0].model_dump())
    return PredictBatchResponse(
        model_id=row.id,
        results=[
            NamedImagePrediction(filename=part.filename, **answer.model_dump())
            for part, answer in zip(parts, answers, strict=True)
        ],
    )


_LIMITER = threading.Lock()


def predict_limiter(state: AppState) -> RateLimiter:
    """The process's per-tenant predict token buckets (``state.extras["predict_limiter"]``)."""
    with _LIMITER:
        limiter = state.extras.get("predict_limiter")
        if limiter is None:
            settings = state.settings
            limiter = RateLimiter(settings.predict_rate_per_second, settings.predict_burst)
            state.extras["predict_limiter"] = limiter
        assert isinstance(limiter, RateLimiter)
        return limiter


def decode_limiter(state: AppState, tenant_id: str) -> anyio.CapacityLimiter:
    """The tenant's decoding threads (``decode_threads_per_tenant``): a tenant sending many
    large images at once waits for its own decoders instead of taking every thread of the
    pool the other tenants' requests need. Kept for the 10,000 most recent tenants."""
    with _LIMITER:
        limiters = state.extras.setdefault("decode_limiters", OrderedDict())
        limiter = limiters.get(tenant_id)
        if limiter is None:
            limiter = limiters[tenant_id] = anyio.CapacityLimiter(
                state.settings.decode_threads_per_tenant
            )
            while len(limiters) > 10_000:
                limiters.popitem(last=False)
        limiters.move_to_end(tenant_id)
        assert isinstance(limiter, anyio.CapacityLimiter)
        return limiter


def charge(state: AppState, tenant_id: str, files: int, smoothing: SmoothingRequest | None) -> None:
    """Check the request against the smoothing cap and take its cost from the tenant's bucket:
    one image pass per file, ``n0 + n`` per smoothed file."""
    if smoothing is None:
        predict_limiter(state).charge(tenant_id, files)
        return
    check_smoothing_samples(smoothing.n, files, state.settings.max_smoothing_samples)
    predict_limiter(state).charge(tenant_id, (smoothing.n + SMOOTHING_N0) * files,
                                  "smoothed predict")
