"""How much work one image, and one request, may cost the decoder.

:class:`DecodeLimits` holds the per-image caps (bytes, pixels from the header, progressive
JPEG scans, DICOM frames) and the per-request pixel total; :class:`DecodeBudget` counts the
pixels one request (a predict call, a dataset import) has decoded so far. Both are checked
*before* pixels are decoded, from what the header declares, so a hostile file is refused
without the work it asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import ImageTooLargeError, InvalidImageError

#: 32 MiB: a 4k x 4k 16-bit DICOM is 32 MiB uncompressed; PNG/JPEG compress far below.
DEFAULT_MAX_BYTES = 32 * 1024**2
#: 64 Mi pixels (8192 x 8192): the largest digital mammograms are ~4k x 5k.
DEFAULT_MAX_PIXELS = 64 * 1024**2
#: Baseline JPEGs have one scan per component (<= 4), libjpeg's progressive presets 10;
#: 64 leaves room for unusual encoders while refusing files made of thousands of tiny
#: refinement scans, whose decode time grows with the scan count, not the byte size.
DEFAULT_MAX_JPEG_SCANS = 64
#: One frame: multi-frame DICOM is refused (one image per file).
DEFAULT_MAX_FRAMES = 1
#: 256 Mi pixels per request: e.g. 64 images of 2048 x 2048.
DEFAULT_MAX_TOTAL_PIXELS = 256 * 1024**2


@dataclass(frozen=True)
class DecodeLimits:
    """The decoder's caps (see the module docstring); every field must be positive.

    - ``max_bytes``: bytes of one file.
    - ``max_pixels``: ``rows x columns`` of one image, read from its header.
    - ``max_jpeg_scans``: start-of-scan (SOS, ``0xFFDA``) markers in one JPEG.
    - ``max_frames``: DICOM ``NumberOfFrames``.
    - ``max_total_pixels``: pixels one :class:`DecodeBudget` (one request) may decode.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_jpeg_scans", "max_frames", "max_total_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def budget(self) -> DecodeBudget:
        """A fresh per-request budget of ``max_total_pixels``."""
        return DecodeBudget(self.max_total_pixels)


class DecodeBudget:
    """The pixels one request may still decode; :meth:`charge` before each decode.

    Not thread-safe: make one per request (``DecodeLimits.budget()``).
    """

    def __init__(self, max_total_pixels: int) -> None:
        if max_total_pixels <= 0:
            raise ValueError(f"max_total_pixels must be positive, got {max_total_pixels}")
        self.limit = int(max_total_pixels)
        self.used = 0

    @property
    def left(self) -> int:
        return self.limit - self.used

    def charge(self, pixels: int, filename: str | None = None) -> None:
        """Count ``pixels``; refuse (and count nothing) when the total would pass the limit.

        Raises:
            ImageTooLargeError: the request's images together exceed the budget.
        """
        if self.used + pixels > self.limit:
            raise ImageTooLargeError(
                f"{filename or 'image'}: the images of this request together exceed "
                f"{self.limit} pixels",
                {"filename": filename, "max_total_pixels": self.limit, "used": self.used},
            )
        self.used += pixels


def check_pixels(
    name: str, filename: str | None, height: int, width: int, limits: DecodeLimits
) -> None:
    """Refuse an empty size or one over ``limits.max_pixels`` (from the header)."""
    if height <= 0 or width <= 0:
        raise InvalidImageError(
            f"{name}: the header gives an empty size {width}x{height}", {"filename": filename}
        )
    if height * width > limits.max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{limits.max_pixels} pixels",
            {
                "filename": filename,
                "width": width,
                "height": height,
                "max_pixels": limits.max_pixels,
            },
        )
