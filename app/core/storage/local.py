"""The artifact store's interface, and its default backend: one local folder (a mounted
volume in production).

Layout under the root::

    models/{id}/model.{ext}, card.json
    datasets/{id}/manifest.json, files...
    jobs/{id}/shards/{index}.npz, state/, artifacts/, report.json, report.html, report.xml

Every process works on local paths under ``root``. A backend that keeps the artifacts
elsewhere (:class:`app.core.storage.s3.S3Storage`) uses ``root`` as its cache and
overrides the synchronisation hooks below; here they do nothing, because the folder *is*
the store:

- :meth:`Storage.model_dir` and :meth:`Storage.dataset_dir` return complete folders
  (immutable once registered, so a remote backend fetches them once per process);
- :meth:`Storage.pull` brings a job's sub-folder or file up to date before it is read;
- :meth:`Storage.publish` makes local files visible to every other process;
- :meth:`Storage.write` is :func:`write_atomic` followed by ``publish``;
- :meth:`Storage.list_files` lists what the store holds under a folder without fetching it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from app.core.storage.files import write_atomic


class Storage:
    """A local folder as the artifact store (the default backend)."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model_dir(self, model_id: str) -> Path:
        return self._dir("models", model_id)

    def dataset_dir(self, dataset_id: str) -> Path:
        return self._dir("datasets", dataset_id)

    def job_dir(self, job_id: str) -> Path:
        return self._dir("jobs", job_id)

    def artifacts_dir(self, job_id: str) -> Path:
        return self._dir("jobs", job_id, "artifacts")

    def path(self, *parts: str) -> Path:
        """A path under ``root``, neither created nor fetched (to delete, or to name)."""
        return self.root.joinpath(*parts)

    def uploads_dir(self) -> Path:
        """Scratch space of this process; never shared with other machines."""
        return self._dir("uploads")

    def new_upload_path(self, suffix: str = "") -> Path:
        return self.uploads_dir() / f"{uuid.uuid4().hex}{suffix}"

    # -- synchronisation hooks (no-ops for a local folder) ------------------------------
    def pull(self, path: Path, skip: tuple[str, ...] = ()) -> Path:
        """Bring the file or folder ``path`` (under ``root``) up to date, but for the keys
        that start with one of ``skip``; return it."""
        return path

    def publish(self, path: Path) -> None:
        """Make the file or folder ``path`` (under ``root``) visible to other processes."""

    def write(self, path: Path, data: bytes, *, fsync: bool = True) -> None:
        """Write ``path`` atomically and publish it."""
        write_atomic(path, data, fsync=fsync)
        self.publish(path)

    def list_files(self, folder: Path) -> list[tuple[str, int]]:
        """``(relative name, size in bytes)`` of every file the store holds under ``folder``."""
        if not folder.is_dir():
            return []
        return [(p.relative_to(folder).as_posix(), p.stat().st_size)
                for p in sorted(folder.rglob("*")) if p.is_file() and not _hidden(p, folder)]

    def remove(self, path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def ping(self) -> None:
        """Really write and read back a file, so readiness means a usable store."""
        probe = self._dir("health") / f"probe-{os.getpid()}"
        write_atomic(probe, b"ok")
        if probe.read_bytes() != b"ok":
            raise OSError("storage probe read back different bytes")
        probe.unlink(missing_ok=True)

    # -- helpers for backends --------------------------------------------------------------
    def key_of(self, path: Path) -> str:
        """The store-relative key of a path under ``root`` (``jobs/abc/report.json``).

        Raises:
            ValueError: the path is outside the store.
        """
        return path.resolve().relative_to(self.root).as_posix()


def _hidden(path: Path, folder: Path) -> bool:
    """Temporary files of atomic writes (``.name.xxxx``) are not artifacts."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


LocalStorage = Storage
