"""Malformed files: each DICOM value is a domain error naming the tag, never quoting the
value; third-party errors are converted at the boundary; messages stay clean.

Values are written raw (bypassing pydicom's validation), as a hostile file would hold them.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

import models.imaging.decode as decode_module
from models.errors import ImageTooLargeError, InvalidImageError
from models.imaging import decode_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CT = str(get_testdata_file("CT_small.dcm"))
RGB = str(get_testdata_file("SC_rgb_small_odd.dcm"))


def _raw(ds: pydicom.Dataset, keyword: str, value: bytes, vr: str | None = None) -> None:
    tag = Tag(keyword)
    vr = vr or dictionary_VR(tag)
    if len(value) % 2:
        value += b"\0" if vr in ("US", "SS", "OW") else b" "
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def _mutated(path: str, **text: str | bytes) -> bytes:
    ds = pydicom.dcmread(path)
    for keyword, value in text.items():
        _raw(ds, keyword, value if isinstance(value, bytes) else value.encode())
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _refusal(data: bytes) -> InvalidImageError:
    with pytest.raises(InvalidImageError) as info:
        decode_image(data, filename="scan.dcm")
    return info.value


def _us(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}H", *values)


@pytest.mark.parametrize(
    ("keyword", "value", "problem"),
    [
        ("RescaleSlope", "abc", "is not a number"),
        ("RescaleSlope", "NaN", "is not a finite number"),
        ("RescaleSlope", "inf", "is not a finite number"),
        ("RescaleSlope", "1e308", "gives modality values that are not finite"),
        ("RescaleIntercept", "-1e39", "gives modality values that are not finite"),
        ("RescaleIntercept", "DOE^JOHN", "is not a number"),
        ("WindowCenter", "abc", "is not a number"),
        ("WindowWidth", "NaN", "is not a finite number"),
        ("NumberOfFrames", "x", "is not a number"),
        ("NumberOfFrames", "-3", "must be in"),
        ("NumberOfFrames", "1.5", "is not an integer"),
    ],
)
def test_text_values_name_their_tag(keyword: str, value: str, problem: str) -> None:
    # A window is read when both its elements are there.
    window = {"WindowCenter": "40", "WindowWidth": "400"}
    exc = _refusal(_mutated(CT, **{**window, keyword: value}))
    assert exc.details["tag"] == keyword
    assert keyword in exc.message
    assert problem in exc.message
    assert value not in exc.message  # never the value: it could be patient data
    assert "/" not in exc.message  # never a path


@pytest.mark.parametrize(
    ("keyword", "value", "problem"),
    [
        ("Rows", _us(0), "is missing or zero"),
        ("Columns", b"", "is missing or zero"),
        ("BitsAllocated", _us(7), "must be 1, 8, 16 or 32"),
        ("BitsStored", _us(17), "must be in [1, 16]"),
        ("PixelRepresentation", _us(2), "must be in [0, 1]"),
        ("SamplesPerPixel", _us(2), "must be 1 or 3"),
        ("SamplesPerPixel", _us(9), "must be in [1, 4]"),
    ],
)
def test_pixel_module_values_name_their_tag(keyword: str, value: bytes, problem: str) -> None:
    exc = _refusal(_mutated(CT, **{keyword: value}))
    assert exc.details["tag"] == keyword
    assert problem in exc.message


def test_photometric_interpretation_is_checked_against_the_samples() -> None:
    exc = _refusal(_mutated(CT, PhotometricInterpretation="HSV"))
    assert exc.details["tag"] == "PhotometricInterpretation"
    exc = _refusal(_mutated(RGB, PhotometricInterpretation="MONOCHROME2"))
    assert "3 sample(s)" in exc.message
    exc = _refusal(_mutated(CT, PhotometricInterpretation=" "))
    assert "PhotometricInterpretation" in exc.message
    assert "is missing" in exc.message


def test_a_two_value_lut_descriptor_names_the_sequence_and_the_tag() -> None:
    ds = pydicom.dcmread(CT)
    item = pydicom.Dataset()
    _raw(item, "LUTDescriptor", _us(4, 0), "US")
    _raw(item, "LUTData", _us(0, 1, 2, 3), "OW")
    ds.VOILUTSequence = pydicom.Sequence([item])
    buf = io.BytesIO()
    ds.save_as(buf)
    exc = _refusal(buf.getvalue())
    assert exc.details["tag"] == "VOILUTSequence > LUTDescriptor"
    assert "must hold 3 values, not 2" in exc.message


def test_a_voi_lut_of_more_than_16_bits_is_refused() -> None:
    ds = pydicom.dcmread(CT)
    item = pydicom.Dataset()
    _raw(item, "LUTDescriptor", _us(4, 0, 40), "US")
    _raw(item, "LUTData", _us(0, 1, 2, 3), "OW")
    ds.VOILUTSequence = pydicom.Sequence([item])
    buf = io.BytesIO()
    ds.save_as(buf)
    assert "outside [1, 16]" in _refusal(buf.getvalue()).message


def test_a_broken_palette_names_the_palette_tags() -> None:
    ds = pydicom.dcmread(CT)
    _raw(ds, "PhotometricInterpretation", b"PALETTE COLOR")
    for colour in ("Red", "Green", "Blue"):
        _raw(ds, f"{colour}PaletteColorLookupTableDescriptor", _us(1), "US")
    buf = io.BytesIO()
    ds.save_as(buf)
    exc = _refusal(buf.getvalue())
    assert exc.details["tag"].startswith("RedPaletteColorLookupTable")


def test_rescale_to_huge_but_finite_values_decodes_finite() -> None:
    # 1e30 x a 16-bit value stays inside float32: accepted, windowed by min-max.
    img = decode_image(_mutated(CT, RescaleSlope="1e30"), filename="scan.dcm")
    assert img.dicom is not None
    assert img.dicom.modality is not None
    assert np.isfinite(img.dicom.modality).all()
    assert np.isfinite(img.pixels).all()
    assert 0.0 <= img.pixels.min() <= img.pixels.max() <= 1.0
    assert img.pixels.max() == 1.0  # min-max spans the full range


def test_a_huge_window_saturates_instead_of_overflowing() -> None:
    img = decode_image(
        _mutated(CT, WindowCenter="-1.7e308", WindowWidth="1.0000001"), filename="scan.dcm"
    )
    assert np.isfinite(img.pixels).all()
    np.testing.assert_array_equal(np.unique(img.pixels), [1.0])  # everything above the window


def test_multiframe_names_number_of_frames() -> None:
    exc = _refusal(_mutated(CT, NumberOfFrames="2"))
    assert exc.details == {"filename": "scan.dcm", "frames": 2, "tag": "NumberOfFrames"}


def test_pixel_count_from_the_header_is_checked_before_decoding() -> None:
    data = _mutated(CT, Rows=_us(60000), Columns=_us(60000))
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, filename="scan.dcm", max_pixels=1 << 20)
    assert info.value.details["width"] == 60000


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("models.imaging.dicom_read.file_voi", struct.error("unpack requires a buffer")),
        ("models.imaging.dicom_read.modality_values", np.linalg.LinAlgError("singular")),
        ("models.imaging.raster.integer_samples", zlib.error("incorrect header check")),
        ("models.imaging.raster.integer_samples", KeyError("mode")),
    ],
)
def test_the_boundary_converts_any_third_party_error(
    monkeypatch: pytest.MonkeyPatch, target: str, error: Exception
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(target, boom)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    data = buf.getvalue() if "raster" in target else open(CT, "rb").read()  # noqa: SIM115
    with pytest.raises(InvalidImageError) as info:
        decode_module.decode_image(data, filename="f")
    assert info.value.__cause__ is error
    assert type(error).__name__ in info.value.message


def test_an_unidentifiable_png_header_says_so_without_a_memory_address() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    data = buf.getvalue()
    with pytest.raises(InvalidImageError) as info:
        decode_image(data[:12] + b"IHDX" + data[16:], filename="a.png")
    assert info.value.message == "a.png: unreadable PNG header"


def test_writing_back_leaves_the_decoded_header_alone() -> None:
    from models.imaging import to_uint8, write_dicom_like

    img = decode_image(_mutated(CT, WindowCenter="40", WindowWidth="400"), filename="ct.dcm")
    assert img.dicom is not None
    header = img.dicom.header
    before = {e.keyword: str(e.value) for e in header if e.keyword}
    pixels = to_uint8(img.pixels)
    first = write_dicom_like(header, pixels[::2, ::2])  # resized: PixelSpacing is rescaled
    second = write_dicom_like(header, pixels[::2, ::2])
    assert {e.keyword: str(e.value) for e in header if e.keyword} == before
    a, b = (pydicom.dcmread(io.BytesIO(x)) for x in (first, second))
    assert a.PixelSpacing == b.PixelSpacing
    assert [float(v) for v in a.PixelSpacing] == [2 * float(v) for v in header.PixelSpacing]


def test_a_big_endian_file_is_written_back_little_endian() -> None:
    from models.imaging import to_uint8, write_dicom_like

    img = decode_image(Path(str(get_testdata_file("MR_small_bigendian.dcm"))).read_bytes())
    assert img.dicom is not None
    data = write_dicom_like(img.dicom.header, to_uint8(img.pixels))
    again = decode_image(data, filename="back.dcm")
    assert again.dicom is not None
    assert again.dicom.transfer_syntax == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(to_uint8(again.pixels), to_uint8(img.pixels))
