"""The S3 backend against a real S3 server (SeaweedFS started by the tests)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from app.core.storage import S3Location, S3Storage
from tests.support.seaweed import SeaweedS3

MiB = 1024**2


class CountingClient:
    """The real boto3 client, counting the calls this test cares about."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


@pytest.fixture
def bucket(seaweed: SeaweedS3) -> str:
    """The session's bucket; every test gets a prefix of its own ("pre/" below it)."""
    return seaweed.bucket


@pytest.fixture
def prefix(seaweed: SeaweedS3) -> str:
    return seaweed.new_prefix()


@pytest.fixture
def store(seaweed: SeaweedS3, bucket: str, prefix: str) -> Any:
    def make(root: Path, **kwargs: Any) -> S3Storage:
        return S3Storage(root, S3Location(bucket, prefix), CountingClient(seaweed.client()),
                         **kwargs)
    return make


def _keys(seaweed: SeaweedS3, bucket: str, prefix: str) -> list[str]:
    listed = seaweed.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in listed.get("Contents", []))


def test_a_second_machine_sees_what_the_first_published(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a")
    b = store(tmp_path / "b")
    job = a.job_dir("j1")
    a.write(job / "shards" / "00000.npz", b"shard zero")
    (job / "state").mkdir()
    (job / "state" / "gap.safetensors").write_bytes(b"fitted")
    a.publish(job / "state")
    assert _keys(seaweed, bucket, prefix) == ["jobs/j1/shards/00000.npz",
                                              "jobs/j1/state/gap.safetensors"]
    assert not (tmp_path / "b" / "jobs" / "j1").exists()
    pulled = b.pull(b.job_dir("j1"))
    assert (pulled / "shards" / "00000.npz").read_bytes() == b"shard zero"
    assert (pulled / "state" / "gap.safetensors").read_bytes() == b"fitted"
    assert b.list_files(b.job_dir("j1")) == [("shards/00000.npz", 10),
                                             ("state/gap.safetensors", 6)]
    before = b.client.calls.get("download_file", 0)
    b.pull(b.job_dir("j1"))  # already current: nothing travels again
    assert b.client.calls.get("download_file", 0) == before
    uploads = a.client.calls.get("upload_file", 0)
    a.publish(job)  # nothing changed since it was published
    assert a.client.calls.get("upload_file", 0) == uploads


def test_a_rewrite_of_the_same_size_in_the_same_second_is_seen(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a")
    b = store(tmp_path / "b")
    path = a.job_dir("j") / "checkpoints" / "state.json"
    a.write(path, b'{"epoch": 1}')
    b.pull(b.job_dir("j"))
    a.write(path, b'{"epoch": 2}')
    b.pull(b.job_dir("j"))
    assert (b.job_dir("j") / "checkpoints" / "state.json").read_bytes() == b'{"epoch": 2}'


def test_large_objects_travel_in_parts_and_arrive_whole(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a", multipart_bytes=5 * MiB)
    b = store(tmp_path / "b", multipart_bytes=5 * MiB)
    data = os.urandom(12 * MiB)
    folder = a.model_dir("m1")
    (folder / "model.safetensors").write_bytes(data)
    a.publish(folder)
    head = seaweed.client().head_object(Bucket=bucket, Key=f"{prefix}models/m1/model.safetensors")
    assert head["ContentLength"] == 12 * MiB
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    fetched = b.model_dir("m1") / "model.safetensors"
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert [p.name for p in fetched.parent.iterdir()] == ["model.safetensors"]


def test_models_and_datasets_are_fetched_once_per_process(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a")
    b = store(tmp_path / "b")
    a.write(a.dataset_dir("d1") / "manifest.json", b"[]")
    assert (b.dataset_dir("d1") / "manifest.json").read_bytes() == b"[]"
    listings = b.client.calls["get_paginator"]
    b.dataset_dir("d1")
    b.dataset_dir("d1")
    assert b.client.calls["get_paginator"] == listings


def test_an_interrupted_download_leaves_no_half_file(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a")
    a.write(a.job_dir("j") / "report.json", b"x" * 1000)
    b = store(tmp_path / "b")
    real = b.client._client

    def broken(bucket_name: str, key: str, filename: str, **kwargs: Any) -> None:
        Path(filename).write_bytes(b"x" * 10)
        raise ConnectionError("connection reset")

    b.client._client = type("Broken", (), {"download_file": staticmethod(broken),
                                           "get_paginator": real.get_paginator})()
    with pytest.raises(ConnectionError):
        b.pull(b.job_dir("j"))
    assert list(b.job_dir("j").iterdir()) == []


@pytest.mark.parametrize(("name", "safe"), [
    ("jobs/j/ok.json", True),
    ("jobs/j/../../../escaped", False),  # AWS S3 accepts such keys; SeaweedFS refuses them
    ("/etc/passwd", False),
    ("jobs//j", False),
    ("", False),
])
def test_keys_that_would_escape_the_cache_are_never_fetched(name: str, safe: bool) -> None:
    from app.core.storage.s3 import _safe_relative

    assert _safe_relative(name) is safe


def test_a_prefix_does_not_match_a_longer_id(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a")
    a.write(a.job_dir("abc") / "report.json", b"other job")
    assert a.list_files(a.job_dir("ab")) == []


def test_remove_deletes_the_objects(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    a = store(tmp_path / "a")
    for i in range(3):
        a.write(a.model_dir("m") / f"f{i}", b"w")
    a.write(a.model_dir("keep") / "f", b"w")
    a.remove(a.path("models", "m"))
    assert _keys(seaweed, bucket, prefix) == ["models/keep/f"]
    assert not (tmp_path / "a" / "models" / "m").exists()
    b = store(tmp_path / "b")
    assert list(b.model_dir("m").iterdir()) == []


def test_ping_checks_the_bucket(
    store: Any, seaweed: SeaweedS3, bucket: str, prefix: str, tmp_path: Path
) -> None:
    store(tmp_path / "a").ping()
    missing = S3Storage(tmp_path / "b", S3Location("robustdx-no-such-bucket", ""),
                        seaweed.client())
    with pytest.raises(Exception, match=r"404|Not Found|NoSuchBucket"):
        missing.ping()


def test_ensure_bucket_creates_a_missing_bucket(seaweed: SeaweedS3, tmp_path: Path) -> None:
    import uuid

    name = f"robustdx-{uuid.uuid4().hex[:10]}"
    store = S3Storage(tmp_path, S3Location(name, "p/"), seaweed.client())
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.ping()
    store.write(store.job_dir("j") / "a", b"1")
    assert store.list_files(store.job_dir("j")) == [("a", 1)]


def test_store_failures_name_the_key_never_a_local_path(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    from models.errors import ServiceUnavailableError

    broken = S3Storage(tmp_path / "cache", S3Location("ab", ""), seaweed.client())  # invalid
    path = broken.job_dir("j") / "report.json"
    with pytest.raises(ServiceUnavailableError) as failed:
        broken.write(path, b"{}")
    assert "jobs/j/report.json" in failed.value.message
    assert str(tmp_path) not in failed.value.message
