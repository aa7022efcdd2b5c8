"""Safe reading of uploaded zip archives.

Everything an archive declares is checked before a byte is extracted: first the number
of central-directory records, from the raw end record and directory, before
:mod:`zipfile` loads them (:mod:`models.datasets.zip_directory`); then entry names that
escape the folder (zip slip: absolute paths, drive letters, ``..``), links, encrypted
entries, duplicates (also when they differ only in case), paths that clash (a file
``a/1.png`` and a file under ``a/1.png/``), names the filesystem cannot hold (a component
over 255 bytes, a path over 1024 bytes), the number of files and the total uncompressed
size (zip bombs). While reading, an entry that inflates past its declared size is refused
too, so a lying header cannot get around the size limit.
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TypeVar

from models.datasets.zip_directory import check_directory
from models.errors import InvalidDatasetError

_JUNK_DIRS = ("__MACOSX",)
_JUNK_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_LISTED = 50
T = TypeVar("T")
_CHUNK = 1 << 20
#: NAME_MAX of every common filesystem (ext4, XFS, btrfs, APFS, NTFS): bytes per component.
MAX_COMPONENT_BYTES = 255
#: The stored path is this relative path under the server's dataset folder, and the
#: whole must stay under PATH_MAX (4096); 1024 bytes leaves the server's prefix room.
MAX_PATH_BYTES = 1024
#: Directory records allowed per file limit: folders and junk entries have records too.
RECORDS_PER_FILE = 2
EXTRA_RECORDS = 1024


def reason(exc: BaseException) -> str:
    """An exception's text for a message when it can only be about the archive (zip and
    zlib errors name entries, never files of the server); otherwise only its type, since
    an ``OSError`` names the server path it failed on."""
    if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError)):
        return str(exc)
    return type(exc).__name__


def listed(names: list[T]) -> list[T]:
    """At most the first 50 names (or records), for error details."""
    return names[:_MAX_LISTED]


@dataclass(frozen=True)
class Entry:
    """A regular file in the archive. ``path`` is normalized (``/``-separated, no ``.``)."""

    path: str
    info: zipfile.ZipInfo

    @property
    def size(self) -> int:
        return int(self.info.file_size)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix.lower()


def _normalized(raw: str) -> str | None:
    """The entry's safe relative path, or ``None`` when it would escape the folder."""
    name = raw.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or _DRIVE.match(name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return (
        parts[0] in _JUNK_DIRS
        or parts[-1] in _JUNK_FILES
        or parts[-1].startswith("._")
        or any(p.startswith(".") for p in parts)
    )


class _CappedReader(io.RawIOBase):
    """A raw stream over an archive entry that refuses to give more than ``cap`` bytes
    and turns the archive's read errors (CRC, zlib) into refusals."""

    def __init__(self, raw: IO[bytes], cap: int, path: str) -> None:
        self._raw = raw
        self._cap = cap
        self._path = path
        self._got = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        except Exception as exc:  # BadZipFile (CRC), zlib.error, OSError, EOFError
            raise InvalidDatasetError(
                f"{self._path}: corrupt archive entry ({reason(exc)})", {"entry": self._path}
            ) from exc
        self._got += n
        if self._got > self._cap:
            raise InvalidDatasetError(
                f"{self._path}: more than {self._cap} bytes (the limit, or its declared size)",
                {"entry": self._path, "limit": self._cap},
            )
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _too_long(path: str) -> bool:
    encoded = path.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        return True
    return any(len(part) > MAX_COMPONENT_BYTES for part in encoded.split(b"/"))


class SafeArchive:
    """A zip archive whose entries passed the safety checks.

    Raises :class:`InvalidDatasetError` on open when the file is not a zip, or when any
    check fails: ``details`` names the offending entries.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_files: int,
        max_uncompressed_bytes: int,
        label: str = "archive",
    ) -> None:
        self.label = label
        check_directory(path, RECORDS_PER_FILE * max_files + EXTRA_RECORDS, label)
        try:
            self._zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidDatasetError(
                f"the {label} is not a readable zip file ({reason(exc)})"
            ) from exc
        try:
            self.entries = self._check(max_files, max_uncompressed_bytes)
        except BaseException:
            self._zf.close()
            raise
        self.by_path = {e.path: e for e in self.entries}

    def __enter__(self) -> SafeArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()

    def _check(self, max_files: int, max_uncompressed: int) -> list[Entry]:
        infos = self._zf.infolist()
        unsafe, links, encrypted, duplicates = [], [], [], []
        seen: set[str] = set()
        dirs: set[str] = set()
        entries: list[Entry] = []
        for info in infos:
            path = _normalized(info.filename)
            if path is None:
                unsafe.append(info.filename)
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                links.append(info.filename)
                continue
            if info.is_dir() or not path:
                if path:
                    dirs.add(path)
                continue
            if info.flag_bits & 0x1:
                encrypted.append(info.filename)
                continue
            if _is_junk(path):
                continue
            if path in seen:
                duplicates.append(path)
                continue
            seen.add(path)
            entries.append(Entry(path, info))
        if unsafe:
            raise InvalidDatasetError(
                f"the {self.label} has {len(unsafe)} entries whose paths escape the "
                "extraction folder (zip slip); nothing was extracted",
                {"entries": listed(unsafe)},
            )
        if links:
            raise InvalidDatasetError(
                f"the {self.label} contains symbolic links, which are not allowed",
                {"entries": listed(links)},
            )
        if encrypted:
            raise InvalidDatasetError(
                f"the {self.label} has encrypted entries, which cannot be read",
                {"entries": listed(encrypted)},
            )
        if duplicates:
            raise InvalidDatasetError(
                f"the {self.label} has entries with the same path",
                {"entries": listed(duplicates)},
            )
        self._check_names([e.path for e in entries], dirs)
        if len(entries) > max_files:
            raise InvalidDatasetError(
                f"the {self.label} has {len(entries)} files, more than the limit of {max_files}",
                {"files": len(entries), "max_files": max_files},
            )
        total = sum(e.size for e in entries)
        if total > max_uncompressed:
            raise InvalidDatasetError(
                f"the {self.label} would inflate to {total} bytes, more than the limit of "
                f"{max_uncompressed} bytes (zip bomb?); nothing was extracted",
                {"uncompressed_bytes": total, "max_uncompressed_bytes": max_uncompressed},
            )
        return entries

    def _check_names(self, paths: list[str], dirs: set[str]) -> None:
        """Refuse names the filesystem cannot hold, and paths that clash with each other
        (a file that is also a folder of another entry; names equal but for case, which
        are one file on case-insensitive filesystems and ambiguous to a CSV anyway)."""
        too_long = [p for p in paths if _too_long(p)]
        if too_long:
            raise InvalidDatasetError(
                f"the {self.label} has {len(too_long)} entries whose names are too long for "
                f"the filesystem (over {MAX_COMPONENT_BYTES} bytes per folder or file name, "
                f"or {MAX_PATH_BYTES} bytes per path)",
                {"entries": listed([p[:300] for p in too_long])},
            )
        folders = set(dirs)
        for p in paths:
            parts = p.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        clashes = sorted(p for p in paths if p in folders)
        if clashes:
            raise InvalidDatasetError(
                f"the {self.label} has {len(clashes)} files whose paths are also folders of "
                "other entries",
                {"entries": listed(clashes)},
            )
        by_case: dict[str, str] = {}
        same_case: list[str] = []
        for p in paths:
            other = by_case.setdefault(p.casefold(), p)
            if other != p:
                same_case.append(f"{other} / {p}")
        if same_case:
            raise InvalidDatasetError(
                f"the {self.label} has entries whose paths differ only in case",
                {"entries": listed(same_case)},
            )

    def read(self, entry: Entry, limit: int | None = None) -> bytes:
        """The entry's bytes; refused when it holds more than it declares or ``limit``."""
        cap = entry.size if limit is None else min(entry.size, limit)
        if entry.size > cap:
            raise InvalidDatasetError(
                f"{entry.path}: {entry.size} bytes is over the limit of {cap} bytes",
                {"entry": entry.path, "bytes": entry.size, "limit": cap},
            )
        chunks: list[bytes] = []
        got = 0
        try:
            with self._zf.open(entry.info) as fh:
                while True:
                    chunk = fh.read(min(_CHUNK, cap + 1 - got))
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > cap:
                        raise InvalidDatasetError(
                            f"{entry.path}: inflates past its declared size of {entry.size} "
                            "bytes (zip bomb?)",
                            {"entry": entry.path},
                        )
                    chunks.append(chunk)
        except InvalidDatasetError:
            raise
        except Exception as exc:  # BadZipFile (CRC), zlib.error, OSError, EOFError
            raise InvalidDatasetError(
                f"{entry.path}: corrupt archive entry ({reason(exc)})", {"entry": entry.path}
            ) from exc
        return b"".join(chunks)

    @contextmanager
    def open_text(self, entry: Entry, limit: int) -> Iterator[io.TextIOWrapper]:
        """The entry as UTF-8 text (a BOM is skipped), read as a stream: reading past
        ``limit`` bytes, or past the entry's declared size, is refused."""
        if entry.size > limit:
            raise InvalidDatasetError(
                f"{entry.path}: {entry.size} bytes is over the limit of {limit} bytes",
                {"entry": entry.path, "bytes": entry.size, "limit": limit},
            )
        try:
            raw = self._zf.open(entry.info)
        except Exception as exc:
            raise InvalidDatasetError(
                f"{entry.path}: corrupt archive entry ({reason(exc)})", {"entry": entry.path}
            ) from exc
        capped = _CappedReader(raw, min(entry.size, limit), entry.path)
        text = io.TextIOWrapper(io.BufferedReader(capped), encoding="utf-8-sig", newline="")
        try:
            yield text
        finally:
            text.close()

    def copy_to(self, entry: Entry, dest: Path) -> None:
        """Stream the entry to ``dest`` with the same size checks as :meth:`read`."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        got = 0
        try:
            with self._zf.open(entry.info) as fh, dest.open("wb") as out:
                while True:
                    chunk = fh.read(_CHUNK)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > entry.size:
                        raise InvalidDatasetError(
                            f"{entry.path}: inflates past its declared size of {entry.size} "
                            "bytes (zip bomb?)",
                            {"entry": entry.path},
                        )
                    out.write(chunk)
        except InvalidDatasetError:
            raise
        except Exception as exc:  # BadZipFile (CRC), zlib.error, OSError, EOFError
            raise InvalidDatasetError(
                f"{entry.path}: corrupt archive entry ({reason(exc)})", {"entry": entry.path}
            ) from exc
