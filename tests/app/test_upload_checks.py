"""Model upload checks run in their own bounded pool: a full pool answers 429 with
Retry-After while other routes keep answering, and no failure path leaves an upload file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.routes import models as model_routes
from app.core import registry
from tests.app.models_fixtures import MAX_MODEL_BYTES, Api, make_settings, new_tenant, open_client
from tests.models.model_files import card_dict, tiny_net, write_torchscript


@pytest.fixture
def small_pool(tmp_path: Path) -> Iterator[TestClient]:
    yield from open_client(make_settings(
        tmp_path / "data", model_check_workers=1, max_pending_model_checks=1
    ))


def _leftovers(data_dir: Path) -> list[Path]:
    uploads = data_dir / "uploads"
    return sorted(p for p in uploads.rglob("*") if p.is_file()) if uploads.exists() else []


def test_failed_uploads_leave_no_file(small_pool: TestClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    api = Api(small_pool, new_tenant(small_pool, "t"), data)
    good = write_torchscript(tiny_net(), tmp_path / "m.pt")
    cases = [
        api.upload(None, card_dict(), content=b"not a model at all"),  # refused by the check
        api.upload(good, "{not json"),  # a bad card, after the file was spooled
        api.upload(None, card_dict(), content=b"\0" * (MAX_MODEL_BYTES + 1)),  # over the limit
        api.upload(good, card_dict(labels=("a", "b", "c"))),  # outputs do not match the card
    ]
    assert [r.status_code for r in cases] == [422, 422, 413, 422]
    assert _leftovers(data) == []
    assert api.upload(good, card_dict()).status_code == 201
    assert _leftovers(data) == []


def test_a_full_check_pool_answers_429_and_other_routes_answer(
    small_pool: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    api = Api(small_pool, new_tenant(small_pool, "t"), data)
    good = write_torchscript(tiny_net(), tmp_path / "m.pt")
    release = threading.Event()
    entered = threading.Semaphore(0)
    original = registry.check_upload

    def slow_check(*args: Any, **kwargs: Any) -> Any:
        entered.release()
        release.wait(60)  # a hostile model's dry run that loops
        return original(*args, **kwargs)

    monkeypatch.setattr(model_routes, "check_upload", slow_check)
    results: list[int] = []

    def upload(name: str) -> None:
        results.append(api.upload(good, card_dict(name=name)).status_code)

    running = threading.Thread(target=upload, args=("first",))
    running.start()
    assert entered.acquire(timeout=60)  # the one worker is busy
    waiting = threading.Thread(target=upload, args=("second",))
    waiting.start()
    pool = small_pool.app.state.robustdx.extras["model_checks"]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while pool.admitted < 2:  # the second upload waits for the one worker
        assert time.monotonic() < deadline
        time.sleep(0.01)
    refused = api.upload(good, card_dict(name="third"))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    assert small_pool.get("/health/live").json() == {"status": "ok"}
    assert small_pool.get("/v1/models", headers=api.auth).status_code == 200
    release.set()
    running.join()
    waiting.join()
    assert sorted(results) == [201, 201]
    assert _leftovers(data) == []


def test_health_live_answers_with_the_request_thread_pool_exhausted(
    small_pool: TestClient,
) -> None:
    import anyio
    import anyio.to_thread

    release = threading.Event()

    async def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    assert small_pool.portal is not None
    limiter_total = int(small_pool.portal.call(tokens))
    # Every thread of anyio's default pool blocked, as forty slow synchronous requests would.
    async def block() -> None:
        await anyio.to_thread.run_sync(release.wait)

    portal = small_pool.portal
    assert portal is not None
    futures = [portal.start_task_soon(block) for _ in range(limiter_total)]

    async def borrowed() -> float:
        return anyio.to_thread.current_default_thread_limiter().borrowed_tokens

    try:
        deadline = time.monotonic() + 60
        while portal.call(borrowed) < limiter_total:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert small_pool.get("/health/live").json() == {"status": "ok"}
    finally:
        release.set()
        for future in futures:
            future.result(timeout=60)


def test_predict_files_are_spooled_and_removed_on_every_path(
    small_pool: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.api.services import predictions
    from tests.app.models_fixtures import MAX_FILES, MAX_IMAGE_BYTES, png_bytes

    spooled: list[bool] = []
    original = predictions.decode_uploads

    def checking(parts: Any, *args: Any) -> Any:
        # Every part is a file on disk when decoding starts, none held in memory.
        spooled.extend(p.data is None and p.path is not None and p.path.is_file() for p in parts)
        return original(parts, *args)

    monkeypatch.setattr(predictions, "decode_uploads", checking)
    data = tmp_path / "data"
    api = Api(small_pool, new_tenant(small_pool, "t"), data)
    model_id = api.register(write_torchscript(tiny_net(), tmp_path / "m.pt"), card_dict())["id"]
    statuses = [
        api.predict(model_id, ("bad.png", b"not an image")).status_code,
        api.predict(model_id, ("big.png", b"\x89PNG" + b"\0" * MAX_IMAGE_BYTES)).status_code,
        api.predict(model_id, *[(f"{i}.png", png_bytes(i)) for i in range(MAX_FILES + 1)])
        .status_code,
        api.predict(model_id, ("x.png", png_bytes()), defense="smoothing", n=0).status_code,
        api.predict(model_id, ("ok.png", png_bytes())).status_code,
        api.predict(model_id, ("a.png", png_bytes()), ("b.png", png_bytes(1))).status_code,
    ]
    assert statuses == [415, 413, 422, 422, 200, 200]
    assert spooled == [True] * 4  # bad.png, ok.png, a.png, b.png reached the decoder
    assert _leftovers(data) == []


def test_one_tenants_slow_decodes_leave_threads_for_the_others(
    small_pool: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant A's requests stuck decoding (hostile images) hold at most its own share of
    threads: with a pool of 6 threads and 8 of A's predicts stuck, B is answered."""
    import anyio.to_thread

    from app.api.services import predictions
    from tests.app.models_fixtures import png_bytes

    a = Api(small_pool, new_tenant(small_pool, "a"), tmp_path / "data")
    b = Api(small_pool, new_tenant(small_pool, "b"), tmp_path / "data")
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    model_a, model_b = (t.register(path, card_dict())["id"] for t in (a, b))
    release = threading.Event()
    stuck = threading.Semaphore(0)
    original = predictions.decode_uploads

    def decode(parts: Any, *args: Any) -> Any:
        if parts[0].filename.startswith("A-"):
            stuck.release()
            release.wait(60)
        return original(parts, *args)

    monkeypatch.setattr(predictions, "decode_uploads", decode)
    portal = small_pool.portal
    assert portal is not None

    async def shrink() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 6

    portal.call(shrink)
    statuses: list[int] = []

    def attack(i: int) -> None:
        statuses.append(a.predict(model_a, (f"A-{i}.png", png_bytes(i))).status_code)

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for _ in range(2):  # A's two decoding threads are taken (its share)
        assert stuck.acquire(timeout=60)
    try:
        assert b.predict(model_b, ("b.png", png_bytes(1))).status_code == 200
        assert small_pool.get("/health/live").status_code == 200
        assert not stuck.acquire(timeout=0.2)  # A never got a third decoding thread
    finally:
        release.set()
        for t in threads:
            t.join()
    assert statuses == [200] * 8
