"""An audit's reports and artifacts as one zip, written as a stream.

The archive is produced while it is sent: each file is read a megabyte at a time and
deflated into a small buffer that is handed to the response and emptied, so memory stays
at about one chunk however many artifacts there are. :mod:`zipfile` writes to an
unseekable stream with data descriptors (sizes after each entry), and ZIP64 is forced so
entries over 4 GiB need no second pass.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from app.core.storage import Storage

CHUNK = 1 << 20


class _Pipe:
    """A write-only, unseekable file: what is written waits in ``data`` until taken."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


def stream_zip(files: list[tuple[str, Path]]) -> Iterator[bytes]:
    """Yield a zip of ``files`` (``(name in the archive, path)``) chunk by chunk."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, path in files:
            with path.open("rb") as src, zf.open(name, "w", force_zip64=True) as dest:
                while chunk := src.read(CHUNK):
                    dest.write(chunk)
                    if len(pipe.data) >= CHUNK:
                        yield pipe.take()
            yield pipe.take()
    yield pipe.take()


def pull_audit(storage: Storage, job_id: str, reports: Iterable[str]) -> tuple[Path, Path]:
    """The job's folder and its artifacts folder, with the named top-level files and every
    artifact brought up to date (another machine's files, with an S3 store)."""
    job_dir, root = storage.job_dir(job_id), storage.artifacts_dir(job_id)
    for name in reports:
        storage.pull(job_dir / name)
    storage.pull(root)
    return job_dir, root


def audit_files(storage: Storage, job_id: str, reports: Iterable[str]) -> list[tuple[str, Path]]:
    """The job's reports (top level) and artifacts (under ``artifacts/``), regular files
    only: a link is never followed out of the job's folder."""
    reports = list(reports)
    job_dir, root = pull_audit(storage, job_id, reports)
    files = [(name, job_dir / name) for name in reports]
    files += [(f"artifacts/{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*"))]
    return [(name, path) for name, path in files if path.is_file() and not path.is_symlink()]
