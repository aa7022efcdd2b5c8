"""PNG and JPEG decoding with Pillow, to integer samples (uint8, or uint16 for 16-bit PNG).

Before Pillow decodes a pixel: the size is read from the header and checked against
``DecodeLimits.max_pixels`` (and charged to the request's budget), and a JPEG's scans are
counted from its markers. A progressive JPEG can hold thousands of tiny refinement scans,
each a full pass of the decoder over the image: decode time grows with the scan count at
a fixed byte size, so the count is capped (``DecodeLimits.max_jpeg_scans``).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from models.errors import ImageTooLargeError, InvalidImageError
from models.imaging.decoded import DecodedImage, ImageFormat
from models.imaging.limits import DecodeBudget, DecodeLimits, check_pixels

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

_SOS = 0xDA
_EOI = 0xD9
# Markers without a length field: TEM, RST0-7, SOI, EOI (ITU-T T.81 B.1.1.3).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, _EOI})
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def count_jpeg_scans(data: bytes, stop_after: int) -> int:
    """The number of start-of-scan (SOS) markers in a JPEG, counting no further than
    ``stop_after + 1``.

    Marker segments are skipped by their length, so ``0xFFDA`` inside an APP segment (an
    EXIF thumbnail) is not counted; in entropy-coded data ``0xFF`` is always followed by
    ``0x00`` (stuffing) or a restart marker (ITU-T T.81 B.1.1.5), so the next marker is the
    next ``0xFF`` followed by anything else.
    """
    pos, scans, end = 2, 0, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x00 or marker in _STANDALONE:
            if marker == _EOI:
                break
            pos += 2
            continue
        if marker == _SOS:
            scans += 1
            if scans > stop_after:
                break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 2 + max(length, 2)
    return scans


def png_bit_depth(data: bytes) -> int:
    """The IHDR bit depth (1..16); 8 when the header is not where PNG puts it."""
    # IHDR is always the first chunk: length(4) type(4) width(4) height(4) depth(1).
    depth = data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 8
    return depth if 1 <= depth <= 16 else 8


def decode_raster(
    data: bytes,
    fmt: ImageFormat,
    name: str,
    filename: str | None,
    limits: DecodeLimits,
    budget: DecodeBudget | None,
) -> DecodedImage:
    """Decode PNG or JPEG bytes; Pillow's errors are converted by the caller's boundary."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = fmt.upper()
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=[label])
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{name}: the header declares more pixels than allowed",
            {"filename": filename, "max_pixels": limits.max_pixels},
        ) from exc
    except UnidentifiedImageError as exc:  # its text names a memory address, not a cause
        raise InvalidImageError(
            f"{name}: unreadable {label} header", {"filename": filename}
        ) from exc
    except Exception as exc:
        raise InvalidImageError(
            f"{name}: unreadable {label} header ({exc})", {"filename": filename}
        ) from exc
    width, height = img.size
    check_pixels(name, filename, height, width, limits)
    if fmt == "jpeg":
        scans = count_jpeg_scans(data, limits.max_jpeg_scans)
        if scans > limits.max_jpeg_scans:
            raise ImageTooLargeError(
                f"{name}: the JPEG has more than {limits.max_jpeg_scans} scans "
                "(progressive refinement passes), over the limit",
                {"filename": filename, "max_jpeg_scans": limits.max_jpeg_scans},
            )
    if budget is not None:
        budget.charge(height * width, filename)
    try:
        img.load()
        if fmt == "jpeg":
            img = ImageOps.exif_transpose(img)
    except Exception as exc:
        raise InvalidImageError(
            f"{name}: truncated or corrupt {label} data ({exc})", {"filename": filename}
        ) from exc
    mode = img.mode
    bit_depth = png_bit_depth(data) if fmt == "png" else 8
    samples, scale = integer_samples(img, bit_depth)
    return DecodedImage(
        samples=samples,
        scale=scale,
        source_format=fmt,
        original_size=(height, width),
        bit_depth=bit_depth,
        mode=mode,
        filename=filename,
    )


def integer_samples(img: PILImage, bit_depth: int) -> tuple[np.ndarray, float]:
    """``[H, W, C]`` uint8/uint16 samples of a decoded Pillow image, and their full scale.

    Greyscale stays one channel (16-bit PNGs keep 16 bits); alpha is dropped, since
    medical images have none worth keeping and compositing on a chosen background would
    invent pixel values; palettes and other colour modes become RGB.
    """
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        top = 2 ** max(bit_depth, 8) - 1
        arr = np.asarray(img)
        return np.clip(arr, 0, top).astype(np.uint16)[..., None], float(top)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(arr, 0.0, 1.0) * 65535.0).astype(np.uint16)[..., None], 65535.0
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None], 255.0
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8), 255.0
