"""Image decoding: the one path shared by predict, dataset import and the audit loader.

``decode_image`` turns the bytes of a PNG, JPEG or DICOM file into a :class:`DecodedImage`
(integer samples where the format has them, and a float32 ``[H, W, C]`` view in ``[0, 1]``,
``C`` 1 or 3) plus what is known of its source; ``to_model_input`` turns that into the
``[C, H, W]`` tensor a model card asks for. Predict and the dataset loader call exactly
these two functions, so a dataset image and the same file posted to predict reach the
model as identical tensors.

The format is detected from the content (magic bytes), never from the file name. Limits
(:class:`DecodeLimits`, and a per-request :class:`DecodeBudget`) are enforced before any
pixel is decoded: the byte size first, then the pixel count read from the header and, for
JPEG, the number of scans, so a 20000 x 20000 PNG is refused without allocating it.

DICOM (PS3.3 C.7.6.3, C.11.1, C.11.2) is decoded with pydicom: the modality LUT (rescale
slope and intercept, or a Modality LUT Sequence), then the VOI transform (the card's window
when it has one, else the file's VOI LUT Sequence or Window Center/Width, else the min-max
of the modality values, as viewers do), then MONOCHROME1 inversion. The modality values are
kept, so a card's window can be applied later without decoding again, and so is the header
(without its pixel data), so adversarial images can be written back as DICOM files
(``write_dicom_like``) that decode, through this same path, to the adversarial pixels.

Modules: :mod:`~models.imaging.decode` (the boundary), :mod:`~models.imaging.raster`
(PNG, JPEG), :mod:`~models.imaging.dicom_read`, :mod:`~models.imaging.dicom_tags` and
:mod:`~models.imaging.dicom_voi` (DICOM), :mod:`~models.imaging.limits`,
:mod:`~models.imaging.model_input`, :mod:`~models.imaging.encode`,
:mod:`~models.imaging.dicom_writer`.

Errors: :class:`~models.errors.InvalidImageError` (undecodable, malformed, unsupported)
and :class:`~models.errors.ImageTooLargeError` (byte, pixel, scan or budget limits).
"""

from models.imaging.decode import decode_image, detect_format
from models.imaging.decoded import DecodedImage, DicomInfo, DicomWindowUsed, ImageFormat
from models.imaging.dicom_voi import apply_window, window_linear
from models.imaging.dicom_writer import SECONDARY_CAPTURE, write_dicom_like
from models.imaging.encode import encode_png, quantize, to_uint8
from models.imaging.limits import DecodeBudget, DecodeLimits
from models.imaging.model_input import convert_channels, resize, to_model_input

__all__ = [
    "SECONDARY_CAPTURE",
    "DecodeBudget",
    "DecodeLimits",
    "DecodedImage",
    "DicomInfo",
    "DicomWindowUsed",
    "ImageFormat",
    "apply_window",
    "convert_channels",
    "decode_image",
    "detect_format",
    "encode_png",
    "quantize",
    "resize",
    "to_model_input",
    "to_uint8",
    "window_linear",
    "write_dicom_like",
]
