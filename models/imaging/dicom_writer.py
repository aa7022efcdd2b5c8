"""Writing images back as DICOM: :func:`write_dicom_like` (adversarial images, phantoms).

The written file carries the original header with new pixels, and decodes through
:func:`models.imaging.decode_image` (and the same card) to the pixels given, up to the
stored quantization.
"""

from __future__ import annotations

import copy
import io
import math
from typing import TYPE_CHECKING

import numpy as np

from models.card import DicomWindow
from models.errors import InvalidImageError
from models.imaging.dicom_tags import TagReader
from models.imaging.dicom_voi import window_range

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# Elements that describe the old pixels and would be wrong for the new ones.
_STALE = (
    "VOILUTSequence",
    "ModalityLUTSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "NumberOfFrames",
    "WindowCenterWidthExplanation",
    "PixelData",
)
# Greyscale display elements, dropped when colour pixels are written.
_GREY_ONLY = (
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
)


def write_dicom_like(
    original_header: Dataset,
    pixels: np.ndarray,
    *,
    window: DicomWindow | None = None,
    display_range: tuple[float, float] | None = None,
    series_description: str | None = None,
    derivation: str | None = None,
) -> bytes:
    """A DICOM file with the original header and new pixels (e.g. an adversarial image).

    ``pixels`` is uint8 or uint16, ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``, in display
    space (what the model saw: full scale is white). The header is copied; new
    SOPInstanceUID and SeriesInstanceUID are generated, the transfer syntax is uncompressed
    Explicit VR Little Endian, and ImageType says DERIVED.

    Greyscale pixels are mapped back to stored values through the inverse of the display
    transform: ``window`` (the card's, when it overrides the file's), else
    ``display_range`` (``DicomInfo.window``'s low/high, modality units), else the file's
    linear window, else the stored bit range; then the inverse rescale, rounded and
    clipped to the stored bit depth. The written file carries a linear window spanning that
    range, so decoding it with :func:`decode_image` (and the same card) gives back
    ``pixels`` up to the stored quantization. MONOCHROME1 is kept and its inversion
    undone. Three-channel pixels are written as RGB at the stored bit depth (8 when the
    original was greyscale), so the model's input is reproduced exactly.

    Raises:
        ValueError: ``pixels`` of another dtype or shape.
        InvalidImageError: a header value needed for the inverse transform is malformed.
    """
    arr = _checked_pixels(pixels)
    try:
        return _write(original_header, arr, window, display_range, series_description, derivation)
    except InvalidImageError:
        raise
    except Exception as exc:  # pydicom refusing a header the decoder accepted
        raise InvalidImageError(
            f"the DICOM header cannot be written back ({type(exc).__name__})"
        ) from exc


def _write(
    original_header: Dataset,
    arr: np.ndarray,
    window: DicomWindow | None,
    display_range: tuple[float, float] | None,
    series_description: str | None,
    derivation: str | None,
) -> bytes:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    y = arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    # A deep copy: Dataset.copy() shares the element dictionary, so editing it would
    # change the caller's header (and the next image written from it).
    ds = copy.deepcopy(original_header)
    meta = getattr(ds, "file_meta", None)
    ds.file_meta = meta if isinstance(meta, FileMetaDataset) else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what is written
    for tag in [t for t in list(ds.keys()) if t.group in (0x0000, 0x0002)]:
        del ds[tag]  # command and file meta elements have no place in a dataset body
    # Parse every element (raw ones keep the source's byte order, big-endian perhaps),
    # then declare the encoding that is written, so pydicom encodes values, not bytes.
    ds.walk(lambda _ds, _elem: None)
    ds.set_original_encoding(False, True, ds.original_character_set)
    tags = TagReader(ds, "header", None)
    old_size = (
        tags.integer("Rows", arr.shape[0], 1, 65535),
        tags.integer("Columns", arr.shape[1], 1, 65535),
    )
    _drop(ds, _STALE)
    if arr.ndim == 3:
        _set_rgb(ds, tags, y)
    else:
        _set_grey(ds, tags, y, window, display_range, arr.dtype == np.uint16)
    _rescale_spacing(ds, old_size)
    _mark_derived(ds, series_description, derivation)
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"pixels must be [H, W], [H, W, 1] or [H, W, 3], got {arr.shape}")
    return arr


