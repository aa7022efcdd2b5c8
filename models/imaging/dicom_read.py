"""DICOM decoding with pydicom: the image pixel module checked tag by tag, then the pixels.

PS3.3 C.7.6.3 (image pixel module): ``Rows``, ``Columns``, ``SamplesPerPixel``,
``BitsAllocated``, ``BitsStored``, ``PixelRepresentation``, ``PhotometricInterpretation``
and ``NumberOfFrames`` are read with :class:`~models.imaging.dicom_tags.TagReader` and
checked before pydicom decodes a pixel, so a malformed value is a 4xx naming its tag and
the pixel count is known (and limited) before any allocation. Greyscale images then go
through :mod:`models.imaging.dicom_voi`; colour images (RGB, YBR converted to RGB by
pydicom, PALETTE COLOR through its LUT) keep their integer samples.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.errors import ImageTooLargeError, InvalidImageError, RobustDxError
from models.imaging.decoded import DecodedImage, DicomInfo
from models.imaging.dicom_tags import TagReader
from models.imaging.dicom_voi import file_voi, modality_values
from models.imaging.limits import DecodeBudget, DecodeLimits, check_pixels
from models.imaging.raster import count_jpeg_scans

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
PALETTE = "PALETTE COLOR"
#: Transfer syntaxes whose frames are JPEG or JPEG-LS streams (SOS-delimited scans):
#: baseline, extended, lossless (14 and 14 SV1), JPEG-LS lossless and near-lossless.
JPEG_SYNTAXES = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in ("50", "51", "57", "70", "80", "81"))


@dataclass(frozen=True)
class PixelModule:
    """The checked image pixel module of one file."""

    rows: int
    cols: int
    samples: int
    bits_allocated: int
    bits_stored: int
    photometric: str


def read_pixel_module(tags: TagReader, limits: DecodeLimits) -> PixelModule:
    """Read and check the pixel module (see the module docstring)."""
    frames = tags.integer("NumberOfFrames", 1, 1, 2**31 - 1)
    if frames > limits.max_frames:
        raise InvalidImageError(
            f"{tags.name}: multi-frame DICOM ({frames} frames) is not supported; "
            "send one frame per file",
            {"filename": tags.filename, "frames": frames, "tag": "NumberOfFrames"},
        )
    rows = tags.integer("Rows", 0, 0, 65535)
    cols = tags.integer("Columns", 0, 0, 65535)
    if rows == 0 or cols == 0:
        missing = "Rows" if rows == 0 else "Columns"
        raise tags.error(missing, "is missing or zero")
    check_pixels(tags.name, tags.filename, rows, cols, limits)
    samples = tags.integer("SamplesPerPixel", 1, 1, 4)
    if samples not in (1, 3):
        raise tags.error("SamplesPerPixel", "must be 1 or 3")
    bits_allocated = tags.integer("BitsAllocated", 8, 1, 64)
    if bits_allocated not in (1, 8, 16, 32):
        raise tags.error("BitsAllocated", "must be 1, 8, 16 or 32")
    bits_stored = tags.integer("BitsStored", bits_allocated, 1, bits_allocated)
    tags.integer("PixelRepresentation", 0, 0, 1)
    photometric = tags.text("PhotometricInterpretation").upper()
    if not photometric:
        raise tags.error("PhotometricInterpretation", "is missing")
    allowed = (*GREYSCALE, PALETTE) if samples == 1 else COLOUR
    if photometric not in allowed:
        raise InvalidImageError(
            f"{tags.name}: DICOM photometric interpretation {photometric[:16]!r} is not "
            f"supported with {samples} sample(s) per pixel",
            {"filename": tags.filename, "tag": "PhotometricInterpretation"},
        )
    return PixelModule(rows, cols, samples, bits_allocated, bits_stored, photometric)


def _quiet_pydicom() -> None:
    """Have pydicom accept invalid values silently while reading, and log only errors:
    its warnings and log lines quote the offending value, which may be patient data.
    Values it then cannot convert still fail, in :class:`TagReader`, with an error naming
    only the tag."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def decode_dicom(
    data: bytes,
    name: str,
    filename: str | None,
    limits: DecodeLimits,
    budget: DecodeBudget | None,
) -> DecodedImage:
    """Decode DICOM bytes (the caller's boundary converts what escapes pydicom)."""
    import pydicom

    _quiet_pydicom()
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom's messages may quote element values: not repeated
        raise InvalidImageError(
            f"{name}: unreadable DICOM file ({type(exc).__name__})", {"filename": filename}
        ) from exc
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"float pixel data ({other[0]}) is not supported" if other else "no pixel data"
        raise InvalidImageError(f"{name}: the DICOM file has {what}", {"filename": filename})
    tags = TagReader(ds, name, filename)
    module = read_pixel_module(tags, limits)
    if budget is not None:
        budget.charge(module.rows * module.cols, filename)
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    ts_text = str(tsyntax) if tsyntax is not None else "unknown"
    _check_jpeg_frames(ds, tsyntax, tags, limits)
    arr = _pixels(ds, module, name, filename, tsyntax)
    del ds.PixelData  # decoded: what is kept is the header
    header = ds
    if module.samples == 3 or module.photometric == PALETTE:
        samples, bits = _colour(arr, ds, module, tags)
        info = DicomInfo(header, module.photometric, None, None, ts_text)
        return DecodedImage(
            samples,
            float(2**bits - 1),
            "dicom",
            (module.rows, module.cols),
            bits,
            module.photometric,
            filename,
            info,
        )
    modality = modality_values(arr, ds, tags).reshape(module.rows, module.cols)
    display, window = file_voi(modality, ds, tags)
    if module.photometric == "MONOCHROME1":
        display = 1.0 - display
    info = DicomInfo(header, module.photometric, modality, window, ts_text)
    return DecodedImage(
        display[..., None],
        1.0,
        "dicom",
        (module.rows, module.cols),
        module.bits_stored,
        module.photometric,
        filename,
        info,
    )


