"""Decoding within budgets: JPEG scans counted before decoding, pixels checked from the
header, integer samples resized before any float conversion, a per-request pixel budget."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from models.card import ModelCard
from models.errors import ImageTooLargeError
from models.imaging import DecodeBudget, DecodeLimits, decode_image, resize, to_model_input
from models.imaging.model_input import box_reduce, reduce_factor
from models.imaging.raster import count_jpeg_scans


def _card(channels: int = 1, size: int = 8, policy: str = "stretch") -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "t",
            "task": "single-label",
            "labels": ["a", "b"],
            "input": {"channels": channels, "height": size, "width": size},
            "preprocessing": {"resize": policy},
        }
    )


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each SOS segment with its entropy-coded data."""
    out, pos = [], data.find(b"\xff\xda")
    while pos >= 0:
        end = pos + 2
        while True:
            end = data.find(b"\xff", end)
            if data[end + 1] not in (0x00, *range(0xD0, 0xD8)):
                break
            end += 2
        out.append((pos, end))
        pos = data.find(b"\xff\xda", end)
    return out


def _many_scans(copies: int) -> bytes:
    """A progressive JPEG whose last refinement scan is repeated ``copies`` times: the
    shape of the 500-scan file that took a decoder 35 s at 8192 x 8192."""
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = _save(Image.fromarray(rgb), "JPEG", progressive=True, quality=80)
    start, end = _scans(data)[-1]
    return data[:end] + data[start:end] * copies + data[end:]


# ----------------------------------------------------------------------------- JPEG scans


def test_scans_are_counted_from_the_markers() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    baseline = _save(Image.fromarray(rgb), "JPEG")
    progressive = _save(Image.fromarray(rgb), "JPEG", progressive=True)
    assert count_jpeg_scans(baseline, 64) == 1
    assert count_jpeg_scans(progressive, 64) == len(_scans(progressive)) > 1
    assert count_jpeg_scans(_many_scans(300), 64) == 65  # stops counting past the cap


def test_sos_bytes_inside_an_app_segment_are_not_scans() -> None:
    grey = Image.new("L", (8, 8), 100)
    exif = b"Exif\x00\x00" + b"\xff\xda\x00\x08" * 100
    data = _save(grey, "JPEG", exif=exif)
    assert data.count(b"\xff\xda") > 100
    assert count_jpeg_scans(data, 64) == 1
    assert decode_image(data, filename="x.jpg").samples.shape == (8, 8, 1)


def test_a_jpeg_with_hundreds_of_scans_is_refused_before_decoding() -> None:
    data = _many_scans(400)
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, filename="scans.jpg")
    assert info.value.details["max_jpeg_scans"] == 64
    assert "more than 64 scans" in info.value.message
    # The cap is a parameter: the same file is decoded when the cap allows it.
    img = decode_image(data, filename="scans.jpg", limits=DecodeLimits(max_jpeg_scans=1000))
    assert img.samples.shape == (32, 32, 3)


# ----------------------------------------------------------------------------- pixels


def _zeros_png(side: int) -> bytes:
    return _save(Image.new("L", (side, side)), "PNG", compress_level=1)


def test_a_huge_png_is_resized_in_integers_before_any_float_conversion() -> None:
    data = _zeros_png(8192)  # ~64 Mpx of zeros in a small file
    img = decode_image(data, filename="zeros.png")
    assert img.samples.dtype == np.uint8
    assert img.samples.shape == (8192, 8192, 1)
    tracemalloc.start()
    try:
        x = to_model_input(img, _card(size=8))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tuple(x.shape) == (1, 8, 8)
    assert x.dtype == torch.float32
    assert float(x.abs().max()) == 0.0
    assert "pixels" not in img.__dict__  # the full-size float view was never made
    # A float32 copy would be 256 MiB and even the uint8 samples are 64 MiB.
    assert peak < 8 * 1024**2


def test_pixels_over_the_limit_are_refused_from_the_header() -> None:
    data = _zeros_png(8192)
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, filename="zeros.png", limits=DecodeLimits(max_pixels=8192 * 8191))
    assert info.value.details["width"] == 8192


def test_16_bit_samples_stay_16_bit() -> None:
    arr = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    png = _save(Image.frombytes("I;16", (8, 8), arr.astype("<u2").tobytes()), "PNG")
    img = decode_image(png, filename="x.png")
    assert img.samples.dtype == np.uint16
    assert img.scale == 65535.0
    np.testing.assert_array_equal(img.samples[..., 0], arr)


def test_box_reduce_averages_blocks_without_overflow() -> None:
    a = np.array([[0, 2, 4, 6], [2, 4, 6, 8], [65535, 65535, 1, 2], [65535, 65535, 3, 4]])
    out = box_reduce(a.astype(np.uint16)[..., None], 2)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], [[2, 6], [65535, 3]])  # 2.5 rounds up to 3
    assert reduce_factor((8192, 8192), (8, 8)) == 512
    assert reduce_factor((100, 8192), (64, 64)) == 1


@pytest.mark.parametrize("policy", ["stretch", "pad", "center-crop"])
def test_integer_pre_reduction_matches_the_float_path(policy: str) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    img = decode_image(_save(Image.fromarray(rgb), "PNG"), filename="x.png")
    card = _card(channels=3, size=16, policy=policy)
    fast = to_model_input(img, card)
    exact = torch.from_numpy(img.pixels).permute(2, 0, 1)[None]
    exact = resize(exact, 16, 16, card.preprocessing.resize)[0]
    assert float((fast - exact).abs().max()) < 0.02


# ----------------------------------------------------------------------------- budget


def test_a_request_budget_counts_pixels_before_decoding() -> None:
    png = _save(Image.new("L", (10, 10)), "PNG")
    budget = DecodeBudget(250)
    decode_image(png, filename="a.png", budget=budget)
    decode_image(png, filename="b.png", budget=budget)
    assert (budget.used, budget.left) == (200, 50)
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png, filename="c.png", budget=budget)
    assert info.value.details["max_total_pixels"] == 250
    assert budget.used == 200  # a refused image costs nothing
    assert DecodeLimits(max_total_pixels=7).budget().limit == 7


@pytest.mark.parametrize("field", ["max_bytes", "max_pixels", "max_jpeg_scans", "max_frames"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DecodeLimits(**{field: 0})
    assert getattr(DecodeLimits(), field) > 0


def test_quantize_matches_torch_rounding_for_any_shape() -> None:
    from models.imaging import quantize, to_uint8

    x = torch.tensor([0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.2, -0.1]).reshape(1, 1, 1, 7)
    expected = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(quantize(x), expected)
    assert quantize(x).shape == (1, 1, 1, 7)
    chw = torch.rand(3, 4, 5)
    np.testing.assert_array_equal(to_uint8(chw), quantize(chw.permute(1, 2, 0)))


def test_the_scan_cap_holds_inside_dicom() -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(str(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")))
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.50"  # JPEG baseline
    rgb = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    frame = _save(Image.fromarray(rgb), "JPEG", progressive=True, quality=80)
    start, end = _scans(frame)[-1]
    ds.PixelData = encapsulate([frame[:end] + frame[start:end] * 300 + frame[end:]])
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(buf.getvalue(), filename="scans.dcm")
    assert info.value.details["max_jpeg_scans"] == 64
    ds.PixelData = encapsulate([frame])
    buf = io.BytesIO()
    ds.save_as(buf)
    assert decode_image(buf.getvalue(), filename="ok.dcm").samples.shape == (100, 100, 3)
