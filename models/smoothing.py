"""Randomized smoothing: majority votes over Gaussian-noised copies, with a certificate.

Cohen, Rosenfeld, Kolter, *Certified Adversarial Robustness via Randomized Smoothing*,
ICML 2019; MedRDF (Xu et al., the paper's authors' follow-up) uses the same vote as a
robust diagnosis. The smoothed classifier is ``g(x) = argmax_c P(f(x + d) = c)`` with
``d ~ N(0, sigma^2 I)`` in **[0, 1] pixel space** (the model wrapper normalizes inside,
so ``sigma=0.12`` is 12 % of the full grey range, about 31 grey levels).

Single-label models (softmax or binary-logit heads) follow Cohen et al.'s ``CERTIFY``:
``n0`` noisy copies pick the top class, ``n`` fresh copies count its votes ``k``, and the
one-sided Clopper-Pearson bound ``pA_lower = Beta.ppf(alpha, k, n - k + 1)`` gives the
certified **L2** radius ``sigma * Phi^-1(pA_lower)``: with probability at least
``1 - alpha`` (over the noise), ``g`` returns the same class for every input within that
L2 distance (pixel units). When ``pA_lower <= 0.5`` the vote is not significant and the
prediction abstains (``label=None``, radius 0).

Multi-label (sigmoid) models get per-finding votes: the share of the ``n`` noisy copies in
which each finding is positive (at the card's thresholds), the per-finding majority, and a
per-finding radius from the same procedure applied to each finding's binary vote (``n0``
copies pick the outcome, ``n`` bound it). Each finding's radius certifies that finding
alone; the findings are not certified jointly (that would need a union bound).

Cost: ``n0 + n`` forward images per input image, batched ``batch_size`` at a time across
images and copies (``n = 100``, ``n0 = 16``: one pass of 116 images per image).

Noise is **not clipped** to [0, 1] by default: Cohen et al.'s theorem holds for any base
classifier, and clipping (``clip=True``) is just part of that base classifier
(``f(clip(x + d))``), so both certify correctly. Unclipped noise keeps the noise
distribution identical for every pixel (clipping biases dark and bright regions towards
mid-grey), which matches how noise-augmented models are trained; clip when the model was
trained on clipped noise or misbehaves outside [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.card import Head
from models.errors import InvalidImageError, InvalidParametersError
from models.heads import predict
from models.wrapper import DiagnosticModel

MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class SmoothedPrediction:
    """The smoothed diagnosis of one image.

    Attributes:
        label: the majority label (single-label), ``None`` when abstaining or for
            multi-label models.
        index: its index in the card's labels, or ``None``.
        votes: label -> count among the ``n`` estimation copies (single-label: votes for
            each class; multi-label: copies in which the finding is positive).
        vote_shares: ``votes / n``, each in [0, 1].
        p_lower: single-label: Clopper-Pearson lower bound of the top class's probability
            (``0.0`` when ``n0`` picked a class that then got no votes); ``None`` for
            multi-label.
        radius: single-label: certified L2 radius in [0, 1] pixel units, 0 when abstaining.
        abstained: single-label: ``pA_lower <= 0.5``.
        positive: multi-label: label -> majority vote (share > 0.5); empty otherwise.
        finding_radius: multi-label: label -> certified L2 radius of that finding's
            outcome picked by the ``n0`` selection copies (0 where the vote is not
            significant, or disagrees with ``positive``); empty otherwise.
        finding_p_lower: multi-label: label -> Clopper-Pearson lower bound of the share of
            copies agreeing with the outcome the ``n0`` copies picked; empty otherwise.
        sigma, n, n0, alpha: the smoothing parameters used.
    """

    label: str | None
    index: int | None
    votes: dict[str, int]
    vote_shares: dict[str, float]
    p_lower: float | None
    radius: float
    abstained: bool
    sigma: float
    n: int
    n0: int
    alpha: float
    positive: dict[str, bool] = field(default_factory=dict)
    finding_radius: dict[str, float] = field(default_factory=dict)
    finding_p_lower: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "index": self.index,
            "votes": self.votes,
            "vote_shares": self.vote_shares,
            "p_lower": self.p_lower,
            "radius": self.radius,
            "abstained": self.abstained,
            "positive": self.positive,
            "finding_radius": self.finding_radius,
            "finding_p_lower": self.finding_p_lower,
            "sigma": self.sigma,
            "n": self.n,
            "n0": self.n0,
            "alpha": self.alpha,
        }


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound of a binomial proportion."""
    if successes <= 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """``sigma * Phi^-1(p_lower)`` (L2, pixel units); 0 when ``p_lower <= 0.5``."""
    if p_lower <= 0.5:
        return 0.0
    from scipy.stats import norm

    return float(sigma * norm.ppf(p_lower))