def _check_jpeg_frames(ds: Dataset, tsyntax: object, tags: TagReader, limits: DecodeLimits) -> None:
    """Count the scans of an encapsulated JPEG frame before a decoder sees it: pydicom
    hands JPEG frames to Pillow, which decodes a progressive frame whatever the transfer
    syntax claims, so the JPEG scan cap must hold inside DICOM too."""
    if str(tsyntax) not in JPEG_SYNTAXES:
        return
    from pydicom.encaps import generate_frames

    for frame in generate_frames(ds.PixelData, number_of_frames=1):
        if count_jpeg_scans(bytes(frame), limits.max_jpeg_scans) > limits.max_jpeg_scans:
            raise ImageTooLargeError(
                f"{tags.name}: the DICOM's JPEG frame has more than {limits.max_jpeg_scans} "
                "scans (progressive refinement passes), over the limit",
                {"filename": tags.filename, "max_jpeg_scans": limits.max_jpeg_scans},
            )


def _pixels(
    ds: Dataset, module: PixelModule, name: str, filename: str | None, tsyntax: object
) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        arr = np.asarray(pixel_array(ds))
    except Exception as exc:  # third-party decoders raise anything; the boundary is here
        if bool(getattr(tsyntax, "is_compressed", False)):
            ts_name = getattr(tsyntax, "name", str(tsyntax))
            raise InvalidImageError(
                f"{name}: the DICOM transfer syntax {ts_name} ({tsyntax}) is compressed and "
                "cannot be decoded here; send it uncompressed (Explicit VR Little Endian)",
                {"filename": filename, "transfer_syntax": str(tsyntax)},
            ) from exc
        raise InvalidImageError(
            f"{name}: the DICOM pixel data cannot be decoded ({type(exc).__name__})",
            {"filename": filename},
        ) from exc
    want = module.rows * module.cols * module.samples
    if arr.size != want or arr.dtype.kind not in "uib":
        raise InvalidImageError(
            f"{name}: the DICOM pixel data does not match Rows x Columns x SamplesPerPixel",
            {"filename": filename, "tag": "PixelData"},
        )
    return arr


def _colour(
    arr: np.ndarray, ds: Dataset, module: PixelModule, tags: TagReader
) -> tuple[np.ndarray, int]:
    """``[H, W, 3]`` integer samples and their bit depth."""
    bits = module.bits_stored
    if module.photometric == PALETTE:
        from pydicom.pixels import apply_color_lut

        try:
            arr = np.asarray(apply_color_lut(arr, ds))
        except RobustDxError:
            raise
        except Exception as exc:
            raise tags.error("RedPaletteColorLookupTableDescriptor", "cannot be applied") from exc
        bits = arr.dtype.itemsize * 8
        if arr.size != module.rows * module.cols * 3 or arr.dtype.kind not in "ui":
            raise tags.error("RedPaletteColorLookupTableData", "does not give RGB values")
    bits = min(bits, 16)
    top = 2**bits - 1
    rgb = np.clip(arr, 0, top).astype(np.uint8 if bits <= 8 else np.uint16)
    return rgb.reshape(module.rows, module.cols, 3), bits
