"""Look-up of perturbations by name, and selection by modality and channel count."""

from __future__ import annotations

from models.errors import InvalidParametersError
from workers.perturbations import artefacts, blur, compression, geometry, intensity, noise
from workers.perturbations.base import Family, Modality, Perturbation

_ALL: tuple[Perturbation, ...] = (
    *noise.PERTURBATIONS,
    *blur.PERTURBATIONS,
    *intensity.PERTURBATIONS,
    *compression.PERTURBATIONS,
    *geometry.PERTURBATIONS,
    *artefacts.PERTURBATIONS,
)
_REGISTRY: dict[str, Perturbation] = {p.name: p for p in _ALL}

#: The perturbations of ImageNet-P (Hendrycks & Dietterich 2019) that RobustDx has; the
#: default sequences of an audit, as in the paper's common-perturbation benchmark.
IMAGENET_P: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "speckle_noise",
    "gaussian_blur",
    "motion_blur",
    "zoom_blur",
    "brightness",
    "translation",
    "rotation",
    "tilt",
    "scaling",
    "shear",
)


def list_perturbations(family: Family | str | None = None) -> list[str]:
    """Registered names in registry order (grouped by family), optionally one family."""
    if family is None:
        return [p.name for p in _ALL]
    fam = Family(family)
    return [p.name for p in _ALL if p.family == fam]


def get_perturbation(name: str) -> Perturbation:
    """The perturbation called ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(_REGISTRY)
        raise InvalidParametersError(
            f"unknown perturbation {name!r}; valid: {valid}",
            details={"valid": list(_REGISTRY)},
        ) from None


def infer_modalities(channels: int) -> frozenset[Modality]:
    """Modalities assumed from the channel count when an audit does not name one:
    greyscale is a radiograph; colour is a photograph (dermoscopy or fundus)."""
    if channels == 1:
        return frozenset({Modality.RADIOGRAPH})
    return frozenset({Modality.DERMOSCOPY, Modality.FUNDUS})


def perturbations_for(channels: int, modality: Modality | str | None = None) -> list[str]:
    """Names that fit images of ``channels`` channels of ``modality`` (inferred from the
    channel count when ``None``): every generic perturbation plus the modality's artefacts."""
    modalities = infer_modalities(channels) if modality is None else {Modality(modality)}
    return [p.name for p in _ALL if any(p.fits(m, channels) for m in modalities)]