def _validate(sigma: float, n: int, n0: int, alpha: float, batch_size: int) -> None:
    if not (isinstance(sigma, (int, float)) and 0.0 < sigma <= 1.0):
        raise InvalidParametersError("sigma must be in (0, 1]")
    if not (isinstance(n, int) and 1 <= n <= MAX_SAMPLES):
        raise InvalidParametersError(f"n must be in [1, {MAX_SAMPLES}]")
    if not (isinstance(n0, int) and 1 <= n0 <= MAX_SAMPLES):
        raise InvalidParametersError(f"n0 must be in [1, {MAX_SAMPLES}]")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 0.5):
        raise InvalidParametersError("alpha must be in (0, 0.5)")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InvalidParametersError("batch_size must be >= 1")


def _as_batch(model: DiagnosticModel, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    expected = model.input_shape
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise InvalidImageError(
            f"expected images [N, {expected[0]}, {expected[1]}, {expected[2]}] or "
            f"[{expected[0]}, {expected[1]}, {expected[2]}], got {list(x.shape)}"
        )
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise InvalidImageError("images must be finite floats in [0, 1]")
    return x


class SmoothingVotes:
    """The noisy votes of a smoothed prediction, computed a chunk at a time.

    ``run(model, max_copies)`` draws and classifies at most ``max_copies`` more noisy copies
    (whole batches of ``batch_size``) and says whether all ``N x (n0 + n)`` are done, so a
    server can give other requests the model between chunks and stop when its client has
    gone; :meth:`results` then gives the certificates. The noise is drawn in the same order
    whatever the chunking, so a seeded run gives the same answer chunked or not.
    """

    def __init__(
        self,
        model: DiagnosticModel,
        x: torch.Tensor,
        *,
        sigma: float,
        n: int,
        alpha: float = 0.001,
        n0: int = 16,
        batch_size: int = 256,
        clip: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        _validate(sigma, n, n0, alpha, batch_size)
        self.x = _as_batch(model, x).to(model.device)
        self.sigma, self.n, self.n0, self.alpha = sigma, n, n0, alpha
        self.batch_size, self.clip, self.generator = batch_size, clip, generator
        self.labels, self.head = model.labels, model.head
        self.copies = n0 + n
        self.total = self.x.shape[0] * self.copies
        self._start = 0
        self._outs: list[torch.Tensor] = []

    @property
    def done(self) -> bool:
        return self._start >= self.total

    def run(self, model: DiagnosticModel, max_copies: int | None = None) -> bool:
        """Classify up to ``max_copies`` more noisy copies (at least one batch); True once
        every copy is done. ``model`` is put in eval mode for the call and restored after."""
        budget = self.total if max_copies is None else max(max_copies, 1)
        device = model.device
        noise_device = self.generator.device if self.generator is not None else device
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                spent = 0
                while not self.done and spent < budget:
                    stop = min(self._start + self.batch_size, self.total)
                    idx = torch.arange(self._start, stop, device=device) // self.copies
                    clean = self.x.index_select(0, idx)
                    noise = torch.randn(
                        clean.shape, generator=self.generator, device=noise_device,
                        dtype=clean.dtype,
                    ).to(device)
                    noisy = clean + self.sigma * noise
                    if self.clip:
                        noisy = noisy.clamp(0.0, 1.0)
                    self._outs.append(predict(model(noisy), model.head, model.thresholds).cpu())
                    spent += stop - self._start
                    self._start = stop
        finally:
            model.train(was_training)
        return self.done

    def results(self) -> list[SmoothedPrediction]:
        """One :class:`SmoothedPrediction` per image (after :meth:`run` returned True)."""
        if not self.done:
            raise RuntimeError("the smoothing votes are not complete")
        pred = torch.cat(self._outs)
        preds = pred.view(self.x.shape[0], self.copies, *pred.shape[1:])
        n, n0, sigma, alpha, labels = self.n, self.n0, self.sigma, self.alpha, self.labels
        if self.head == Head.SIGMOID:
            select = preds[:, :n0].sum(dim=1).long()
            estimate = preds[:, n0:].sum(dim=1).long()
            return [
                _multi(labels, s, e, sigma, n, n0, alpha)
                for s, e in zip(select, estimate, strict=True)
            ]
        k = len(labels)
        rows = preds.shape[0]
        offsets = torch.arange(rows).view(-1, 1) * k
        select = torch.bincount((preds[:, :n0] + offsets).flatten(), minlength=rows * k)
        estimate = torch.bincount((preds[:, n0:] + offsets).flatten(), minlength=rows * k)
        return [
            _single(labels, s, e, sigma, n, n0, alpha)
            for s, e in zip(select.view(rows, k), estimate.view(rows, k), strict=True)
        ]


def smooth_predict(
    model: DiagnosticModel,
    x: torch.Tensor,
    *,
    sigma: float,
    n: int,
    alpha: float = 0.001,
    n0: int = 16,
    batch_size: int = 256,
    clip: bool = False,
    generator: torch.Generator | None = None,
) -> list[SmoothedPrediction]:
    """Smoothed predictions (and certificates) for ``x`` ``[C, H, W]`` or ``[N, C, H, W]``
    in [0, 1], in one go (:class:`SmoothingVotes` runs it in chunks).

    Args:
        model: the wrapped model; put in eval mode for the call and restored after.
        sigma: noise standard deviation in [0, 1] pixel units, in (0, 1].
        n: noisy copies per image for the vote and its bound, in [1, 10000].
        alpha: the certificate fails with probability at most ``alpha``.
        n0: extra copies that only select the top class (per finding for multi-label);
            keeping them apart from the ``n`` counted ones is what makes the bound valid.
        batch_size: noisy copies per forward pass; copies of several images share a batch,
            so ``n = 100`` on one image costs about ``(n0 + n) / batch_size`` passes.
        clip: clip noisy images to [0, 1] (see the module docstring).
        generator: seeds the noise (on its own device; the noise is moved to the model's).

    Returns:
        One :class:`SmoothedPrediction` per image.

    Raises:
        InvalidParametersError: parameters out of range.
        InvalidImageError: images of the wrong shape or not finite.
    """
    votes = SmoothingVotes(
        model, x, sigma=sigma, n=n, alpha=alpha, n0=n0, batch_size=batch_size, clip=clip,
        generator=generator,
    )
    votes.run(model)
    return votes.results()


def _single(
    labels: tuple[str, ...],
    select: torch.Tensor,
    estimate: torch.Tensor,
    sigma: float,
    n: int,
    n0: int,
    alpha: float,
) -> SmoothedPrediction:
    top = int(select.argmax())
    p_lower = lower_confidence_bound(int(estimate[top]), n, alpha)
    radius = certified_radius(p_lower, sigma)
    abstained = p_lower <= 0.5
    votes = {label: int(c) for label, c in zip(labels, estimate.tolist(), strict=True)}
    return SmoothedPrediction(
        label=None if abstained else labels[top],
        index=None if abstained else top,
        votes=votes,
        vote_shares={label: c / n for label, c in votes.items()},
        p_lower=p_lower,
        radius=radius,
        abstained=abstained,
        sigma=sigma,
        n=n,
        n0=n0,
        alpha=alpha,
    )


def _multi(
    labels: tuple[str, ...],
    select: torch.Tensor,
    estimate: torch.Tensor,
    sigma: float,
    n: int,
    n0: int,
    alpha: float,
) -> SmoothedPrediction:
    votes = {label: int(c) for label, c in zip(labels, estimate.tolist(), strict=True)}
    radius: dict[str, float] = {}
    p_lower: dict[str, float] = {}
    for label, s, c in zip(labels, select.tolist(), votes.values(), strict=True):
        # As for single-label: the n0 copies pick the outcome, the n copies bound it.
        picked_positive = 2 * s > n0
        agreeing = c if picked_positive else n - c
        p_lower[label] = lower_confidence_bound(agreeing, n, alpha)
        radius[label] = certified_radius(p_lower[label], sigma)
    return SmoothedPrediction(
        label=None,
        index=None,
        votes=votes,
        vote_shares={label: c / n for label, c in votes.items()},
        p_lower=None,
        radius=0.0,
        abstained=False,
        sigma=sigma,
        n=n,
        n0=n0,
        alpha=alpha,
        positive={label: 2 * c > n for label, c in votes.items()},
        finding_radius=radius,
        finding_p_lower=p_lower,
    )
