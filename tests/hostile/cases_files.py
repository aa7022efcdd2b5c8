"""Images sent to predict and model files sent to registration."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from tests.app.models_fixtures import dicom_bytes, jpeg_bytes, png_bytes, png_header_only
from tests.hostile.corpus import Case, Request, Target, predict, upload_model
from tests.models.model_files import (
    tiny_net,
    write_malicious_pickle,
    write_malicious_pth,
    write_torchscript,
)


def _image(name: str, make: Callable[[], bytes]) -> Any:
    """A predict of one image, made when the case runs (not when tests are collected)."""
    return lambda t: predict(t, (name, make()))


def _save(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg_header_only(width: int, height: int) -> bytes:
    """A baseline JPEG whose frame header claims ``width x height``."""
    small = bytearray(jpeg_bytes(1, 16))
    sof = small.find(b"\xff\xc0")
    small[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(small)


def dicom_with(tag: str, value: bytes) -> bytes:
    """A valid DICOM whose ``tag`` then holds the raw bytes ``value``: pydicom refuses to
    write invalid values, so a marker of the same length is written and its bytes replaced.
    The element is found by its tag, VR and length (explicit VR little endian), not by its
    value, which may also occur by chance in the random pixels."""
    import pydicom
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(2)))
    marker = {"RescaleSlope": "1.25", "WindowCenter": "1001", "NumberOfFrames": "1"}[tag]
    setattr(ds, tag, marker)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    number = tag_for_keyword(tag)
    assert number is not None, tag
    raw = marker.encode().ljust(len(value), b" ")
    assert len(value) == len(raw), value
    header = (struct.pack("<HH", number >> 16, number & 0xFFFF) + dictionary_VR(number).encode()
              + struct.pack("<H", len(raw)))
    assert data.count(header) == 1, tag
    start = data.index(header) + len(header)
    assert data[start:start + len(raw)] == raw, tag
    return data[:start] + value + data[start + len(raw):]


def palette_without_colours() -> bytes:
    data = bytearray(_save(Image.new("P", (16, 16)), "PNG"))
    plte = data.find(b"PLTE")
    data[plte - 4:plte] = struct.pack(">I", 0)  # a palette of no entries (CRC now wrong)
    return bytes(data)


def sixteen_bit_truncated() -> bytes:
    arr = np.random.default_rng(0).integers(0, 65536, (64, 64), dtype=np.uint16)
    data = _save(Image.fromarray(arr), "PNG")
    return data[:len(data) // 2]


IMAGE_CASES = [
    Case("png-truncated", "images", _image("a.png", lambda: png_bytes(1)[:60]), (415, 415)),
    Case("png-pixel-bomb", "images", _image("b.png", lambda: png_header_only(40_000, 40_000)),
         (413, 413)),
    Case("jpeg-truncated", "images", _image("c.jpg", lambda: jpeg_bytes(1)[:100]), (415, 415)),
    Case("jpeg-pixel-bomb", "images", _image("d.jpg", lambda: jpeg_header_only(65_000, 65_000)),
         (413, 415)),
    Case("not-an-image", "images", _image("e.png", lambda: b"hello, I am text"), (415, 415)),
    Case("empty-file", "images", _image("f.png", lambda: b""), (415, 422)),
    Case("gif", "images", _image("g.gif", lambda: _save(Image.new("L", (8, 8)), "GIF")),
         (415, 415)),
    Case("tiff", "images", _image("h.tif", lambda: _save(Image.new("L", (8, 8)), "TIFF")),
         (415, 415)),
    Case("png-palette-of-no-colours", "images", _image("i.png", palette_without_colours),
         (415, 415)),
    Case("png-16-bit-truncated", "images", _image("j.png", sixteen_bit_truncated), (415, 415)),
    Case("dicom-without-pixels", "images", _image("k.dcm", lambda: dicom_bytes(with_pixels=False)),
         (415, 422)),
    Case("dicom-truncated", "images", _image("l.dcm", lambda: dicom_bytes(3)[:400]), (415, 415)),
    Case("dicom-rescale-slope-not-a-number", "images",
         _image("m.dcm", lambda: dicom_with("RescaleSlope", b"abc ")), (415, 422)),
    Case("dicom-rescale-slope-nan", "images",
         _image("n.dcm", lambda: dicom_with("RescaleSlope", b"NaN ")), (415, 422)),
    Case("dicom-window-centre-not-a-number", "images",
         _image("o.dcm", lambda: dicom_with("WindowCenter", b"cent")), (415, 422)),
    Case("dicom-frames-not-a-number", "images",
         _image("p.dcm", lambda: dicom_with("NumberOfFrames", b"x ")), (415, 422)),
    Case("too-many-files", "images", lambda t: predict(t, *[(f"{i}.png", png_bytes(i))
                                                            for i in range(7)]), (422, 422)),
    Case("file-and-files-together", "images",
         lambda t: Request("POST", f"/v1/models/{t.model_id}/predict",
                           files=[("file", ("a.png", png_bytes(1))),
                                  ("files", ("b.png", png_bytes(2)))]), (422, 422)),
    Case("smoothing-n-zero", "images", lambda t: predict(t, ("q.png", png_bytes(1)),
                                                         defense="smoothing", n="0"), (422, 422)),
    Case("smoothing-sigma-nan", "images", lambda t: predict(t, ("r.png", png_bytes(1)),
                                                            defense="smoothing", sigma="nan"),
         (422, 422)),
]


def _torchscript(t: Target) -> bytes:
    path = write_torchscript(tiny_net(), t.scratch / "good.pt")
    return path.read_bytes()


def _with_member(t: Target, name: str, data: bytes) -> bytes:
    source = io.BytesIO(_torchscript(t))
    out = io.BytesIO()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.writestr(f"{root}/{name}", data)
    return out.getvalue()


def _pickle(t: Target) -> bytes:
    return write_malicious_pickle(t.scratch / "m.pkl", t.scratch / "pwned").read_bytes()


def _pth(t: Target) -> bytes:
    return write_malicious_pth(t.scratch / "m.pth", t.scratch / "pwned").read_bytes()


def safetensors(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None
                ) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _weights(blob: bytes) -> Any:
    return lambda t: upload_model(blob, {**_fresh(t.card), "architecture": "small_cnn"},
                                  "w.safetensors")


def _model(make: Any, card: Any = None, name: str = "model.bin") -> Any:
    """An upload of ``make(target)`` with a card under a name of its own (a taken name
    would be refused for that alone)."""
    return lambda t: upload_model(make(t), card if card is not None else _fresh(t.card), name)


def _fresh(card: dict[str, Any]) -> dict[str, Any]:
    import uuid

    return {**card, "name": f"case-{uuid.uuid4().hex[:8]}"}


def onnx_external(t: Target) -> bytes:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    for key, value in (("location", "../../../../etc/passwd"), ("offset", "0"),
                       ("length", "8")):
        weight.external_data.add(key=key, value=value)
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 2])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 2])], [weight])
    return bytes(helper.make_model(graph).SerializeToString())


MODEL_CASES = [
    Case("plain-pickle", "model files", _model(_pickle), (422, 422)),
    Case("pth-with-code", "model files", _model(_pth, name="m.pth"), (422, 422)),
    Case("torchscript-with-a-pickled-extra", "model files",
         _model(lambda t: _with_member(t, "data/evil.pkl", _pickle(t))), (422, 422)),
    Case("torchscript-truncated", "model files", _model(lambda t: _torchscript(t)[:-200]),
         (422, 422)),
    Case("safetensors-header-longer-than-file", "model files",
         _weights(safetensors({}, length=10**12)), (422, 422)),
    Case("safetensors-offsets-past-the-data", "model files",
         _weights(safetensors({"conv.weight": {"dtype": "F32", "shape": [1000, 1000],
                                               "data_offsets": [0, 4_000_000]}}, b"\0" * 16)),
         (422, 422)),
    Case("safetensors-header-not-json", "model files", _weights(safetensors(b"{not json")),
         (422, 422)),
    Case("random-bytes", "model files", _model(lambda t: bytes(range(256)) * 4), (422, 422)),
    Case("empty-model-file", "model files", _model(lambda t: b""), (422, 422)),
    Case("card-not-json", "model files", _model(_torchscript, card="{name: x"), (422, 422)),
    Case("card-of-the-wrong-shape", "model files", _model(_torchscript, card=[1, 2]),
         (422, 422)),
    Case("card-labels-do-not-match-outputs", "model files",
         lambda t: upload_model(_torchscript(t), {**_fresh(t.card), "labels": list("abcde")}),
         (422, 422)),
    Case("card-missing", "model files",
         lambda t: Request("POST", "/v1/models",
                           files={"file": ("m.pt", _torchscript(t), "application/octet-stream")}),
         (422, 422)),
    Case("onnx-truncated", "model files", _model(lambda t: onnx_external(t)[:20], name="m.onnx"),
         (422, 422)),
    Case("onnx-external-data-outside", "model files", _model(onnx_external, name="m.onnx"),
         (422, 422)),
]

CASES = IMAGE_CASES + MODEL_CASES
