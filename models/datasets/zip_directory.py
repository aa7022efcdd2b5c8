"""A zip's central directory, checked from the raw bytes before :mod:`zipfile` reads it.

:class:`zipfile.ZipFile` loads every central-directory record into memory when it opens
a file, whatever the count: a 112 MiB upload listing 2M entries costs ~1 GiB before any
limit can be checked. :func:`check_directory` reads the end-of-central-directory record
(APPNOTE 4.3.16, and the zip64 record 4.3.14 when the 16/32-bit fields overflow), refuses
a declared entry count over the limit or a directory larger than the limit allows, then
walks the records themselves (46-byte headers, names skipped by their lengths) counting
no further than the limit, since a lying count in the end record would not stop
:mod:`zipfile`. Nothing is kept in memory but one header at a time.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from models.errors import InvalidDatasetError

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_RECORD = b"PK\x01\x02"
_EOCD_SIZE = 22
_MAX_COMMENT = 65535
_RECORD_SIZE = 46
#: Directory bytes allowed per file, on average: a record is 46 bytes plus its name (a
#: dataset's names are tens of bytes) and extra fields; 1 KiB leaves room for long paths.
BYTES_PER_ENTRY = 1024
#: Directory bytes allowed whatever the count (junk entries, folders, label files).
BASE_DIRECTORY_BYTES = 16 * 1024**2


def _refuse(label: str, why: str, **details: object) -> InvalidDatasetError:
    return InvalidDatasetError(f"the {label} {why}", dict(details))


def _end_record(fh: BinaryIO, size: int, label: str) -> tuple[int, int, int]:
    """``(declared entries, directory size, directory start)`` from the end records."""
    tail_len = min(size, _EOCD_SIZE + _MAX_COMMENT)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        raise _refuse(label, "is not a readable zip file (no end of central directory record)")
    eocd_pos = size - tail_len + at
    _, _, _, _, entries, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", tail[at : at + 22])
    if entries != 0xFFFF and cd_size != 0xFFFFFFFF and cd_offset != 0xFFFFFFFF:
        # zipfile reads the directory just before the end record (it allows data
        # prepended to the archive), so that is what is walked here too.
        return entries, cd_size, eocd_pos - cd_size
    if eocd_pos < 20:
        raise _refuse(label, "is not a readable zip file (no zip64 end record)")
    fh.seek(eocd_pos - 20)
    locator = fh.read(20)
    if locator[:4] != _ZIP64_LOCATOR:
        raise _refuse(label, "is not a readable zip file (no zip64 end record)")
    z64_pos = eocd_pos - 20 - 56
    if z64_pos < 0:
        raise _refuse(label, "is not a readable zip file (no zip64 end record)")
    fh.seek(z64_pos)
    record = fh.read(56)
    if record[:4] != _ZIP64_EOCD:
        raise _refuse(label, "is not a readable zip file (no zip64 end record)")
    entries, cd_size, _ = struct.unpack("<QQQ", record[32:56])
    return entries, cd_size, z64_pos - cd_size


def check_directory(path: Path, max_files: int, label: str = "archive") -> int:
    """Refuse a zip whose central directory holds more than ``max_files`` records (files,
    folders and junk alike) or more bytes than they could need; return the record count.

    Raises:
        InvalidDatasetError: not a zip, too many entries (declared or found), or a
            directory too large.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        declared, cd_size, start = _end_record(fh, size, label)
        if declared > max_files:
            raise _refuse(
                label,
                f"lists {declared} entries, more than the limit of {max_files}",
                files=declared,
                max_files=max_files,
            )
        cap = BASE_DIRECTORY_BYTES + BYTES_PER_ENTRY * max_files
        if cd_size > cap or start < 0:
            raise _refuse(
                label,
                f"has a central directory of {cd_size} bytes, more than {max_files} entries need",
                directory_bytes=cd_size,
                max_directory_bytes=cap,
            )
        return _walk(fh, start, cd_size, max_files, label)


def _walk(fh: BinaryIO, start: int, cd_size: int, max_files: int, label: str) -> int:
    fh.seek(start)
    count, pos, end = 0, start, start + cd_size
    while pos + _RECORD_SIZE <= end:
        header = fh.read(_RECORD_SIZE)
        if header[:4] != _RECORD:
            break  # zipfile stops at the first non-record too
        name_len, extra_len, comment_len = struct.unpack("<3H", header[28:34])
        count += 1
        if count > max_files:
            raise _refuse(
                label,
                f"has more than {max_files} entries, the limit",
                max_files=max_files,
            )
        skip = name_len + extra_len + comment_len
        fh.seek(skip, 1)
        pos += _RECORD_SIZE + skip
    return count