def _drop(ds: Dataset, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if keyword in ds:
            delattr(ds, keyword)


def _set_rgb(ds: Dataset, tags: TagReader, y: np.ndarray) -> None:
    was_rgb = tags.integer("SamplesPerPixel", 1, 1, 4) == 3
    bits = 16 if was_rgb and tags.integer("BitsStored", 8, 1, 64) > 8 else 8
    stored = np.rint(y * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)
    _drop(ds, _GREY_ONLY)
    ds.set_pixel_data(stored, "RGB", bits, generate_instance_uid=False)


def _set_grey(
    ds: Dataset,
    tags: TagReader,
    y: np.ndarray,
    window: DicomWindow | None,
    display_range: tuple[float, float] | None,
    sixteen: bool,
) -> None:
    photometric = tags.text("PhotometricInterpretation", "MONOCHROME2").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        photometric = "MONOCHROME2"
    bits_alloc = tags.integer("BitsAllocated", 16, 1, 64)
    bits_stored = tags.integer("BitsStored", bits_alloc, 1, 64)
    signed = tags.integer("PixelRepresentation", 0, 0, 1) == 1
    if bits_alloc not in (8, 16):
        bits_alloc, bits_stored = 16, min(bits_stored, 16)
    if sixteen and bits_alloc == 8:
        bits_alloc, bits_stored = 16, 16  # 16-bit pixels do not fit the 8-bit original
    slope = tags.number("RescaleSlope", 1.0) or 1.0
    intercept = tags.number("RescaleIntercept", 0.0)
    smin = -(2 ** (bits_stored - 1)) if signed else 0
    smax = 2 ** (bits_stored - 1) - 1 if signed else 2**bits_stored - 1
    lo, hi = _inverse_range(tags, window, display_range, smin, smax, slope, intercept)
    center, width = (lo + hi) / 2.0 + 0.5, (hi - lo) + 1.0
    if not all(math.isfinite(v) for v in (lo, hi, center, width)):
        raise InvalidImageError(
            "the display range cannot be written as a DICOM window (it is not finite)",
            {"tag": "WindowCenter"},
        )
    v = 1.0 - y if photometric == "MONOCHROME1" else y
    stored = np.clip(np.rint((lo + v * (hi - lo) - intercept) / slope), smin, smax)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
    ds.set_pixel_data(stored.astype(dtype), photometric, bits_stored, generate_instance_uid=False)
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept = ds_number(slope), ds_number(intercept)
    ds.WindowCenter, ds.WindowWidth = ds_number(center), ds_number(width)
    ds.VOILUTFunction = "LINEAR"


def _inverse_range(
    tags: TagReader,
    window: DicomWindow | None,
    display_range: tuple[float, float] | None,
    smin: int,
    smax: int,
    slope: float,
    intercept: float,
) -> tuple[float, float]:
    if window is not None:
        return window_range(window.center, window.width)
    if display_range is not None:
        return float(display_range[0]), float(display_range[1])
    if "WindowCenter" in tags.ds and "WindowWidth" in tags.ds:
        width = tags.number("WindowWidth", 0.0)
        if width > 1:
            return window_range(tags.number("WindowCenter", 0.0), width)
    a, b = smin * slope + intercept, smax * slope + intercept
    return min(a, b), max(a, b)


def _rescale_spacing(ds: Dataset, old_size: tuple[int, int]) -> None:
    """Keep the physical size when the pixels were resized: scale ``PixelSpacing``."""
    new_rows, new_cols = int(ds.Rows), int(ds.Columns)
    if (new_rows, new_cols) == old_size or "PixelSpacing" not in ds:
        return
    try:
        row_sp, col_sp = TagReader(ds, "header", None).numbers("PixelSpacing", 2)
    except InvalidImageError:
        del ds.PixelSpacing  # a spacing that cannot be read cannot be rescaled either
        return
    ds.PixelSpacing = [
        ds_number(row_sp * old_size[0] / new_rows),
        ds_number(col_sp * old_size[1] / new_cols),
    ]


def _mark_derived(ds: Dataset, series_description: str | None, derivation: str | None) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    instance = generate_uid()
    ds.SOPInstanceUID = instance
    ds.file_meta.MediaStorageSOPInstanceUID = instance
    if "SOPClassUID" not in ds:
        ds.SOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if series_description is not None:
        ds.SeriesDescription = series_description[:64]
    if derivation is not None:
        ds.DerivationDescription = derivation[:1024]


def ds_number(value: float) -> str:
    """A DS (decimal string) value: at most 16 characters."""
    text = f"{value:.10g}"
    if len(text) > 16:
        text = f"{value:.6g}"
    return text
