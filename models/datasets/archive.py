"""Safe reading of uploaded zip archives.

Everything an archive declares is checked before a byte is extracted: entry names that
escape the folder (zip slip: absolute paths, drive letters, ``..``), links, encrypted
entries, duplicates, the number of files and the total uncompressed size (zip bombs).
While reading, an entry that inflates past its declared size is refused too, so a
lying header cannot get around the size limit.
"""

from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from models.errors import InvalidDatasetError

_JUNK_DIRS = ("__MACOSX",)
_JUNK_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_LISTED = 50
_CHUNK = 1 << 20


def listed(names: list[str]) -> list[str]:
    """At most the first 50 names, for error details."""
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
        try:
            self._zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidDatasetError(f"the {label} is not a readable zip file ({exc})") from exc
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
                f"{entry.path}: corrupt archive entry ({exc})", {"entry": entry.path}
            ) from exc
        return b"".join(chunks)

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
                f"{entry.path}: corrupt archive entry ({exc})", {"entry": entry.path}
            ) from exc
