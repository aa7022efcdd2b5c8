"""The contract every audit analysis follows.

An audit runs in shards (slices of the dataset). For each shard the worker calls
:meth:`Analysis.collect` on batches and stores the returned per-image arrays; when every
shard is done the arrays are concatenated in dataset order and :meth:`Analysis.summarize`
turns them into one report section (JSON numbers, the source of truth) plus figures (PNG
renderings of those numbers, and galleries of a few example images).

``collect`` must be deterministic for a seed, must not keep activations of more than one
batch alive, and must return arrays whose first dimension is the batch size (use a
leading dimension of 1 for per-batch partial sums, and say so in the key name with a
``sum_`` prefix: such arrays are summed across batches instead of concatenated).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from models.wrapper import DiagnosticModel


@dataclass
class BatchContext:
    """What an analysis sees of one batch.

    Attributes:
        model: the wrapped model, in eval mode, on its device.
        clean: ``[N, C, H, W]`` float images in ``[0, 1]`` on the model's device.
        labels: ``[N]`` class indices (single-label) or ``[N, K]`` 0/1 floats (multi-label).
        adversarial: attack key (e.g. ``"pgd:eps=4/255"``) -> ``[N, C, H, W]`` adversarial
            images in ``[0, 1]``, already quantized to 8 bits.
        masks: optional ``[N, 1, H, W]`` lesion masks in ``{0, 1}`` (phantoms emit them).
        indices: ``[N]`` positions of the images in the dataset (stable across shards).
        seed: the audit's seed combined with the shard index; use it for any randomness.
        params: the analysis parameters given in the audit request.
    """

    model: DiagnosticModel
    clean: torch.Tensor
    labels: torch.Tensor
    adversarial: dict[str, torch.Tensor]
    indices: np.ndarray
    seed: int
    masks: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Figure:
    """A rendered picture for the HTML report (and an artifact file ``{name}.png``)."""

    name: str
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    """One report section, keyed by the analysis name in the JSON report."""

    name: str
    applicable: bool
    data: dict[str, Any]
    reason: str | None = None
    figures: list[Figure] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"applicable": self.applicable, **self.data}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.flags:
            out["flags"] = list(self.flags)
        out["figures"] = [f"{f.name}.png" for f in self.figures]
        return out


@dataclass
class SummaryContext:
    """What ``summarize`` gets besides the collected arrays."""

    labels: tuple[str, ...]
    task: str
    head: str
    attack_keys: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    thresholds: list[float] | None = None


class Analysis(ABC):
    """Base class; subclasses set ``name`` and implement the three methods."""

    name: ClassVar[str]
    #: Whether the analysis needs adversarial images (perturbations does not).
    needs_adversarial: ClassVar[bool] = True

    def not_applicable(self, model: DiagnosticModel) -> str | None:
        """A human-readable reason when the analysis does not apply to this model."""
        return None

    @abstractmethod
    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        """Per-image arrays for one batch (first dimension = batch size)."""

    @abstractmethod
    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        """The report section from all the arrays of the audit, in dataset order."""


def merge_arrays(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch arrays in order; keys starting with ``sum_`` are summed."""
    merged: dict[str, np.ndarray] = {}
    keys = {k for part in parts for k in part}
    for key in sorted(keys):
        chunks = [part[key] for part in parts if key in part]
        if key.startswith("sum_"):
            merged[key] = np.sum(np.stack(chunks), axis=0)
        else:
            merged[key] = np.concatenate(chunks, axis=0)
    return merged
