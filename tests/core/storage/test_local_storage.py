"""The local-folder backend: layout, atomic writes, listings and the no-op sync hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import Settings
from app.core.storage import LocalStorage, S3Storage, Storage, open_storage, write_atomic


def test_layout_and_listing(tmp_path: Path) -> None:
    store = Storage(tmp_path / "store")
    job = store.job_dir("j1")
    store.write(job / "report.json", b"{}")
    write_atomic(store.artifacts_dir("j1") / "adversarial" / "a.png", b"12345")
    (store.artifacts_dir("j1") / ".half.png.tmp").write_bytes(b"x")  # an unfinished write
    assert job == (tmp_path / "store" / "jobs" / "j1").resolve()
    assert store.list_files(store.artifacts_dir("j1")) == [("adversarial/a.png", 5)]
    assert store.pull(job / "report.json").read_bytes() == b"{}"
    assert store.key_of(job / "report.json") == "jobs/j1/report.json"
    with pytest.raises(ValueError, match="is not in the subpath"):
        store.key_of(tmp_path / "elsewhere")


def test_path_neither_creates_nor_fetches(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    path = store.path("models", "gone")
    assert path == tmp_path.resolve() / "models" / "gone"
    assert not path.exists()


def test_remove_file_and_folder(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    folder = store.model_dir("m")
    write_atomic(folder / "model.pt", b"w")
    store.remove(folder / "model.pt")
    assert not (folder / "model.pt").exists()
    store.remove(folder)
    assert not folder.exists()
    assert store.list_files(folder) == []


def test_write_atomic_leaves_nothing_when_the_write_fails(tmp_path: Path) -> None:
    class Exploding(bytes):
        pass

    target = tmp_path / "f.bin"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_ping_writes_and_cleans_up(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    store.ping()
    assert list((tmp_path / "health").iterdir()) == []


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    local = open_storage(Settings(data_dir=tmp_path / "a"))
    assert type(local) is LocalStorage
    assert open_storage(Settings(data_dir=tmp_path / "a")) is local
    remote = open_storage(Settings(data_dir=tmp_path / "b", storage_url="s3://bucket/pre/fix/",
                                   s3_endpoint_url="http://127.0.0.1:9"))
    assert isinstance(remote, S3Storage)
    assert (remote.location.bucket, remote.location.prefix) == ("bucket", "pre/fix/")


@pytest.mark.parametrize(("url", "message"), [
    ("http://bucket/x", "must look like s3://bucket/prefix"),
    ("s3:///x", "names no bucket"),
])
def test_bad_storage_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(storage_url=url)
