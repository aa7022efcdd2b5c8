"""The DICOM greyscale pipeline after the stored values: modality LUT, then VOI.

PS3.3 C.11.1 (modality LUT: rescale slope and intercept, or a Modality LUT Sequence) and
C.11.2 (VOI: a VOI LUT Sequence, or Window Center/Width with the LINEAR, LINEAR_EXACT or
SIGMOID function, else the min-max of the modality values, as viewers do). Arithmetic is
in float64 so that header values near the float32 range cannot overflow midway; the
modality values are refused when they are not finite (a slope of ``1e308`` times a
12-bit value is infinite), so every display value is finite and in ``[0, 1]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.card import DicomWindow
from models.errors import RobustDxError
from models.imaging.decoded import DicomWindowUsed
from models.imaging.dicom_tags import TagReader

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def modality_values(stored: np.ndarray, ds: Dataset, tags: TagReader) -> np.ndarray:
    """The modality LUT (PS3.3 C.11.1): float32 values, all finite, same shape as ``stored``.

    A file that gives only one of RescaleSlope / RescaleIntercept gets the identity
    default for the other, rather than the silent no-op a strict reader would apply.

    Raises:
        InvalidImageError: a rescale value or the LUT is malformed, or the result is not
            finite in float32 (the message names the tags).
    """
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence) > 0:
        values = _modality_lut(stored, ds, tags)
        keyword = "ModalityLUTSequence"
    else:
        slope = tags.number("RescaleSlope", 1.0) or 1.0
        intercept = tags.number("RescaleIntercept", 0.0)
        with np.errstate(over="ignore", invalid="ignore"):  # refused just below
            values = stored.astype(np.float64) * slope + intercept
        keyword = "RescaleIntercept" if abs(intercept) > _FLOAT32_MAX else "RescaleSlope"
    if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > _FLOAT32_MAX:
        raise tags.error(keyword, "gives modality values that are not finite")
    return values.astype(np.float32)


def _modality_lut(stored: np.ndarray, ds: Dataset, tags: TagReader) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    item = TagReader(ds.ModalityLUTSequence[0], tags.name, tags.filename, "ModalityLUTSequence > ")
    item.integers("LUTDescriptor", 3, -(2**15), 2**16 - 1)
    try:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except RobustDxError:
        raise
    except Exception as exc:
        raise tags.error("ModalityLUTSequence", "cannot be applied") from exc


def window_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1), mapped to float32 ``[0, 1]``."""
    v = np.asarray(values, dtype=np.float64)
    if width <= 1.0:
        return (v > center - 0.5).astype(np.float32)
    out = (v - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def window_range(center: float, width: float) -> tuple[float, float]:
    """The modality values a LINEAR window maps to 0 and to 1."""
    half = max(width - 1.0, 0.0) / 2.0
    return center - 0.5 - half, center - 0.5 + half


def apply_window(modality: np.ndarray, window: DicomWindow, photometric: str) -> np.ndarray:
    """A fixed linear window on modality values, MONOCHROME1 inverted: ``[H, W]`` in [0, 1]."""
    display = window_linear(modality, window.center, window.width)
    return 1.0 - display if photometric == "MONOCHROME1" else display


def file_voi(
    modality: np.ndarray, ds: Dataset, tags: TagReader
) -> tuple[np.ndarray, DicomWindowUsed]:
    """The file's VOI transform of ``modality``: float32 display values in ``[0, 1]``."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        return _voi_lut(modality, ds, tags)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = tags.number("WindowCenter", 0.0), tags.number("WindowWidth", 0.0)
        if width > 0:
            return _voi_window(modality, center, width, tags)
    v = modality.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    display = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return display.astype(np.float32), DicomWindowUsed("min-max", lo, hi)


def _voi_window(
    modality: np.ndarray, center: float, width: float, tags: TagReader
) -> tuple[np.ndarray, DicomWindowUsed]:
    function = tags.text("VOILUTFunction", "LINEAR").upper() or "LINEAR"
    v = modality.astype(np.float64)
    with np.errstate(over="ignore"):  # huge windows saturate to 0 or 1, as intended
        if function == "SIGMOID":
            display = 1.0 / (1.0 + np.exp(-4.0 * (v - center) / width))
            lo, hi = center - width / 2.0, center + width / 2.0
        elif function == "LINEAR_EXACT":
            display = np.clip((v - center) / width + 0.5, 0.0, 1.0)
            lo, hi = center - width / 2.0, center + width / 2.0
        else:
            function = "LINEAR"
            display = window_linear(v, center, width)
            lo, hi = window_range(center, width)
    used = DicomWindowUsed("file-window", lo, hi, center, width, function)
    return np.clip(display, 0.0, 1.0).astype(np.float32), used


def _voi_lut(
    modality: np.ndarray, ds: Dataset, tags: TagReader
) -> tuple[np.ndarray, DicomWindowUsed]:
    from pydicom.pixels import apply_voi_lut

    item = TagReader(ds.VOILUTSequence[0], tags.name, tags.filename, "VOILUTSequence > ")
    entries, first_mapped, bits = item.integers("LUTDescriptor", 3, -(2**15), 2**16 - 1)
    if not 1 <= bits <= 16:
        raise item.error("LUTDescriptor", "gives an output bit depth outside [1, 16]")
    entries = entries or 65536  # PS3.3 C.11.2.1.1: 0 means 2^16 entries
    # The VOI LUT's input is the modality LUT's output (PS3.3 C.11.2); its output range
    # is 0 .. 2^bits - 1 whatever values the table happens to use.
    # A LUT is indexed by integers: round the modality values to their entries, clipped
    # to int32 (values beyond any LUT's range map to its first or last entry anyway).
    lut_input = np.clip(np.rint(modality.astype(np.float64)), -(2**31), 2**31 - 1)
    try:
        out = np.asarray(
            apply_voi_lut(lut_input.astype(np.int32), ds, prefer_lut=True), dtype=np.float64
        )
    except RobustDxError:
        raise
    except Exception as exc:
        raise tags.error("VOILUTSequence", "cannot be applied") from exc
    if out.size != modality.size or not np.isfinite(out).all():
        raise tags.error("VOILUTSequence", "gives display values that are not finite")
    display = np.clip(out / float(2**bits - 1), 0.0, 1.0)
    used = DicomWindowUsed("file-voi-lut", first_mapped, first_mapped + entries - 1, function="LUT")
    return display.astype(np.float32).reshape(modality.shape), used
