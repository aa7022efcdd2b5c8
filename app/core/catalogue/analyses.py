"""Parameters of every analysis: frozen pydantic models, torch-free.

Each analysis of ``workers.analyses`` validates its parameters with its model here, and the
API checks an audit's analysis parameters with the same models at submission. Entries the
audit runner injects (``attacks``, ``attack_stats``, ``min_eps``, ``seed``) are never
user parameters and are not part of these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from app.core.catalogue.limits import in_range
from app.core.catalogue.names import PERTURBATION_NAMES

#: The runner's own entries in an analysis's parameters (never given by users).
INJECTED_KEYS = frozenset({"attacks", "attack_stats", "min_eps", "seed"})


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuantitativeParams(_Params):
    """Parameters of ``quantitative``.

    Attributes:
        n_bootstrap: bootstrap resamples for the intervals (0 disables them).
        confidence: the intervals' coverage.
        bootstrap_seed: the resampling seed; the audit's seed when omitted.
        min_eps_bins: bins of the minimum-eps histogram.
    """

    n_bootstrap: Annotated[int, in_range(0, 100_000)] = 1000
    confidence: Annotated[float, in_range(0.0, 1.0, lo_open=True, hi_open=True)] = 0.95
    bootstrap_seed: int | None = None
    min_eps_bins: Annotated[int, in_range(1, 255)] = 20


class ClinicalParams(_Params):
    """Parameters of ``clinical``.

    Attributes:
        healthy_label: the label that means "healthy" (found by name when omitted).
    """

    healthy_label: str | None = None


#: Our white-box (gradient) attacks: the ones a score-only attack should not beat.
DEFAULT_WHITE_BOX = ("fgsm", "bim", "pgd", "apgd", "autoattack", "cw_l2", "deepfool", "min_eps")


class SanityParams(_Params):
    """Parameters of ``sanity`` (see its module for what each threshold tests)."""

    accuracy_tolerance: Annotated[float, in_range(0.0, 1.0)] = 0.0
    min_effective_eps: Annotated[float, in_range(0.0, 1.0)] = 8 / 255
    max_zero_gradient_fraction: Annotated[float, in_range(0.0, 1.0)] = 0.0
    atol: Annotated[float, in_range(0.0, 1e6)] = 1e-4
    rtol: Annotated[float, in_range(0.0, 1e6)] = 1e-4
    min_gradient_norm: Annotated[float, in_range(0.0, 1e6)] = 1e-8
    max_vanishing_fraction: Annotated[float, in_range(0.0, 1.0)] = 0.5
    probe_steps: Annotated[int, in_range(0, 100)] = 5
    probe_eps: Annotated[float, in_range(0.0, 1.0)] = 8 / 255
    max_stalled_fraction: Annotated[float, in_range(0.0, 1.0)] = 0.5
    black_box_attacks: tuple[str, ...] = ("square",)
    white_box_attacks: tuple[str, ...] = DEFAULT_WHITE_BOX


MAX_LAYERS = 64


class FeaturesParams(_Params):
    """Parameters of ``features``.

    Attributes:
        layers: module paths (``"layer2"``, ``"features.3"``; ``"node:<name>"`` in graph
            programs) in depth order; the main blocks are found automatically when omitted.
    """

    layers: tuple[str, ...] | None = None

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not 1 <= len(v) <= MAX_LAYERS:
            raise ValueError(f"layers must name between 1 and {MAX_LAYERS} layers")
        if len(set(v)) != len(v):
            raise ValueError("layers must be unique")
        if any(not name.strip() for name in v):
            raise ValueError("layers must be non-empty names")
        return v


GradCAMTarget = Literal["predicted", "clean-prediction", "label"]


class GradCAMParams(_Params):
    """Parameters of ``gradcam``.

    Attributes:
        layer: the convolutional block to explain (module path, or ``node:<name>``); the
            last convolutional block when omitted.
        target: which class each map explains (see its module).
        findings: multi-label only: explain each of these findings on every image.
        top_fraction: share of pixels in a map's top region (0.2: the top 20%).
        samples_per_batch: thumbnails kept per batch for the gallery.
        gallery_size: images shown per attack in the gallery.
    """

    layer: str | None = None
    target: GradCAMTarget = "predicted"
    findings: tuple[str, ...] | None = None
    top_fraction: Annotated[float, in_range(0, 1, lo_open=True, hi_open=True)] = 0.2
    samples_per_batch: Annotated[int, in_range(0, 2)] = 1
    gallery_size: Annotated[int, in_range(0, 24)] = 6

    @field_validator("findings")
    @classmethod
    def _findings(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not 1 <= len(v) <= 32:
            raise ValueError("findings must name between 1 and 32 findings")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("findings must be unique")
        return v


EmbeddingMethod = Literal["auto", "tsne", "pca"]


class DiscriminabilityParams(_Params):
    """Parameters of ``discriminability``.

    Attributes:
        layer: a layer whose output to use instead of the penultimate features.
        method: 2-D embedding: ``"pca"``, ``"tsne"`` or ``"auto"`` (t-SNE up to 2000 points).
        max_points: images (per setting) in the embedding and the silhouette, stratified.
        projection_dim: features wider than this are randomly projected to it.
        probe_test_fraction: share of the images held out to test the linear probe.
    """

    layer: str | None = None
    method: EmbeddingMethod = "auto"
    max_points: Annotated[int, in_range(20, 20000)] = 1000
    projection_dim: Annotated[int, in_range(2, 1024)] = 128
    probe_test_fraction: Annotated[float, in_range(0.05, 0.95)] = 0.3


class LabelCorrelationParams(_Params):
    """Parameters of ``label_correlation``.

    Attributes:
        top_pairs: how many of the most moved finding pairs to list per attack.
    """

    top_pairs: Annotated[int, in_range(1, 100)] = 10


DEFAULT_FRAMES = 8
MAX_FRAMES = 100
MAX_DIFFICULTY = 3
Modality = Literal["radiograph", "dermoscopy", "fundus"]
Metric = Literal["accuracy", "balanced_accuracy", "auroc"]


class PerturbationsParams(_Params):
    """Parameters of ``perturbations``.

    Attributes:
        perturbations: names to evaluate at each severity; default every generic
            perturbation plus the artefacts of the modality. ``[]`` skips corruption
            accuracy.
        severities: the severities (1..5) to evaluate.
        sequences: names to run as flip-probability sequences; default the ImageNet-P set
            among the selected perturbations. ``[]`` skips sequences.
        frames: frames per sequence (2..100).
        difficulty: 1..3; the comparison stride of swept sequences and the noise severity
            of noise sequences (ImageNet-P).
        modality: ``radiograph``, ``dermoscopy`` or ``fundus``; inferred from the channel
            count when omitted (greyscale: radiograph; colour: dermoscopy and fundus).
        metric: the headline metric; ``accuracy`` for single-label, ``auroc`` for
            multi-label models when omitted.
        example_index: dataset position of the image shown in the example strips.
    """

    perturbations: tuple[str, ...] | None = None
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    sequences: tuple[str, ...] | None = None
    frames: int = DEFAULT_FRAMES
    difficulty: int = 1
    modality: Modality | None = None
    metric: Metric | None = None
    example_index: Annotated[int, in_range(0, 2**31 - 1)] = 0

    @field_validator("perturbations", "sequences")
    @classmethod
    def _known(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is None:
            return None
        for name in names:
            if name not in PERTURBATION_NAMES:
                valid = ", ".join(PERTURBATION_NAMES)
                raise ValueError(f"unknown perturbation {name!r}; valid: {valid}")
        if len(set(names)) != len(names):
            raise ValueError("perturbation names must be unique")
        return names

    @field_validator("severities")
    @classmethod
    def _severities(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if not values:
            raise ValueError("severities must not be empty")
        if any(not 1 <= s <= 5 for s in values):
            raise ValueError("severities must be in 1..5")
        return tuple(sorted(set(values)))

    @model_validator(mode="after")
    def _sequence(self) -> Any:
        check_sequence(self.frames, self.difficulty)
        return self


def check_sequence(frames: int, difficulty: int) -> None:
    """Raise ``ValueError`` unless ``2 <= frames <= 100``, ``1 <= difficulty <= 3`` and
    ``frames > difficulty`` (a sequence must hold at least one compared pair)."""
    if not 2 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be in [2, {MAX_FRAMES}], got {frames}")
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be in [1, {MAX_DIFFICULTY}], got {difficulty}")
    if frames <= difficulty:
        raise ValueError(
            f"frames must be greater than difficulty, got frames={frames}, difficulty={difficulty}"
        )


#: name -> parameter model, in report order.
ANALYSIS_PARAMS: dict[str, type[BaseModel]] = {
    "quantitative": QuantitativeParams,
    "clinical": ClinicalParams,
    "sanity": SanityParams,
    "features": FeaturesParams,
    "gradcam": GradCAMParams,
    "discriminability": DiscriminabilityParams,
    "label_correlation": LabelCorrelationParams,
    "perturbations": PerturbationsParams,
}

#: Analyses that can run on an audit without attacks (they perturb images themselves, or
#: report clean metrics only).
ANALYSES_WITHOUT_ATTACKS: tuple[str, ...] = ("perturbations", "quantitative")
