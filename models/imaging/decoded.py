"""What a decode returns: :class:`DecodedImage` and, for DICOM, :class:`DicomInfo`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

ImageFormat = Literal["png", "jpeg", "dicom"]


@dataclass(frozen=True)
class DicomWindowUsed:
    """The VOI transform a DICOM image was displayed with (modality units)."""

    source: Literal["card", "file-window", "file-voi-lut", "min-max"]
    low: float
    high: float
    center: float | None = None
    width: float | None = None
    function: str = "LINEAR"


@dataclass(frozen=True, eq=False)
class DicomInfo:
    """What a DICOM decode keeps beside the display pixels.

    ``header`` is the parsed dataset without its pixel data. ``modality`` holds the
    modality values (after rescale) of a greyscale image, float32 ``[H, W]``, all finite;
    ``None`` for colour images. ``window`` is the VOI transform used for the display pixels.
    """

    header: Dataset
    photometric: str
    modality: np.ndarray | None
    window: DicomWindowUsed | None
    transfer_syntax: str


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded image.

    ``samples`` is ``[H, W, C]`` (``C`` in ``{1, 3}``) in the smallest type the decoder
    gave: uint8 or uint16 for PNG, JPEG and colour DICOM (full scale ``scale``), float32
    in ``[0, 1]`` for greyscale DICOM after its VOI transform (``scale`` 1). ``pixels`` is
    the float32 ``[H, W, C]`` view in ``[0, 1]``, computed on first use, so a caller that
    resizes first (:func:`models.imaging.to_model_input`) never holds a full-size float
    copy. ``original_size`` is ``(height, width)``; ``bit_depth`` the stored bits per
    sample; ``mode`` the Pillow mode or the DICOM photometric interpretation.
    """

    samples: np.ndarray
    scale: float
    source_format: ImageFormat
    original_size: tuple[int, int]
    bit_depth: int
    mode: str
    filename: str | None = None
    dicom: DicomInfo | None = field(default=None)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[2])

    @cached_property
    def pixels(self) -> np.ndarray:
        return unit_float(self.samples, self.scale)


def unit_float(samples: np.ndarray, scale: float) -> np.ndarray:
    """Integer samples of full scale ``scale`` (or floats) to float32 in ``[0, 1]``."""
    if samples.dtype == np.float32 and scale == 1.0:
        return samples
    out = samples.astype(np.float32)
    out /= np.float32(scale)
    return np.clip(out, 0.0, 1.0, out=out)
