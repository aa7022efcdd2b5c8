"""Atomic local writes, shared by every storage backend and by writers of job files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write to a temporary file beside ``path`` and rename it, so readers never see half a
    file. ``fsync=False`` skips the flush to disk, for files that are cheap to make again
    (per-image artifacts: 0.10 instead of 0.44 ms per file, measured here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
