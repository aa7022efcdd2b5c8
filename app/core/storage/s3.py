"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph RGW) as the artifact store.

Each process keeps a local cache folder (its ``data_dir``) in the layout of
:class:`app.core.storage.local.Storage` and synchronises it with the bucket at stage
boundaries, so the code that reads and writes artifacts keeps working on local paths and
a worker on another machine needs no shared disk:

- registered models and datasets never change, so :meth:`S3Storage.model_dir` and
  :meth:`S3Storage.dataset_dir` download them once per process (a dataset without its
  tensor caches: a job pulls the one of its model's input);
- job folders change while a job runs: tasks :meth:`~S3Storage.pull` what they are about
  to read (fitted state, shards, checkpoints) and :meth:`~S3Storage.publish` what they
  wrote (in the order it was written, so a commit marker written last lands last).

A cached file is current when its size and modification time equal the object's size and
``LastModified``: downloads and uploads set the local time to the object's, so one rule
serves both directions. Readers never see half an object: S3 makes an object visible only
when its ``PutObject`` or multipart upload completes, and downloads land in a temporary
file that is renamed into place. Objects above ``multipart_bytes`` travel in parts of that
size, several at once (boto3's transfer manager), in both directions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from app.core.storage.local import Storage, _hidden
from models.datasets.tensor_cache import CACHE_DIR as DATASET_CACHES
from models.errors import ServiceUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "some/prefix/" (always ending in "/")

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """``s3://bucket`` or ``s3://bucket/prefix``.

        Raises:
            ValueError: not an ``s3://`` URL, or no bucket.
        """
        if not url.startswith("s3://"):
            raise ValueError("the storage URL must look like s3://bucket/prefix")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError("the storage URL names no bucket")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")


@dataclass(frozen=True)
class _Object:
    size: int
    mtime: int  # LastModified, whole seconds since the epoch
    etag: str


def _safe_relative(name: str) -> bool:
    """A key from the bucket must map to a path inside the cache (no ``..``, no root)."""
    parts = name.split("/")
    return bool(name) and all(part not in ("", ".", "..") for part in parts)


@contextlib.contextmanager
def _boundary(what: str, key: str) -> Iterator[None]:
    """boto3's errors become a :class:`ServiceUnavailableError` naming the store-relative
    key and the S3 error code, never a local path (s3transfer's messages carry them)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ServiceUnavailableError(f"the artifact store failed to {what} {key!r}: {code}",
                                      {"key": key, "code": code}) from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise ServiceUnavailableError(
            f"the artifact store failed to {what} {key!r}: {type(exc).__name__}",
            {"key": key}) from exc


class S3Storage(Storage):
    """The artifact store in an S3 bucket, with ``root`` as this process's cache."""

    backend = "s3"

    def __init__(self, root: Path, location: S3Location, client: Any, *,
                 multipart_bytes: int = 64 * 1024**2, threads: int = 8) -> None:
        super().__init__(root)
        from boto3.s3.transfer import TransferConfig

        self.location = location
        self.client = client
        self.threads = threads
        self.transfer = TransferConfig(multipart_threshold=multipart_bytes,
                                       multipart_chunksize=multipart_bytes,
                                       max_concurrency=threads)
        self._complete: set[str] = set()
        self._etags: dict[str, str] = {}

    # -- keys and listings --------------------------------------------------------------
    def _remote(self, key: str) -> str:
        return f"{self.location.prefix}{key}"

    def _list(self, key: str) -> dict[str, _Object]:
        """Objects at ``key`` itself or under ``key/``, by store-relative key."""
        found: dict[str, _Object] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        skip = len(self.location.prefix)
        with _boundary("list", key):
            pages = list(paginator.paginate(Bucket=self.location.bucket,
                                            Prefix=self._remote(key)))
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][skip:]
                if name != key and not name.startswith(f"{key}/"):
                    continue  # "jobs/ab" must not match "jobs/abc/..."
                found[name] = _Object(int(obj["Size"]), int(obj["LastModified"].timestamp()),
                                      str(obj.get("ETag", "")))
        return found

    def _current(self, path: Path, obj: _Object) -> bool:
        """Size and time match; and the ETag too where this process knows the file's (an
        object rewritten within the same second at the same size differs only there)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        known = self._etags.get(self.key_of(path))
        return (st.st_size == obj.size and st.st_mtime == obj.mtime
                and (known is None or known == obj.etag))

    # -- transfers ------------------------------------------------------------------------
    def _download(self, key: str, obj: _Object) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with _boundary("download", key):
                self.client.download_file(self.location.bucket, self._remote(key), str(tmp),
                                          Config=self.transfer)
            os.utime(tmp, (obj.mtime, obj.mtime))
            os.replace(tmp, dest)
            self._etags[key] = obj.etag
        finally:
            tmp.unlink(missing_ok=True)

    def _upload(self, path: Path) -> str:
        key = self.key_of(path)
        with _boundary("upload", key):
            self.client.upload_file(str(path), self.location.bucket, self._remote(key),
                                    Config=self.transfer)
        return key

    def _run(self, jobs: list[Any], fn: Any) -> list[Any]:
        if len(jobs) <= 1:
            return [fn(*job) for job in jobs]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            return list(pool.map(lambda job: fn(*job), jobs))

    def _stamp(self, key: str, uploaded: list[str]) -> None:
        """Set the cached files' times to the uploaded objects' ``LastModified``."""
        listing = self._list(key)
        for name in uploaded:
            obj, path = listing.get(name), self.root / name
            if obj is not None and path.exists() and path.stat().st_size == obj.size:
                os.utime(path, (obj.mtime, obj.mtime))
                self._etags[name] = obj.etag

    # -- the interface ------------------------------------------------------------------
    def model_dir(self, model_id: str) -> Path:
        return self._immutable("models", model_id)

    def dataset_dir(self, dataset_id: str) -> Path:
        return self._immutable("datasets", dataset_id)

    def _immutable(self, kind: str, item_id: str) -> Path:
        folder = self._dir(kind, item_id)
        key = f"{kind}/{item_id}"
        if key not in self._complete:
            # A dataset's tensor caches (one per model input) are pulled by the job that
            # reads one (``pull(cache folder)``), not all of them with the dataset.
            self.pull(folder, skip=(f"{key}/{DATASET_CACHES}/",) if kind == "datasets" else ())
            self._complete.add(key)
        return folder

    def pull(self, path: Path, skip: tuple[str, ...] = ()) -> Path:
        key = self.key_of(path)
        stale = [(name, obj) for name, obj in sorted(self._list(key).items())
                 if _safe_relative(name) and not name.startswith(skip)
                 and not self._current(self.root / name, obj)]
        self._run(stale, self._download)
        if stale:
            logger.debug("pulled %d object(s) under %s", len(stale), key)
        return path

    def publish(self, path: Path) -> None:
        key = self.key_of(path)
        if path.is_file():
            self._stamp(key, [self._upload(path)])
            return
        if not path.is_dir():
            return
        remote = self._list(key)
        files = [p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)]
        changed = [p for p in files
                   if not (self.key_of(p) in remote and self._current(p, remote[self.key_of(p)]))]
        # Oldest first: a commit marker (a checkpoint's state.json) is written last.
        changed.sort(key=lambda p: p.stat().st_mtime_ns)
        if not changed:
            return
        markers = changed[-1:]
        uploaded = self._run([(p,) for p in changed[:-1]], self._upload)
        uploaded += [self._upload(p) for p in markers]
        self._stamp(key, uploaded)

    def list_files(self, folder: Path) -> list[tuple[str, int]]:
        key = self.key_of(folder)
        return [(name[len(key) + 1:], obj.size) for name, obj in sorted(self._list(key).items())
                if name.startswith(f"{key}/") and _safe_relative(name)
                and not any(part.startswith(".") for part in PurePosixPath(name).parts)]

    def remove(self, path: Path) -> None:
        key = self.key_of(path)
        names = list(self._list(key))
        for start in range(0, len(names), 1000):  # DeleteObjects takes up to 1000 keys
            batch = [{"Key": self._remote(n)} for n in names[start:start + 1000]]
            with _boundary("delete", key):
                self.client.delete_objects(Bucket=self.location.bucket,
                                           Delete={"Objects": batch, "Quiet": True})
        self._complete.discard(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (a fresh compose or test deployment)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            self.client.create_bucket(Bucket=self.location.bucket)
            logger.info("created bucket %s", self.location.bucket)

    def ping(self) -> None:
        """The bucket answers, and an object written there reads back the same."""
        super().ping()  # the cache folder must be writable too
        key = self._remote(f"health/probe-{os.getpid()}")
        bucket = self.location.bucket
        self.client.head_bucket(Bucket=bucket)
        self.client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        self.client.delete_object(Bucket=bucket, Key=key)
        if body != b"ok":
            raise OSError("storage probe read back different bytes")


def s3_client(endpoint_url: str | None, region: str, access_key: str | None,
              secret_key: str | None, *, timeout: float = 30.0) -> Any:
    """A boto3 S3 client; path-style addressing, which S3-compatible servers all accept."""
    import boto3
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"}, connect_timeout=timeout,
                    read_timeout=timeout, retries={"max_attempts": 5, "mode": "standard"},
                    signature_version="s3v4")
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, config=config,
    )
