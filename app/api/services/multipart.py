"""A streaming ``multipart/form-data`` reader whose limits hold while the body arrives.

FastAPI's ``UploadFile`` is filled by Starlette before the route runs, whatever its size;
a 50 GB "model" would be spooled to disk in full before any check. :func:`read_form`
parses the request stream itself: a file part over its byte limit is refused (413) as soon
as its bytes pass the limit, with what was written so far removed; a declared
``Content-Length`` over the total is refused before a byte is read. Large parts go to disk
(written off the event loop, a megabyte at a time), small ones stay in memory. Unknown
field names are refused, so a typo (``image`` for ``file``) gets a clear 422.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from models.errors import InvalidInputError, PayloadTooLargeError, RobustDxError

_FLUSH_BYTES = 1 << 20
_HEADER_ALLOWANCE = 64 * 1024  # boundaries and part headers


def _too_large(name: str | None, limit: int) -> RobustDxError:
    return PayloadTooLargeError(
        f"{name or 'the upload'} is over the limit of {limit} bytes", {"max_bytes": limit}
    )


@dataclass(frozen=True)
class FileField:
    """How one file field is received.

    ``to_disk`` parts are streamed to the path ``new_path()`` gives; others are kept in
    memory. ``too_large(filename, limit)`` makes the error raised past ``max_bytes``.
    """

    max_bytes: int
    max_count: int = 1
    to_disk: bool = False
    too_large: Callable[[str | None, int], RobustDxError] = _too_large


@dataclass
class UploadedFile:
    field: str
    filename: str | None
    content_type: str | None
    size: int = 0
    path: Path | None = None
    data: bytearray | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return bytes(self.data)
        assert self.path is not None
        return self.path.read_bytes()


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[UploadedFile]] = field(default_factory=dict)

    def file_list(self, name: str) -> list[UploadedFile]:
        return self.files.get(name, [])

    def cleanup(self) -> None:
        """Remove the on-disk parts that nobody moved away."""
        for parts in self.files.values():
            for part in parts:
                if part.path is not None:
                    part.path.unlink(missing_ok=True)


class _Reader:
    def __init__(
        self,
        files: Mapping[str, FileField],
        fields: Collection[str],
        new_path: Callable[[], Path] | None,
        max_field_bytes: int,
    ) -> None:
        self.rules = files
        self.field_names = set(fields)
        self.new_path = new_path
        self.max_field_bytes = max_field_bytes
        self.form = Form()
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.current: UploadedFile | None = None
        self.rule: FileField | None = None
        self.text: bytearray | None = None
        self.text_name = ""
        # Disk writes wait here until the callbacks return, then run in a worker thread.
        self.pending: list[tuple[Path, bytes]] = []
        self.pending_bytes = 0
        self.handles: dict[Path, IO[bytes]] = {}

    # python-multipart callbacks (synchronous; no I/O here)

    def on_part_begin(self) -> None:
        self.headers = {}
        self.current, self.rule, self.text = None, None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        raw_filename = options.get(b"filename")
        filename = raw_filename.decode("utf-8", errors="replace") if raw_filename else None
        if name in self.rules:
            rule = self.rules[name]
            parts = self.form.files.setdefault(name, [])
            if len(parts) >= rule.max_count:
                raise InvalidInputError(
                    f"at most {rule.max_count} '{name}' part(s) per request",
                    {"field": name, "max_count": rule.max_count},
                )
            content_type = self.headers.get(b"content-type")
            part = UploadedFile(
                field=name,
                filename=filename,
                content_type=content_type.decode("latin-1") if content_type else None,
            )
            if rule.to_disk:
                assert self.new_path is not None, "to_disk fields need new_path"
                part.path = self.new_path()
                self.pending.append((part.path, b""))  # an empty part is an empty file
            else:
                part.data = bytearray()
            parts.append(part)
            self.current, self.rule = part, rule
        elif name in self.field_names:
            if name in self.form.fields:
                raise InvalidInputError(f"the form field '{name}' is given twice")
            self.text, self.text_name = bytearray(), name
        else:
            expected = sorted(set(self.rules) | self.field_names)
            raise InvalidInputError(
                f"unexpected form field {name!r}; expected: {', '.join(expected)}",
                {"field": name, "expected": expected},
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.current is not None:
            assert self.rule is not None
            self.current.size += len(chunk)
            if self.current.size > self.rule.max_bytes:
                raise self.rule.too_large(self.current.filename, self.rule.max_bytes)
            if self.current.data is not None:
                self.current.data.extend(chunk)
            else:
                assert self.current.path is not None
                self.pending.append((self.current.path, chunk))
                self.pending_bytes += len(chunk)
        elif self.text is not None:
            if len(self.text) + len(chunk) > self.max_field_bytes:
                raise PayloadTooLargeError(
                    f"the form field '{self.text_name}' is over {self.max_field_bytes} bytes"
                )
            self.text.extend(chunk)

    def on_part_end(self) -> None:
        if self.text is not None:
            try:
                self.form.fields[self.text_name] = self.text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"the form field '{self.text_name}' is not UTF-8 text"
                ) from exc
            self.text = None

    # asynchronous side: file writes off the event loop

    async def flush(self, final: bool = False) -> None:
        if self.pending and (final or self.pending_bytes >= _FLUSH_BYTES):
            pending, self.pending, self.pending_bytes = self.pending, [], 0
            await anyio.to_thread.run_sync(self._write, pending)

    def _write(self, pending: list[tuple[Path, bytes]]) -> None:
        for path, data in pending:
            handle = self.handles.get(path)
            if handle is None:
                handle = self.handles[path] = path.open("wb")
            if data:
                handle.write(data)

    def close_handles(self) -> None:
        for handle in self.handles.values():
            with contextlib.suppress(OSError):
                handle.close()
        self.handles.clear()


async def read_form(
    request: Request,
    *,
    files: Mapping[str, FileField],
    fields: Collection[str] = (),
    new_path: Callable[[], Path] | None = None,
    max_field_bytes: int = 1 << 20,
) -> Form:
    """Read a multipart body with per-field limits (see module doc).

    Raises:
        InvalidInputError: not multipart, malformed, unknown or repeated fields.
        PayloadTooLargeError (or the field's own error): over a limit.
    """
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        expected = sorted(set(files) | set(fields))
        raise InvalidInputError(
            f"expected a multipart/form-data body with the fields {', '.join(expected)}",
            {"content_type": ctype.decode("latin-1"), "expected": expected},
        )
    total = (
        sum(rule.max_bytes * rule.max_count for rule in files.values())
        + max_field_bytes * len(fields)
        + _HEADER_ALLOWANCE * (sum(r.max_count for r in files.values()) + len(fields) + 1)
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > total:
        raise PayloadTooLargeError(
            f"the request body of {declared} bytes is over the limit of {total} bytes",
            {"max_bytes": total},
        )
    reader = _Reader(files, fields, new_path, max_field_bytes)
    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": reader.on_part_begin,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_headers_finished": reader.on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            _write(parser, chunk)
            await reader.flush()
        _finalize(parser)
        await reader.flush(final=True)
    except BaseException:
        reader.close_handles()
        reader.form.cleanup()
        raise
    await anyio.to_thread.run_sync(reader.close_handles)
    return reader.form


def _write(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except RobustDxError:
        raise
    except Exception as exc:  # python-multipart's parse errors
        raise InvalidInputError(f"malformed multipart body: {exc}") from exc


def _finalize(parser: MultipartParser) -> None:
    try:
        parser.finalize()
    except Exception as exc:
        raise InvalidInputError(f"malformed multipart body: {exc}") from exc
