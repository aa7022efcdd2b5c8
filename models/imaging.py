"""Image decoding: the one path shared by predict, dataset import and the audit loader.

``decode_image`` turns the bytes of a PNG, JPEG or DICOM file into a float32 ``[H, W, C]``
array in ``[0, 1]`` (``C`` is 1 or 3) plus what is known of its source; ``to_model_input``
turns that into the ``[C, H, W]`` tensor a model card asks for. Predict and the dataset
loader call exactly these two functions, so a dataset image and the same file posted to
predict reach the model as identical tensors.

The format is detected from the content (magic bytes), never from the file name. Limits
are enforced before any pixel is decoded: the byte size first, then the pixel count read
from the header, so a 20000 x 20000 PNG is refused without allocating it.

DICOM (PS3.3 C.7.6.3, C.11.1, C.11.2) is decoded with pydicom: the modality LUT (rescale
slope and intercept, or a Modality LUT Sequence), then the VOI transform (the card's window
when it has one, else the file's VOI LUT Sequence or Window Center/Width, else the min-max
of the modality values, as viewers do), then MONOCHROME1 inversion. The modality values are
kept, so a card's window can be applied later without decoding again, and so is the header
(without its pixel data), so adversarial images can be written back as DICOM files
(``write_dicom_like``) that decode, through this same path, to the adversarial pixels.

Errors: :class:`~models.errors.InvalidImageError` (undecodable, unsupported) and
:class:`~models.errors.ImageTooLargeError` (byte or pixel limits).
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.card import DicomWindow, ModelCard, ResizePolicy
from models.errors import ImageTooLargeError, InvalidImageError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

ImageFormat = Literal["png", "jpeg", "dicom"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# ITU-R BT.601 luma, the weights Pillow's "L" conversion uses.
_LUMA = (0.299, 0.587, 0.114)


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
    modality values (after rescale) of a greyscale image, float32 ``[H, W]``; ``None`` for
    colour images. ``window`` is the VOI transform used for ``DecodedImage.pixels``.
    """

    header: Dataset
    photometric: str
    modality: np.ndarray | None
    window: DicomWindowUsed | None
    transfer_syntax: str


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded image.

    ``pixels`` is float32 ``[H, W, C]`` with ``C`` in ``{1, 3}`` and values in ``[0, 1]``.
    ``original_size`` is ``(height, width)``; ``bit_depth`` the stored bits per sample;
    ``mode`` the Pillow mode or the DICOM photometric interpretation.
    """

    pixels: np.ndarray
    source_format: ImageFormat
    original_size: tuple[int, int]
    bit_depth: int
    mode: str
    filename: str | None = None
    dicom: DicomInfo | None = field(default=None)

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])


# ----------------------------------------------------------------------------- detection


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
    data: bytes, *, filename: str | None = None, max_bytes: int, max_pixels: int
) -> DecodedImage:
    """Decode PNG, JPEG or DICOM bytes (detected by content) to ``[H, W, C]`` in ``[0, 1]``.

    Raises:
        ImageTooLargeError: more than ``max_bytes`` bytes or ``max_pixels`` pixels (checked
            from the header, before decoding).
        InvalidImageError: empty, truncated, corrupt or unsupported content.
    """
    name = filename or "image"
    if len(data) == 0:
        raise InvalidImageError(f"{name}: the file is empty", {"filename": filename})
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{name}: {len(data)} bytes is over the image limit of {max_bytes} bytes",
            {"filename": filename, "bytes": len(data), "max_bytes": max_bytes},
        )
    fmt = detect_format(data)
    if fmt is None:
        raise InvalidImageError(
            f"{name}: not a PNG, JPEG or DICOM file (content starts with {data[:8]!r}); "
            "the format is read from the content, not the file name",
            {"filename": filename, "accepted": ["png", "jpeg", "dicom"]},
        )
    if fmt == "dicom":
        return _decode_dicom(data, name, filename, max_pixels)
    return _decode_raster(data, fmt, name, filename, max_pixels)


def _check_pixels(name: str, filename: str | None, height: int, width: int, limit: int) -> None:
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"{name}: the header gives an empty size {width}x{height}")
    if height * width > limit:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{limit} pixels",
            {"filename": filename, "width": width, "height": height, "max_pixels": limit},
        )


# ----------------------------------------------------------------------------- PNG / JPEG


def _png_bit_depth(data: bytes) -> int:
    # IHDR is always the first chunk: length(4) type(4) width(4) height(4) depth(1).
    return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 8


def _decode_raster(
    data: bytes, fmt: ImageFormat, name: str, filename: str | None, max_pixels: int
) -> DecodedImage:
    from PIL import Image, ImageOps

    label = fmt.upper()
    img: Image.Image
    try:
        img = Image.open(io.BytesIO(data), formats=[label])
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{name}: the header declares more pixels than allowed ({exc})",
            {"filename": filename, "max_pixels": max_pixels},
        ) from exc
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise InvalidImageError(
            f"{name}: unreadable {label} header ({exc})", {"filename": filename}
        ) from exc
    width, height = img.size
    _check_pixels(name, filename, height, width, max_pixels)
    try:
        img.load()
        if fmt == "jpeg":
            img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: {exc}", {"filename": filename}) from exc
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error) as exc:
        raise InvalidImageError(
            f"{name}: truncated or corrupt {label} data ({exc})", {"filename": filename}
        ) from exc
    mode = img.mode
    bit_depth = _png_bit_depth(data) if fmt == "png" else 8
    pixels = _pil_to_float(img, bit_depth)
    return DecodedImage(
        pixels=pixels,
        source_format=fmt,
        original_size=(height, width),
        bit_depth=bit_depth,
        mode=mode,
        filename=filename,
    )


def _pil_to_float(img: PILImage, bit_depth: int) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow keeps 16-bit greyscale PNGs as integers; 8-bit and smaller arrive as "L".
        arr = np.asarray(img).astype(np.float32)
        return np.clip(arr / float(2 ** max(bit_depth, 8) - 1), 0.0, 1.0)[..., None]
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
    if mode in ("1", "L", "LA", "La"):
        # Alpha is dropped: medical images have none worth keeping, and compositing on a
        # chosen background would invent pixel values.
        grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return grey[..., None]
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return rgb


# ----------------------------------------------------------------------------- DICOM


def _decode_dicom(data: bytes, name: str, filename: str | None, max_pixels: int) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, OSError, ValueError, KeyError, EOFError, struct.error) as exc:
        raise InvalidImageError(
            f"{name}: unreadable DICOM file ({exc})", {"filename": filename}
        ) from exc
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"float pixel data ({other[0]}) is not supported" if other else "no pixel data"
        raise InvalidImageError(f"{name}: the DICOM file has {what}", {"filename": filename})
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InvalidImageError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported; "
            "send one frame per file",
            {"filename": filename, "frames": frames},
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(getattr(ds, "SamplesPerPixel", 1))
        bits_stored = int(getattr(ds, "BitsStored", getattr(ds, "BitsAllocated", 8)))
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidImageError(
            f"{name}: the DICOM image pixel module is incomplete ({exc})",
            {"filename": filename},
        ) from exc
    _check_pixels(name, filename, rows, cols, max_pixels)
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    ts_text = str(tsyntax) if tsyntax is not None else "unknown"
    arr = _dicom_pixels(ds, name, filename, tsyntax)
    header = ds.copy()
    del header.PixelData

    if samples == 3 or photometric == "PALETTE COLOR":
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
            bits_stored = arr.dtype.itemsize * 8
        rgb = arr.astype(np.float32) / float(2**bits_stored - 1)
        pixels = np.clip(rgb, 0.0, 1.0).reshape(rows, cols, 3)
        info = DicomInfo(header, photometric, None, None, ts_text)
        return DecodedImage(pixels, "dicom", (rows, cols), bits_stored, photometric, filename, info)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidImageError(
            f"{name}: DICOM photometric interpretation {photometric!r} is not supported",
            {"filename": filename},
        )
    modality = _modality_values(arr, ds).reshape(rows, cols)
    display, window = _file_voi(modality, ds)
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    info = DicomInfo(header, photometric, modality, window, ts_text)
    return DecodedImage(
        display[..., None], "dicom", (rows, cols), bits_stored, photometric, filename, info
    )


def _dicom_pixels(ds: Dataset, name: str, filename: str | None, tsyntax: object) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds))
    except Exception as exc:  # third-party decoders raise anything; the boundary is here
        compressed = bool(getattr(tsyntax, "is_compressed", False))
        if compressed:
            ts_name = getattr(tsyntax, "name", str(tsyntax))
            raise InvalidImageError(
                f"{name}: the DICOM transfer syntax {ts_name} ({tsyntax}) is compressed and "
                "cannot be decoded here; send it uncompressed (Explicit VR Little Endian)",
                {"filename": filename, "transfer_syntax": str(tsyntax)},
            ) from exc
        raise InvalidImageError(
            f"{name}: the DICOM pixel data cannot be decoded ({exc})", {"filename": filename}
        ) from exc


def _modality_values(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """The modality LUT (PS3.3 C.11.1): a Modality LUT Sequence, or slope and intercept.

    A file that gives only one of RescaleSlope / RescaleIntercept gets the identity
    default for the other, rather than the silent no-op a strict reader would apply.
    """
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence) > 0:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def window_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1), mapped to ``[0, 1]``."""
    if width <= 1.0:
        return (values > center - 0.5).astype(np.float32)
    out = (values - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _window_range(center: float, width: float) -> tuple[float, float]:
    half = max(width - 1.0, 0.0) / 2.0
    return center - 0.5 - half, center - 0.5 + half


def _first(value: object) -> float:
    """The first of a multi-valued DS element (a file may list several windows)."""
    if isinstance(value, (str, bytes, int, float)) or not hasattr(value, "__getitem__"):
        return float(value)  # type: ignore[arg-type]
    return float(value[0])


def _file_voi(modality: np.ndarray, ds: Dataset) -> tuple[np.ndarray, DicomWindowUsed]:
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        from pydicom.pixels import apply_voi_lut

        item = ds.VOILUTSequence[0]
        entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
        entries = entries or 65536  # PS3.3 C.11.2.1.1: 0 means 2^16 entries
        # The VOI LUT's input is the modality LUT's output (PS3.3 C.11.2); its output range
        # is 0 .. 2^bits - 1 whatever values the table happens to use.
        # A LUT is indexed by integers: round the modality values to their entries.
        lut_input = np.rint(modality).astype(np.int32)
        out = np.asarray(apply_voi_lut(lut_input, ds, prefer_lut=True), dtype=np.float64)
        display = out / float(2**bits - 1)
        used = DicomWindowUsed(
            "file-voi-lut", first_mapped, first_mapped + entries - 1, function="LUT"
        )
        return np.clip(display, 0, 1).astype(np.float32).reshape(modality.shape), used
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if width > 0:
            if function == "SIGMOID":
                display = 1.0 / (1.0 + np.exp(-4.0 * (modality - center) / width))
                lo, hi = center - width / 2.0, center + width / 2.0
            elif function == "LINEAR_EXACT":
                display = np.clip((modality - center) / width + 0.5, 0.0, 1.0)
                lo, hi = center - width / 2.0, center + width / 2.0
            else:
                function = "LINEAR"
                display = window_linear(modality, center, width)
                lo, hi = _window_range(center, width)
            used = DicomWindowUsed("file-window", lo, hi, center, width, function)
            return display.astype(np.float32), used
    lo, hi = float(modality.min()), float(modality.max())
    display = (modality - lo) / (hi - lo) if hi > lo else np.zeros_like(modality)
    return display.astype(np.float32), DicomWindowUsed("min-max", lo, hi)


# ----------------------------------------------------------------------------- model input


def to_model_input(img: DecodedImage, card: ModelCard) -> torch.Tensor:
    """The card's view of an image: float32 ``[C, H, W]`` in ``[0, 1]``.

    A greyscale DICOM is re-windowed with ``card.preprocessing.dicom_window`` when the card
    has one (it overrides the file's). Channels are converted (grey repeated to RGB, RGB to
    grey with BT.601 luma) and the image is resized by ``card.preprocessing.resize``:
    ``stretch`` (to the exact size), ``pad`` (fit inside, keep the aspect, pad with black)
    or ``center-crop`` (cover, keep the aspect, crop the centre). Same size: no resampling.
    """
    pixels = img.pixels
    window = card.preprocessing.dicom_window
    if window is not None and img.dicom is not None and img.dicom.modality is not None:
        pixels = apply_window(img.dicom.modality, window, img.dicom.photometric)[..., None]
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    x = convert_channels(x, card.input.channels)
    x = resize(x[None], card.input.height, card.input.width, card.preprocessing.resize)[0]
    return x.clamp_(0.0, 1.0).contiguous()


def apply_window(modality: np.ndarray, window: DicomWindow, photometric: str) -> np.ndarray:
    """A fixed linear window on modality values, MONOCHROME1 inverted: ``[H, W]`` in [0, 1]."""
    display = window_linear(modality, window.center, window.width)
    return 1.0 - display if photometric == "MONOCHROME1" else display


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``[C, H, W]`` (or ``[N, C, H, W]``) with C in {1, 3} to ``channels`` channels."""
    axis = x.dim() - 3
    have = x.shape[axis]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.repeat_interleave(3, dim=axis)
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * weights).sum(dim=axis, keepdim=True)
    raise ValueError(f"cannot convert {have} channels to {channels}")


def resize(
    x: torch.Tensor,
    height: int,
    width: int,
    policy: ResizePolicy = "stretch",
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``[N, C, height, width]`` by a card's resize policy.

    Bilinear resampling is antialiased when shrinking; ``nearest`` is for masks.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == (height, width):
        return x
    if policy == "stretch":
        return _interpolate(x, height, width, mode)
    if policy == "pad":
        scale = min(height / h, width / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = _interpolate(x, nh, nw, mode) if (nh, nw) != (h, w) else x
        top, left = (height - nh) // 2, (width - nw) // 2
        return F.pad(inner, (left, width - nw - left, top, height - nh - top))
    if policy == "center-crop":
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        outer = _interpolate(x, nh, nw, mode) if (nh, nw) != (h, w) else x
        top, left = (nh - height) // 2, (nw - width) // 2
        return outer[..., top : top + height, left : left + width]
    raise ValueError(f"unknown resize policy {policy!r}; valid: center-crop, pad, stretch")


def _interpolate(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=(height, width), mode="nearest")
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    )


# ----------------------------------------------------------------------------- encoders


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` array, or of
    a uint16 greyscale ``[H, W]`` / ``[H, W, 1]`` array (a 16-bit PNG)."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError("16-bit PNGs must be greyscale [H, W]")
        img = Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        img = Image.fromarray(np.ascontiguousarray(arr), mode="L" if arr.ndim == 2 else "RGB")
    else:
        raise ValueError(
            f"expected uint8 [H, W(, 1|3)] or uint16 [H, W], got {arr.dtype} {arr.shape}"
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[C, H, W]`` (tensor) or ``[H, W, C]`` (array) in ``[0, 1]`` to uint8 ``[H, W, C]``."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(x, dtype=np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


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
    """
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(pixels)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"pixels must be [H, W], [H, W, 1] or [H, W, 3], got {arr.shape}")
    full_scale = float(np.iinfo(arr.dtype).max)
    y = arr.astype(np.float64) / full_scale

    ds = original_header.copy()
    if getattr(ds, "file_meta", None) is None:
        from pydicom.dataset import FileMetaDataset

        ds.file_meta = FileMetaDataset()
    old_rows = int(ds.get("Rows", arr.shape[0]))
    old_cols = int(ds.get("Columns", arr.shape[1]))
    for keyword in (
        "VOILUTSequence",
        "ModalityLUTSequence",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "PixelPaddingValue",
        "NumberOfFrames",
        "WindowCenterWidthExplanation",
        "PixelData",
    ):
        if keyword in ds:
            delattr(ds, keyword)

    if arr.ndim == 3:
        was_rgb = int(getattr(ds, "SamplesPerPixel", 1)) == 3
        bits = 16 if was_rgb and int(getattr(ds, "BitsStored", 8)) > 8 else 8
        stored_rgb = np.rint(y * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)
        for keyword in (
            "WindowCenter",
            "WindowWidth",
            "VOILUTFunction",
            "RescaleSlope",
            "RescaleIntercept",
            "RescaleType",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        ds.set_pixel_data(stored_rgb, "RGB", bits, generate_instance_uid=False)
    else:
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            photometric = "MONOCHROME2"
        bits_alloc = int(getattr(ds, "BitsAllocated", 16))
        bits_stored = int(getattr(ds, "BitsStored", bits_alloc))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        if bits_alloc not in (8, 16):
            bits_alloc, bits_stored = 16, min(bits_stored, 16)
        if arr.dtype == np.uint16 and bits_alloc == 8:
            bits_alloc, bits_stored = 16, 16
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        smin = -(2 ** (bits_stored - 1)) if signed else 0
        smax = 2 ** (bits_stored - 1) - 1 if signed else 2**bits_stored - 1
        lo, hi = _inverse_range(ds, window, display_range, smin, smax, slope, intercept)
        v = 1.0 - y if photometric == "MONOCHROME1" else y
        modality = lo + v * (hi - lo)
        stored = np.clip(np.rint((modality - intercept) / slope), smin, smax)
        stored_dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
        ds.set_pixel_data(
            stored.astype(stored_dtype), photometric, bits_stored, generate_instance_uid=False
        )
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleSlope, ds.RescaleIntercept = _ds_number(slope), _ds_number(intercept)
        center, width = (lo + hi) / 2.0 + 0.5, (hi - lo) + 1.0
        ds.WindowCenter, ds.WindowWidth = _ds_number(center), _ds_number(width)
        ds.VOILUTFunction = "LINEAR"

    new_rows, new_cols = int(ds.Rows), int(ds.Columns)
    if (new_rows, new_cols) != (old_rows, old_cols) and "PixelSpacing" in ds:
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
        ds.PixelSpacing = [
            _ds_number(row_sp * old_rows / new_rows),
            _ds_number(col_sp * old_cols / new_cols),
        ]
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
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _inverse_range(
    ds: Dataset,
    window: DicomWindow | None,
    display_range: tuple[float, float] | None,
    smin: int,
    smax: int,
    slope: float,
    intercept: float,
) -> tuple[float, float]:
    if window is not None:
        return _window_range(window.center, window.width)
    if display_range is not None:
        return float(display_range[0]), float(display_range[1])
    if "WindowCenter" in ds and "WindowWidth" in ds:
        width = _first(ds.WindowWidth)
        if width > 1:
            return _window_range(_first(ds.WindowCenter), width)
    a, b = smin * slope + intercept, smax * slope + intercept
    return min(a, b), max(a, b)


def _ds_number(value: float) -> str:
    """A DS (decimal string) value: at most 16 characters."""
    text = f"{value:.10g}"
    if len(text) > 16:
        text = f"{value:.6g}"
    return text
