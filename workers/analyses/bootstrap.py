"""Seeded bootstrap intervals shared by the sections of an audit.

One :class:`Bootstrap` holds the resampling settings (resamples, coverage, seed) of a
section; every interval it gives is a percentile interval over the same multinomial
resamples of the images (see :mod:`workers.analyses.metrics`), so clean and adversarial
intervals are paired. Proportions (accuracies, fooling rates) fall back to the Wilson score
interval where every image agrees and the bootstrap has no spread
(:func:`workers.analyses.stats.proportion_interval`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from workers.analyses import metrics as M
from workers.analyses.stats import proportion_interval


class Bootstrap:
    """Seeded resamples shared by every interval of a section (drawn once when small)."""

    #: Keep the drawn resamples in memory up to this many counts (float32: 4 bytes each).
    CACHE_ELEMENTS = 32_000_000

    def __init__(self, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> None:
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

    def proportion(self, mask: np.ndarray) -> tuple[list[float] | None, str | None]:
        """``(interval, method)`` of the share of ``True``: ``"bootstrap"``, or ``"wilson"``
        where every image agrees; ``(None, None)`` when intervals are disabled."""
        m = np.asarray(mask).astype(bool).reshape(-1)
        return proportion_interval(m, self.interval(M.accuracy_statistic(m), int(m.size)),
                                   self.confidence)
