"""Datasets: unsafe archives (slip, links, bombs), broken label files, unreadable images."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from collections.abc import Callable

import numpy as np

from models.imaging import encode_png
from tests.app.models_fixtures import png_header_only
from tests.hostile.corpus import Case, Request, Target, upload_dataset

#: The hostile app's limits (see conftest): small, so bombs stay small.
MAX_FILES = 40
MAX_UNCOMPRESSED = 4 * 1024**2


def png(seed: int = 0, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def zipped(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def two_classes(**extra: bytes) -> dict[str, bytes]:
    return {"benign/1.png": png(1), "benign/2.png": png(2), "malignant/3.png": png(3),
            "malignant/4.png": png(4), **extra}


def _folder(**extra: bytes) -> Callable[[Target], Request]:
    return lambda t: upload_dataset(zipped(two_classes(**extra)))


def _csv(text: bytes, files: dict[str, bytes] | None = None) -> Callable[[Target], Request]:
    entries = {"labels.csv": text, **(files if files is not None else
                                      {"1.png": png(1), "2.png": png(2)})}
    return lambda t: upload_dataset(zipped(entries), "csv")


def symlink(t: Target) -> Request:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in two_classes().items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("benign/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return upload_dataset(buf.getvalue())


def bomb_declared(t: Target) -> Request:
    return upload_dataset(zipped(two_classes(**{"benign/big.png": b"\0" * (MAX_UNCOMPRESSED + 1)})))


def bomb_lying(t: Target) -> Request:
    data = bytearray(zipped(two_classes(**{"malignant/zz.png": b"\0" * 200_000})))
    central = data.rfind(b"PK\x01\x02")
    name_len = struct.unpack("<H", data[central + 28:central + 30])[0]
    assert data[central + 46:central + 46 + name_len] == b"malignant/zz.png"
    data[central + 24:central + 28] = struct.pack("<I", 1000)  # claims 1000 bytes
    return upload_dataset(bytes(data))


def too_many_files(t: Target) -> Request:
    return upload_dataset(zipped({f"benign/{i}.png": png(i, 8) for i in range(MAX_FILES + 5)}))


def npz_with_objects(t: Target) -> Request:
    buf = io.BytesIO()
    np.savez(buf, train_images=np.array([{"evil": 1}], dtype=object),
             train_labels=np.zeros((1, 1), np.uint8))
    return upload_dataset(zipped({"data.npz": buf.getvalue()}), "medmnist-npz",
                          labels="benign,malignant")


def nested_zip(t: Target) -> Request:
    return upload_dataset(zipped({"inner.zip": zipped(two_classes())}))


def over_limit(t: Target) -> Request:
    noise = np.random.default_rng(0).integers(0, 256, 300 * 1024, dtype=np.uint8).tobytes()
    return upload_dataset(zipped({"benign/x.png": noise}, zipfile.ZIP_STORED))


def truncated_zip(t: Target) -> Request:
    return upload_dataset(zipped(two_classes())[:-30])


CASES = [
    Case("zip-slip-dotdot", "datasets", _folder(**{"../evil.png": png(9)}), (422, 422)),
    Case("zip-slip-absolute", "datasets", _folder(**{"/etc/evil.png": png(9)}), (422, 422)),
    Case("zip-slip-drive-letter", "datasets", _folder(**{"C:/evil.png": png(9)}), (422, 422)),
    Case("zip-symlink", "datasets", symlink, (422, 422)),
    Case("zip-bomb-declared-size", "datasets", bomb_declared, (413, 422)),
    Case("zip-bomb-lying-header", "datasets", bomb_lying, (422, 422)),
    Case("zip-too-many-files", "datasets", too_many_files, (422, 422)),
    Case("zip-inside-a-zip", "datasets", nested_zip, (422, 422)),
    Case("zip-truncated", "datasets", truncated_zip, (422, 422)),
    Case("not-a-zip", "datasets", lambda t: upload_dataset(b"hello, not a zip"), (422, 422)),
    Case("empty-archive", "datasets", lambda t: upload_dataset(zipped({})), (422, 422)),
    Case("archive-over-its-limit", "datasets", over_limit, (413, 413)),
    Case("unreadable-image-in-archive", "datasets", _folder(**{"benign/bad.png": b"\x89PNGxx"}),
         (422, 422)),
    Case("pixel-bomb-in-archive", "datasets",
         _folder(**{"benign/bomb.png": png_header_only(30_000, 30_000)}), (413, 422)),
    Case("csv-names-missing-files", "datasets",
         _csv(b"file,label\n1.png,benign\n2.png,malignant\ngone.png,benign\n"), (422, 422)),
    Case("csv-row-with-extra-columns", "datasets",
         _csv(b"file,label\n1.png,benign,extra,more\n2.png,malignant\n"), (422, 422)),
    Case("csv-without-label-columns", "datasets", _csv(b"file\n1.png\n2.png\n"), (422, 422)),
    Case("csv-without-file-column", "datasets", _csv(b"picture,label\n1.png,benign\n"),
         (422, 422)),
    Case("csv-label-columns-not-binary", "datasets",
         _csv(b"file,Effusion,Age\n1.png,1,63\n2.png,0,41\n"), (422, 422)),
    Case("csv-binary-garbage", "datasets", _csv(b"\x00\xff\xfe" * 400), (422, 422)),
    Case("csv-missing", "datasets", _csv(b"", {"1.png": png(1)}), (422, 422)),
    Case("csv-path-outside", "datasets", _csv(b"file,label\n../../etc/passwd,benign\n"),
         (422, 422)),
    Case("npz-with-pickled-objects", "datasets", npz_with_objects, (422, 422)),
    Case("dicom-format-of-pngs", "datasets",
         lambda t: upload_dataset(zipped(two_classes()), "dicom"), (422, 422)),
    Case("unknown-format", "datasets", lambda t: upload_dataset(zipped(two_classes()), "tar"),
         (422, 422)),
    Case("format-missing", "datasets",
         lambda t: Request("POST", "/v1/datasets",
                           files={"file": ("d.zip", zipped(two_classes()), "application/zip")}),
         (422, 422)),
    Case("labels-not-a-list", "datasets",
         lambda t: upload_dataset(zipped(two_classes()), labels='["benign", 3'), (422, 422)),
    Case("labels-outside-the-archive", "datasets",
         lambda t: upload_dataset(zipped(two_classes()), labels="nevus"), (422, 422)),
    Case("entries-whose-paths-clash", "datasets",
         _folder(**{"benign/1.png/3.png": png(5)}), (422, 422)),
    Case("entry-name-over-255", "datasets", _folder(**{f"benign/{'a' * 300}.png": png(6)}),
         (422, 422)),
]
