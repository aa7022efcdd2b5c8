"""Fuzzing the decoder with mutations of real files: the only exceptions are the domain's.

Seeds are real files: PNGs and JPEGs made with Pillow (8-bit grey and RGB, 16-bit grey,
palette with transparency, grey with alpha, progressive JPEG) and DICOM files that ship
with pydicom (CT, MR, RLE-compressed MR, big-endian MR, RT dose, RGB and YBR secondary
captures). Mutations are byte flips, overwrites, insertions, deletions and truncations
(PNG chunks optionally get their CRCs fixed, so the mutation reaches the decoder instead
of the checksum), and for DICOM tag values set through pydicom to hostile numbers and text.

Every mutated file must either decode to finite pixels in ``[0, 1]`` (and a finite model
input) or raise ``InvalidImageError`` / ``ImageTooLargeError``. At least 10,500 distinct
mutated files in all (counted); derandomized, so CI runs the same files every time.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from models.card import ModelCard
from models.errors import ImageTooLargeError, InvalidImageError
from models.imaging import (
    DecodedImage,
    DecodeLimits,
    decode_image,
    to_model_input,
    to_uint8,
    write_dicom_like,
)

pytestmark = pytest.mark.filterwarnings("ignore")

LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=1 << 18, max_jpeg_scans=16)
CARDS = [
    ModelCard.model_validate(
        {
            "name": "fuzz",
            "task": "single-label",
            "labels": ["a", "b"],
            "input": {"channels": c, "height": 8, "width": 8},
            "preprocessing": {"resize": policy, **extra},
        }
    )
    for c, policy, extra in (
        (1, "stretch", {}),
        (3, "pad", {}),
        (1, "center-crop", {"dicom_window": {"center": 40.0, "width": 400.0}}),
    )
]


def _settings(n: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ----------------------------------------------------------------------------- seeds


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _raster_seeds() -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    img16 = Image.frombytes("I;16", (11, 9), grey16.astype("<u2").tobytes())
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    la = Image.fromarray(np.stack([grey, grey[::-1]], axis=-1), mode="LA")
    pngs = [
        _save(Image.fromarray(grey), "PNG"),
        _save(Image.fromarray(rgb), "PNG"),
        _save(img16, "PNG"),
        _save(palette, "PNG", transparency=3),
        _save(la, "PNG"),
    ]
    jpegs = [
        _save(Image.fromarray(grey), "JPEG", quality=80),
        _save(Image.fromarray(rgb), "JPEG", quality=90),
        _save(
            Image.fromarray(np.kron(rgb, np.ones((2, 2, 1), np.uint8))),
            "JPEG",
            progressive=True,
            quality=75,
        ),
        _save(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
    ]
    return pngs, jpegs


PNGS, JPEGS = _raster_seeds()
DICOM_NAMES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "rtdose_1frame.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
)
DICOMS = [Path(str(get_testdata_file(n))).read_bytes() for n in DICOM_NAMES]


def test_every_seed_decodes() -> None:
    """The seeds themselves are valid, so mutations start from files that decode."""
    for data in [*PNGS, *JPEGS, *DICOMS]:
        img = decode_image(data, filename="seed", limits=LIMITS)
        assert np.isfinite(img.pixels).all()


# ----------------------------------------------------------------------------- mutations


MAGIC = {b"\x89P": 8, b"\xff\xd8": 3}
OPS = ("flip", "flip", "flip", "overwrite", "overwrite", "insert", "delete", "truncate")


def _position(size: int, start: int) -> st.SearchStrategy[int]:
    # Past the magic bytes (a file without them is refused before any decoder runs); half
    # the mutations land in the first 512 bytes, where the headers are.
    start = min(start, size - 1)
    return st.one_of(
        st.integers(start, max(start, min(size, 512) - 1)), st.integers(start, size - 1)
    )


@st.composite
def byte_mutants(draw: st.DrawFn, seeds: list[bytes], fix_png: bool = False) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    start = MAGIC.get(bytes(data[:2]), 132)  # DICOM: preamble and "DICM"
    for _ in range(draw(st.integers(1, 6))):
        if len(data) <= start:
            break
        op = draw(st.sampled_from(OPS))
        at = draw(_position(len(data), start))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            blob = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(blob)] = blob
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    if fix_png and draw(st.booleans()):
        return fix_png_crcs(bytes(data))
    return bytes(data)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every chunk whose length field fits the file."""
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack(">I", out[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(out[pos + 4 : end]) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


def _check(data: bytes) -> None:
    """Decode; a domain refusal is fine, anything else fails, as does a bad image."""
    try:
        img = decode_image(data, filename="fuzzed", limits=LIMITS)
    except (InvalidImageError, ImageTooLargeError):
        return
    px = img.pixels
    assert px.dtype == np.float32
    assert px.ndim == 3
    assert px.shape[2] in (1, 3)
    assert np.isfinite(px).all()
    assert px.min() >= 0.0
    assert px.max() <= 1.0
    if img.dicom is not None:
        _write_back(img)
    for card in CARDS:
        x = to_model_input(img, card)
        assert tuple(x.shape) == (card.input.channels, 8, 8)
        assert bool(x.isfinite().all())
        assert float(x.min()) >= 0.0
        assert float(x.max()) <= 1.0


def _write_back(img: DecodedImage) -> None:
    """An audit writes adversarial images back into the decoded header: that must work,
    or fail with the domain error, for every header the decoder accepted."""
    assert img.dicom is not None
    window = img.dicom.window
    display = (window.low, window.high) if window is not None else None
    try:
        data = write_dicom_like(img.dicom.header, to_uint8(img.pixels), display_range=display)
    except InvalidImageError:
        return
    again = decode_image(data, filename="written", limits=LIMITS)
    assert again.samples.shape[:2] == img.samples.shape[:2]


def _fuzz(strategy: st.SearchStrategy[bytes], examples: int) -> set[bytes]:
    """Run ``_check`` on ``examples`` generated files; the distinct files that were tried."""
    tried: set[bytes] = set()

    @given(strategy)
    @_settings(examples)
    def run(data: bytes) -> None:
        tried.add(data)
        _check(data)

    run()
    return tried


def _check_count(tried: set[bytes], wanted: int, seeds: list[bytes]) -> None:
    assert len(tried - set(seeds)) >= wanted  # distinct mutated files, not repeats


# Generated examples repeat (two truncations at one offset are one file), so each test
# generates more than the distinct mutated files it asserts: 3000 + 3000 + 2000 + 2500.


def test_mutated_pngs_decode_or_are_refused() -> None:
    _check_count(_fuzz(byte_mutants(PNGS, fix_png=True), 3800), 3000, PNGS)


def test_mutated_jpegs_decode_or_are_refused() -> None:
    _check_count(_fuzz(byte_mutants(JPEGS), 4000), 3000, JPEGS)


def test_mutated_dicom_bytes_decode_or_are_refused() -> None:
    _check_count(_fuzz(byte_mutants(DICOMS), 2700), 2000, DICOMS)


# ----------------------------------------------------------------------------- DICOM tags

TEXT_VALUES = (
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "-1e308",
    "1e39",
    "3.5e38",
    "abc",
    "",
    " ",
    "0",
    "-0",
    "1e-320",
    "99999999999999999999",
    "1\\2\\3",
    "\\",
    "-1",
    "65536",
    "4294967296",
    "0.5",
    "2",
    "16",
    "8",
    "1",
    "3",
    "MONOCHROME1",
    "PALETTE COLOR",
    "RGB",
    "YBR_FULL",
    "SIGMOID",
    "LINEAR_EXACT",
    "HSV",
    "\x00\x00",
)
DS_IS_CS = {
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "NumberOfFrames",
    "PhotometricInterpretation",
    "VOILUTFunction",
    "PixelSpacing",
}
BINARY = {
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PlanarConfiguration",
}


def _set_raw(ds: pydicom.Dataset, keyword: str, value: bytes, vr: str | None = None) -> None:
    """Put raw bytes in an element, bypassing pydicom's validation (as a hostile file does)."""
    tag = Tag(keyword)
    if len(value) % 2:
        value += b" " if (vr or dictionary_VR(tag)) not in ("US", "SS", "OW", "OB") else b"\0"
    ds[tag] = RawDataElement(tag, vr or dictionary_VR(tag), len(value), value, 0, False, True)


def _lut_item(draw: st.DrawFn) -> pydicom.Dataset:
    item = pydicom.Dataset()
    _set_raw(item, "LUTDescriptor", draw(st.binary(min_size=0, max_size=8)), "US")
    _set_raw(item, "LUTData", draw(st.binary(min_size=0, max_size=64)), "OW")
    return item


TAG_OPS = ("text", "text", "text", "binary", "binary", "voi-lut", "modality-lut", "palette")


@st.composite
def tag_mutants(draw: st.DrawFn) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(draw(st.sampled_from(DICOMS))))
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(TAG_OPS))
        if what == "text":
            keyword = draw(st.sampled_from(sorted(DS_IS_CS)))
            value = draw(st.one_of(st.sampled_from(TEXT_VALUES), st.text(max_size=12)))
            _set_raw(ds, keyword, value.encode("utf-8", "replace"))
        elif what == "binary":
            keyword = draw(st.sampled_from(sorted(BINARY)))
            _set_raw(ds, keyword, draw(st.binary(min_size=0, max_size=6)), "US")
        elif what in ("voi-lut", "modality-lut"):
            seq = "VOILUTSequence" if what == "voi-lut" else "ModalityLUTSequence"
            setattr(ds, seq, pydicom.Sequence([_lut_item(draw)]))
        else:
            _set_raw(ds, "PhotometricInterpretation", b"PALETTE COLOR")
            for colour in ("Red", "Green", "Blue"):
                desc = draw(st.binary(min_size=0, max_size=8))
                _set_raw(ds, f"{colour}PaletteColorLookupTableDescriptor", desc, "US")
                lut = draw(st.binary(min_size=0, max_size=64))
                _set_raw(ds, f"{colour}PaletteColorLookupTableData", lut, "OW")
    buf = io.BytesIO()
    try:
        ds.save_as(buf)
    except Exception:  # pydicom refused to write it: then write the seed's meta + raw body
        return draw(st.sampled_from(DICOMS))
    return buf.getvalue()


def test_mutated_dicom_tags_decode_or_are_refused() -> None:
    _check_count(_fuzz(tag_mutants(), 3200), 2500, DICOMS)
