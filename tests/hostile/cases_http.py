"""HTTP: bodies that are not what they claim, multipart abuse, paging out of range."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.hostile.corpus import Case, Request, Target, predict, upload_dataset

B = "hostileboundary"


def _multipart(*parts: bytes, boundary: str = B, close: bool = True) -> bytes:
    body = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def _field(name: str, value: bytes, extra: bytes = b"") -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n'.encode() + extra + b"\r\n" + value


def _raw(path: str, body: bytes, ctype: str = f"multipart/form-data; boundary={B}") -> Request:
    return Request("POST", path, headers={"Content-Type": ctype}, content=body)


def _dataset_raw(body: bytes, **kw: str) -> Request:
    return _raw("/v1/datasets", body, **kw)


def no_boundary(t: Target) -> Request:
    return _raw("/v1/datasets", _multipart(_field("format", b"csv")), "multipart/form-data")


def empty_boundary(t: Target) -> Request:
    return _raw("/v1/datasets", _multipart(_field("format", b"csv")),
                "multipart/form-data; boundary=")


def long_boundary(t: Target) -> Request:
    b = "x" * 200
    return _raw("/v1/datasets", _multipart(_field("format", b"csv"), boundary=b),
                f"multipart/form-data; boundary={b}")


def json_to_upload(t: Target) -> Request:
    return Request("POST", "/v1/datasets", json={"format": "imagefolder", "file": "AAAA"})


def urlencoded_to_upload(t: Target) -> Request:
    return Request("POST", "/v1/models", data={"card": "{}", "file": "x"})


def text_to_predict(t: Target) -> Request:
    return Request("POST", f"/v1/models/{t.model_id}/predict",
                   headers={"Content-Type": "text/plain"}, content=b"hello")


def huge_part_header(t: Target) -> Request:
    return _dataset_raw(_multipart(_field("format", b"csv", b"X-Pad: " + b"a" * 40_000 + b"\r\n")))


def many_part_headers(t: Target) -> Request:
    extra = b"".join(f"X-H{i}: v\r\n".encode() for i in range(3000))
    return _dataset_raw(_multipart(_field("format", b"csv", extra)))


def thousands_of_fields(t: Target) -> Request:
    return _dataset_raw(_multipart(*[_field("name", b"n") for _ in range(3000)]))


def thousands_of_files(t: Target) -> Request:
    return predict(t, *[(f"{i}.png", b"") for i in range(2000)])


def unclosed_multipart(t: Target) -> Request:
    return _dataset_raw(_multipart(_field("format", b"csv"), close=False))


def garbage_multipart(t: Target) -> Request:
    return _dataset_raw(b"\x00\xff" * 5000)


def part_without_disposition(t: Target) -> Request:
    return _dataset_raw(_multipart(b"Content-Type: text/plain\r\n\r\nhello"))


def field_not_utf8(t: Target) -> Request:
    return _dataset_raw(_multipart(_field("format", b"\xff\xfe\xfa")))


def field_over_limit(t: Target) -> Request:
    return upload_dataset(b"PK", name="n" * 70_000)


def repeated_field(t: Target) -> Request:
    return _dataset_raw(_multipart(_field("format", b"csv"), _field("format", b"dicom")))


def not_json(t: Target) -> Request:
    return Request("POST", "/v1/audits", headers={"Content-Type": "application/json"},
                   content=b'{"model_id": ')


def json_array(t: Target) -> Request:
    return Request("POST", "/v1/audits", json=[1, 2, 3])


def deep_json(t: Target) -> Request:
    return Request("POST", "/v1/audits", headers={"Content-Type": "application/json"},
                   content=b"[" * 100_000 + b"]" * 100_000)


def json_as_text(t: Target) -> Request:
    return Request("POST", "/v1/tenants", headers={"Content-Type": "text/plain"},
                   content=json.dumps({"name": "x"}).encode(), authenticated=False)


def _page(path: str, **params: str) -> Callable[[Target], Request]:
    return lambda t: Request("GET", path, params=params)




def basic_auth(t: Target) -> Request:
    return Request("GET", "/v1/models", headers={"Authorization": f"Basic {t.key}"},
                   authenticated=False)


def nul_in_id(t: Target) -> Request:
    return Request("GET", "/v1/models/%00")


def wrong_method(t: Target) -> Request:
    return Request("PUT", "/v1/models")


CASES = [
    Case("multipart-without-boundary", "http", no_boundary, (422, 422)),
    Case("multipart-empty-boundary", "http", empty_boundary, (422, 422)),
    Case("multipart-boundary-over-70", "http", long_boundary, (422, 422)),
    Case("json-to-an-upload", "http", json_to_upload, (422, 422)),
    Case("urlencoded-to-an-upload", "http", urlencoded_to_upload, (422, 422)),
    Case("text-to-predict", "http", text_to_predict, (422, 422)),
    Case("part-header-of-40-kb", "http", huge_part_header, (413, 413)),
    Case("part-with-3000-headers", "http", many_part_headers, (413, 413)),
    Case("3000-form-fields", "http", thousands_of_fields, (422, 422)),
    Case("2000-image-parts", "http", thousands_of_files, (422, 422)),
    Case("multipart-never-closed", "http", unclosed_multipart, (422, 422)),
    Case("multipart-garbage", "http", garbage_multipart, (422, 422)),
    Case("part-without-disposition", "http", part_without_disposition, (422, 422)),
    Case("field-not-utf8", "http", field_not_utf8, (422, 422)),
    Case("field-over-its-limit", "http", field_over_limit, (413, 413)),
    Case("field-given-twice", "http", repeated_field, (422, 422)),
    Case("json-cut-short", "http", not_json, (422, 422)),
    Case("json-array-for-an-object", "http", json_array, (422, 422)),
    Case("json-nested-100k-deep", "http", deep_json, (400, 422)),
    Case("json-sent-as-text", "http", json_as_text, (401, 422)),
    Case("offset-2-to-the-64", "http", _page("/v1/models", offset=str(2**64)), (422, 422)),
    Case("offset-negative", "http", _page("/v1/datasets", offset="-1"), (422, 422)),
    Case("limit-zero", "http", _page("/v1/jobs", limit="0"), (422, 422)),
    Case("limit-not-a-number", "http", _page("/v1/audits", limit="ten"), (422, 422)),
    Case("basic-auth-scheme", "http", basic_auth, (401, 401)),
    Case("nul-in-an-id", "http", nul_in_id, (404, 404)),
    Case("method-not-allowed", "http", wrong_method, (405, 405)),
]
