"""Image decoding: PNG 8/16-bit, JPEG, DICOM (rescale, window, VOI LUT, MONOCHROME1, RGB),
the bad inputs every upload path must refuse, model-input conversion and DICOM write-back."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from models.card import DicomWindow, ModelCard
from models.errors import ImageTooLargeError, InvalidImageError
from models.imaging import (
    decode_image,
    detect_format,
    encode_png,
    resize,
    to_model_input,
    to_uint8,
    write_dicom_like,
)
from tests.app.models_fixtures import png_header_only

LIMITS = {"max_bytes": 8 * 1024**2, "max_pixels": 4 * 1024**2}


def _decode(data: bytes, filename: str | None = "x", **limits: int):
    merged = {**LIMITS, **limits}
    return decode_image(
        data, filename=filename, max_bytes=merged["max_bytes"], max_pixels=merged["max_pixels"]
    )


def _card(channels: int = 1, size: int = 16, **pre: object) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "t",
            "task": "single-label",
            "labels": ["a", "b"],
            "input": {"channels": channels, "height": size, "width": size},
            "preprocessing": pre,
        }
    )


def _pil_bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _dicom(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **elements: object,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # DX
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.PatientName = "Phantom^Test"
    ds.Modality = "DX"
    bits = bits_stored or stored.dtype.itemsize * 8
    ds.set_pixel_data(stored, photometric, bits, generate_instance_uid=False)
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def _dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_grey_and_rgb_are_exact() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    out = _decode(encode_png(grey), "g.png")
    assert out.source_format == "png"
    assert out.original_size == (7, 9)
    assert out.bit_depth == 8
    assert out.pixels.dtype == np.float32
    assert out.pixels.shape == (7, 9, 1)
    np.testing.assert_array_equal(to_uint8(out.pixels)[..., 0], grey)

    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = _decode(encode_png(rgb))
    assert out.pixels.shape == (5, 6, 3)
    np.testing.assert_array_equal(to_uint8(out.pixels), rgb)


def test_png_16bit_keeps_its_precision() -> None:
    values = np.array([[0, 1, 256], [32768, 65534, 65535]], dtype=np.uint16)
    out = _decode(encode_png(values), "h.png")
    assert out.bit_depth == 16
    np.testing.assert_allclose(out.pixels[..., 0], values / 65535.0, atol=1e-7)
    assert out.pixels[0, 1, 0] > 0  # one 16-bit step survives: no 8-bit truncation


def test_png_palette_and_alpha_become_rgb_without_alpha() -> None:
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 40))
    out = _decode(_pil_bytes(rgba, "PNG"))
    assert out.pixels.shape == (3, 4, 3)
    np.testing.assert_allclose(out.pixels[0, 0], np.array([10, 20, 30]) / 255.0, atol=1e-7)
    pal = Image.new("P", (4, 3), 1)
    pal.putpalette([0, 0, 0, 200, 100, 0])
    out = _decode(_pil_bytes(pal, "PNG"))
    np.testing.assert_allclose(out.pixels[1, 1], np.array([200, 100, 0]) / 255.0, atol=1e-7)


def test_jpeg_decodes_close_to_the_source() -> None:
    y, x = np.mgrid[0:32, 0:32]
    rgb = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)
    out = _decode(_pil_bytes(Image.fromarray(rgb), "JPEG", quality=95), "p.jpg")
    assert out.source_format == "jpeg"
    assert out.pixels.shape == (32, 32, 3)
    assert np.abs(out.pixels - rgb / 255.0).mean() < 0.02


def test_format_comes_from_content_not_the_name() -> None:
    png = encode_png(np.zeros((2, 2), np.uint8))
    assert detect_format(png) == "png"
    assert _decode(png, "scan.dcm").source_format == "png"
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG or DICOM"):
        _decode(b"this is plain text, not an image", "note.png")


def test_empty_file_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        _decode(b"", "empty.png")


def test_truncated_png_is_refused_with_a_clear_message() -> None:
    rng = np.random.default_rng(1)
    png = encode_png(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match=r"truncated or corrupt PNG"):
        _decode(png[: len(png) // 2], "cut.png")


def test_truncated_jpeg_is_refused() -> None:
    rng = np.random.default_rng(2)
    jpg = _pil_bytes(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(InvalidImageError, match="JPEG"):
        _decode(jpg[: len(jpg) // 2], "cut.jpg")


def test_20000_square_png_is_refused_before_decoding() -> None:
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 200  # nothing to decode: only the header speaks
    with pytest.raises(ImageTooLargeError, match="pixels"):
        _decode(bomb, "bomb.png", max_pixels=64 * 1024**2)


def test_pixel_limit_is_ours_not_pillows() -> None:
    png = encode_png(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageTooLargeError, match="10000 pixels is over the limit of 5000"):
        _decode(png, max_pixels=5000)


def test_byte_limit_is_checked_first() -> None:
    png = encode_png(np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        _decode(png, max_bytes=len(png) - 1)


# ----------------------------------------------------------------------------- DICOM


def test_dicom_rescale_and_window() -> None:
    # 12-bit CT-like data: HU = stored - 1024; window (40, 400) shows -160..240 HU.
    stored = np.array([[0, 1024, 1024 + 40], [1024 - 160, 1024 + 240, 4095]], dtype=np.uint16)
    ds = _dicom(
        stored,
        bits_stored=12,
        RescaleSlope="1",
        RescaleIntercept="-1024",
        WindowCenter="40",
        WindowWidth="400",
    )
    out = _decode(_dicom_bytes(ds), "ct.dcm")
    assert out.source_format == "dicom"
    assert out.bit_depth == 12
    assert out.dicom is not None
    np.testing.assert_allclose(out.dicom.modality, stored.astype(np.float32) - 1024)
    expected = np.clip((stored - 1024.0 - 39.5) / 399.0 + 0.5, 0, 1)
    np.testing.assert_allclose(out.pixels[..., 0], expected, atol=1e-6)
    assert out.pixels[0, 0, 0] == 0.0
    assert out.pixels[1, 2, 0] == 1.0
    assert out.dicom.window is not None
    assert out.dicom.window.source == "file-window"
    assert "PixelData" not in out.dicom.header
    assert str(out.dicom.header.PatientName) == "Phantom^Test"


def test_card_window_overrides_the_files() -> None:
    stored = np.linspace(0, 4000, 16 * 16).reshape(16, 16).astype(np.uint16)
    ds = _dicom(stored, RescaleIntercept="-1000", WindowCenter="40", WindowWidth="80")
    img = _decode(_dicom_bytes(ds))
    x_file = to_model_input(img, _card())
    x_card = to_model_input(img, _card(dicom_window={"center": -600, "width": 1500}))
    hu = stored.astype(np.float32) - 1000
    np.testing.assert_allclose(
        x_card[0].numpy(), np.clip((hu + 600.5) / 1499 + 0.5, 0, 1), atol=1e-6
    )
    assert not torch.allclose(x_file, x_card)


def test_dicom_monochrome1_is_inverted() -> None:
    stored = np.array([[0, 255], [128, 64]], dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    m2 = _decode(_dicom_bytes(_dicom(stored, WindowCenter="128", WindowWidth="256")))
    m1 = _decode(
        _dicom_bytes(
            _dicom(stored, photometric="MONOCHROME1", WindowCenter="128", WindowWidth="256")
        )
    )
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-7)
    assert m1.pixels[0, 0, 0] == 1.0  # stored 0 is white in MONOCHROME1
    # The card's window keeps the inversion.
    x = to_model_input(m1, _card(size=8, dicom_window={"center": 128, "width": 256}))
    np.testing.assert_allclose(x[0].numpy(), m1.pixels[..., 0], atol=1e-6)


def test_dicom_without_window_uses_min_max_of_modality_values() -> None:
    stored = np.array([[100, 300], [200, 500]], dtype=np.uint16)
    out = _decode(_dicom_bytes(_dicom(stored, RescaleSlope="2", RescaleIntercept="10")))
    np.testing.assert_allclose(out.pixels[..., 0], (stored - 100) / 400.0, atol=1e-6)
    assert out.dicom is not None
    assert out.dicom.window is not None
    assert (out.dicom.window.low, out.dicom.window.high) == (210.0, 1010.0)


def test_dicom_voi_lut_sequence() -> None:
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    ds = _dicom(stored, bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 12]
    item.add_new(0x00283006, "US", [0, 1000, 3000, 4095])  # LUT Data
    ds.VOILUTSequence = [item]
    out = _decode(_dicom_bytes(ds))
    np.testing.assert_allclose(out.pixels[..., 0], [[0, 1000 / 4095], [3000 / 4095, 1]], atol=1e-6)


def test_dicom_8bit_and_signed_16bit() -> None:
    stored8 = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    out = _decode(_dicom_bytes(_dicom(stored8, WindowCenter="128", WindowWidth="256")))
    assert out.bit_depth == 8
    np.testing.assert_allclose(out.pixels[..., 0], (stored8 - 127.5) / 255 + 0.5, atol=1e-6)
    signed = np.array([[-1000, 0], [1000, 2000]], dtype=np.int16)
    out = _decode(_dicom_bytes(_dicom(signed, bits_stored=16)))
    np.testing.assert_allclose(out.pixels[..., 0], (signed + 1000) / 3000.0, atol=1e-6)


def test_dicom_rgb() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out = _decode(_dicom_bytes(_dicom(rgb, photometric="RGB")))
    assert out.pixels.shape == (6, 5, 3)
    np.testing.assert_array_equal(to_uint8(out.pixels), rgb)


def test_dicom_without_pixel_data_is_refused() -> None:
    ds = _dicom(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    with pytest.raises(InvalidImageError, match="no pixel data"):
        _decode(_dicom_bytes(ds), "report.dcm")


def test_multiframe_dicom_is_refused() -> None:
    frames = np.zeros((3, 4, 4), np.uint8)
    ds = _dicom(frames)
    assert int(ds.NumberOfFrames) == 3
    with pytest.raises(InvalidImageError, match=r"multi-frame DICOM \(3 frames\)"):
        _decode(_dicom_bytes(ds), "cine.dcm")


def test_undecodable_compressed_dicom_is_refused() -> None:
    from pydicom.encaps import encapsulate

    ds = _dicom(np.zeros((8, 8), np.uint16), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7not really JPEG-LS\xff\xd9"])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    with pytest.raises(InvalidImageError, match="compressed and cannot be decoded"):
        _decode(_dicom_bytes(ds), "ls.dcm")


def test_dicom_pixel_limit_from_the_header() -> None:
    ds = _dicom(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageTooLargeError):
        _decode(_dicom_bytes(ds), max_pixels=15)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom complains about the garbage
def test_dicom_garbage_after_preamble_is_refused() -> None:
    data = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 3
    with pytest.raises(InvalidImageError):
        _decode(data, "bad.dcm")


# ----------------------------------------------------------------------------- model input


def test_to_model_input_channels_and_stretch() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    img = _decode(encode_png(rgb))
    x = to_model_input(img, _card(channels=1, size=8))
    assert x.shape == (1, 8, 8)
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), 0.299, atol=1e-6)
    grey = _decode(encode_png(np.full((8, 8), 51, np.uint8)))
    x = to_model_input(grey, _card(channels=3, size=16))
    assert x.shape == (3, 16, 16)
    np.testing.assert_allclose(x.numpy(), 0.2, atol=1e-6)


def test_same_size_input_is_not_resampled() -> None:
    arr = np.random.default_rng(4).integers(0, 256, (16, 16), dtype=np.uint8)
    x = to_model_input(_decode(encode_png(arr)), _card(size=16))
    np.testing.assert_array_equal(to_uint8(x)[..., 0], arr)


def test_resize_policies_keep_or_drop_the_aspect() -> None:
    wide = torch.ones(1, 1, 10, 20)
    pad = resize(wide, 10, 10, "pad")
    assert pad.shape == (1, 1, 10, 10)
    assert pad[0, 0, 0].sum() == 0
    assert pad[0, 0, 5].sum() == 10
    crop_src = torch.zeros(1, 1, 10, 20)
    crop_src[..., 5:15] = 1.0  # the centre half is white
    crop = resize(crop_src, 10, 10, "center-crop")
    assert torch.all(crop == 1.0)
    stretch = resize(crop_src, 10, 10, "stretch")
    assert stretch.shape == (1, 1, 10, 10)
    assert 0 < stretch.mean() < 1


# ----------------------------------------------------------------------------- write-back


def test_write_dicom_like_round_trips_through_the_decoder() -> None:
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 4096, (32, 32)).astype(np.uint16)
    ds = _dicom(
        stored,
        bits_stored=12,
        RescaleIntercept="-1024",
        WindowCenter="300",
        WindowWidth="1500",
        PixelSpacing=["0.5", "0.5"],
    )
    original = _decode(_dicom_bytes(ds))
    assert original.dicom is not None
    adv = to_uint8(original.pixels)[..., 0]
    adv[:8, :8] = 255 - adv[:8, :8]
    data = write_dicom_like(
        original.dicom.header, adv, series_description="RobustDx adversarial (PGD eps=4/255)"
    )
    again = _decode(data)
    assert again.dicom is not None
    header = again.dicom.header
    assert header.SOPInstanceUID != ds.SOPInstanceUID
    assert header.SeriesInstanceUID != ds.SeriesInstanceUID
    assert header.StudyInstanceUID == ds.StudyInstanceUID
    assert str(header.PatientName) == "Phantom^Test"
    assert again.dicom.transfer_syntax == ExplicitVRLittleEndian
    assert int(header.BitsStored) == 12
    assert float(header.RescaleIntercept) == -1024
    assert list(header.ImageType) == ["DERIVED", "SECONDARY"]
    np.testing.assert_array_equal(to_uint8(again.pixels)[..., 0], adv)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_write_dicom_like_with_card_window_and_resize(photometric: str) -> None:
    stored = np.random.default_rng(6).integers(0, 4096, (40, 40)).astype(np.uint16)
    ds = _dicom(stored, photometric=photometric, bits_stored=12, PixelSpacing=["0.4", "0.4"])
    card = _card(size=20, dicom_window={"center": 2000, "width": 3000})
    img = _decode(_dicom_bytes(ds))
    x = to_model_input(img, card)
    adv = to_uint8(x)
    window = card.preprocessing.dicom_window
    assert isinstance(window, DicomWindow)
    assert img.dicom is not None
    data = write_dicom_like(img.dicom.header, adv, window=window)
    back = _decode(data)
    assert back.original_size == (20, 20)
    assert back.dicom is not None
    assert back.dicom.photometric == photometric
    assert [float(v) for v in back.dicom.header.PixelSpacing] == [0.8, 0.8]
    x_back = to_model_input(back, card)
    np.testing.assert_array_equal(to_uint8(x_back), adv)


def test_write_dicom_like_min_max_range_and_rgb() -> None:
    stored = np.array([[100, 300], [200, 500]], dtype=np.uint16)
    img = _decode(_dicom_bytes(_dicom(stored)))
    assert img.dicom is not None
    assert img.dicom.window is not None
    adv = to_uint8(img.pixels)
    rng = (img.dicom.window.low, img.dicom.window.high)
    back = _decode(write_dicom_like(img.dicom.header, adv, display_range=rng))
    np.testing.assert_array_equal(to_uint8(back.pixels), adv)
    rgb = np.random.default_rng(7).integers(0, 256, (2, 2, 3), dtype=np.uint8)
    back = _decode(write_dicom_like(img.dicom.header, rgb))
    assert back.mode == "RGB"
    np.testing.assert_array_equal(to_uint8(back.pixels), rgb)


def test_write_dicom_like_from_a_bare_header() -> None:
    header = Dataset()
    header.PatientName = "Nobody"
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    back = _decode(write_dicom_like(header, pixels, series_description="adv"))
    assert back.dicom is not None
    assert back.dicom.header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    assert back.dicom.header.SeriesDescription == "adv"
    np.testing.assert_array_equal(to_uint8(back.pixels)[..., 0], pixels)
