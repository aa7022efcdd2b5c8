"""The decoding boundary: :func:`decode_image`, for predict, dataset import and audits.

Whatever the bytes, :func:`decode_image` returns a :class:`DecodedImage` whose pixels are
finite and in ``[0, 1]``, or raises :class:`~models.errors.InvalidImageError` /
:class:`~models.errors.ImageTooLargeError`. Any other exception raised by a third-party
decoder (pydicom, Pillow, numpy, zlib, struct, ...) is converted here, with
``raise ... from exc``; its text is not repeated for DICOM, whose decoders may quote
element values (patient data).
"""

from __future__ import annotations

import logging

import numpy as np

from models.errors import ImageTooLargeError, InvalidImageError, RobustDxError
from models.imaging.decoded import DecodedImage, ImageFormat
from models.imaging.dicom_read import decode_dicom
from models.imaging.limits import DecodeBudget, DecodeLimits
from models.imaging.raster import decode_raster

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"


def detect_format(data: bytes) -> ImageFormat | None:
    """The format named by the content's magic bytes, or ``None``."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC:
        return "dicom"
    return None


def decode_image(
    data: bytes,
    *,
    filename: str | None = None,
    limits: DecodeLimits | None = None,
    budget: DecodeBudget | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode PNG, JPEG or DICOM bytes (detected by content) to ``[H, W, C]`` in ``[0, 1]``.

    Args:
        data: the file's bytes.
        filename: the client's name for it, used in messages (never a server path).
        limits: per-image caps (defaults: :class:`DecodeLimits`); ``max_bytes`` and
            ``max_pixels``, when given, override its fields of the same name.
        budget: the request's pixel budget; the image's pixels (from its header) are
            charged to it before decoding.

    Raises:
        ImageTooLargeError: over ``max_bytes`` bytes, ``max_pixels`` pixels, the JPEG scan
            cap or the budget (all checked before decoding).
        InvalidImageError: empty, truncated, corrupt, malformed (a DICOM value that is not
            a number, not finite or out of range: the message names the tag) or
            unsupported content.
    """
    limits = _effective(limits, max_bytes, max_pixels)
    name = filename or "image"
    if len(data) == 0:
        raise InvalidImageError(f"{name}: the file is empty", {"filename": filename})
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"{name}: {len(data)} bytes is over the image limit of {limits.max_bytes} bytes",
            {"filename": filename, "bytes": len(data), "max_bytes": limits.max_bytes},
        )
    fmt = detect_format(data)
    if fmt is None:
        raise InvalidImageError(
            f"{name}: not a PNG, JPEG or DICOM file; "
            "the format is read from the content, not the file name",
            {"filename": filename, "accepted": ["png", "jpeg", "dicom"]},
        )
    try:
        if fmt == "dicom":
            image = decode_dicom(data, name, filename, limits, budget)
        else:
            image = decode_raster(data, fmt, name, filename, limits, budget)
    except RobustDxError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError(
            f"{name}: decoding needs more memory than is available", {"filename": filename}
        ) from exc
    except Exception as exc:  # the boundary: no third-party exception passes it
        logger.debug("decoder raised %s for a %s file", type(exc).__name__, fmt)
        raise InvalidImageError(
            f"{name}: the {fmt.upper()} file cannot be decoded ({type(exc).__name__})",
            {"filename": filename},
        ) from exc
    _check_finite(image, name, filename)
    return image


def _effective(
    limits: DecodeLimits | None, max_bytes: int | None, max_pixels: int | None
) -> DecodeLimits:
    from dataclasses import replace

    limits = limits or DecodeLimits()
    if max_bytes is not None:
        limits = replace(limits, max_bytes=max_bytes)
    if max_pixels is not None:
        limits = replace(limits, max_pixels=max_pixels)
    return limits


def _check_finite(image: DecodedImage, name: str, filename: str | None) -> None:
    """The decoders guarantee it; a float image that is not finite and in range is a bug
    in them, refused rather than passed to a model."""
    samples = image.samples
    if samples.dtype.kind == "f" and not (
        np.isfinite(samples).all()
        and samples.min(initial=0.0) >= 0.0
        and samples.max(initial=0.0) <= 1.0
    ):
        raise InvalidImageError(
            f"{name}: the decoded pixels are not finite values in [0, 1]", {"filename": filename}
        )
