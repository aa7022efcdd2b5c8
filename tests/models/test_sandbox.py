"""Upload checks in a bounded pool of child processes, killed past their limits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from models.errors import (
    InvalidCardError,
    ModelLimitError,
    ServiceUnavailableError,
    UnsafeModelFileError,
)
from models.loading import check_model_file
from models.sandbox import CheckedUpload, SandboxLimits, SandboxPool, check_model_file_isolated
from tests.models.model_files import (
    make_card,
    tiny_net,
    write_allocating_torchscript,
    write_looping_torchscript,
    write_onnx,
    write_read_file_torchscript,
    write_torchscript,
)

GiB = 1 << 30


@pytest.fixture(scope="module")
def pool() -> SandboxPool:
    return SandboxPool(size=1)


def assert_checks_like_in_process(pool: SandboxPool, path: Path) -> CheckedUpload:
    """The sandboxed check gives what the in-process check gives (bar the timing)."""
    card = make_card()
    isolated = pool.check(path, card, SandboxLimits())
    direct = check_model_file(path, card, device="cpu")
    assert isolated.card == direct.card
    assert (isolated.sha256, isolated.size_bytes) == (direct.sha256, direct.size_bytes)
    assert (isolated.format, isolated.extension) == (direct.format, direct.extension)
    strip = ("dry_run_ms",)
    assert {k: v for k, v in isolated.info.items() if k not in strip} == {
        k: v for k, v in direct.loaded.info.items() if k not in strip
    }
    return isolated


def test_a_normal_model_checks_as_in_process(pool: SandboxPool, tmp_path: Path) -> None:
    for path in (
        write_torchscript(tiny_net(), tmp_path / "m.pt"),
        write_onnx(tiny_net(), tmp_path / "m.onnx"),
    ):
        checked = assert_checks_like_in_process(pool, path)
        assert checked.info["device"] == "cpu"


def test_a_looping_model_hits_the_cpu_limit_and_the_pool_recovers(
    pool: SandboxPool, tmp_path: Path
) -> None:
    path = write_looping_torchscript(tmp_path / "loop.pt", iterations=100_000_000)
    with pytest.raises(ModelLimitError, match="CPU-time limit of 1 s") as info:
        pool.check(path, make_card(), SandboxLimits(cpu_s=1, wall_s=120))
    assert info.value.details == {"limit": "cpu_time", "value": 1, "unit": "s"}
    assert_checks_like_in_process(pool, write_torchscript(tiny_net(), tmp_path / "ok.pt"))


def test_a_looping_model_hits_the_wall_limit(pool: SandboxPool, tmp_path: Path) -> None:
    path = write_looping_torchscript(tmp_path / "loop.pt", iterations=100_000_000)
    with pytest.raises(ModelLimitError, match=r"wall-time limit of 1\.5 s") as info:
        pool.check(path, make_card(), SandboxLimits(cpu_s=120, wall_s=1.5))
    assert info.value.details == {"limit": "wall_time", "value": 1.5, "unit": "s"}
    assert_checks_like_in_process(pool, write_torchscript(tiny_net(), tmp_path / "ok.pt"))


def test_a_model_allocating_past_the_memory_limit_is_refused(
    pool: SandboxPool, tmp_path: Path
) -> None:
    path = write_allocating_torchscript(tmp_path / "big.pt", elements=1 << 30)  # 4 GiB
    with pytest.raises(ModelLimitError, match="memory limit of 1 GiB") as info:
        pool.check(path, make_card(), SandboxLimits(memory_bytes=GiB))
    assert info.value.details == {"limit": "memory", "value": GiB, "unit": "bytes"}
    assert_checks_like_in_process(pool, write_torchscript(tiny_net(), tmp_path / "ok.pt"))


def test_refusals_cross_the_process_boundary_with_their_class(
    pool: SandboxPool, tmp_path: Path
) -> None:
    evil = write_read_file_torchscript(tmp_path / "r.pt", "/etc/hostname")
    with pytest.raises(UnsafeModelFileError, match="image::read_file") as info:
        pool.check(evil, make_card(), SandboxLimits())
    assert info.value.details["operators"] == ["image::read_file"]
    good = write_torchscript(tiny_net(), tmp_path / "ok.pt")
    with pytest.raises(InvalidCardError, match="sha256"):
        pool.check(good, make_card(sha256="0" * 64), SandboxLimits())


def test_a_full_pool_answers_503_after_the_queue_wait(tmp_path: Path) -> None:
    small = SandboxPool(size=1)
    slow = write_looping_torchscript(tmp_path / "loop.pt", iterations=100_000_000)
    started = threading.Event()
    outcome: list[BaseException] = []

    def occupy() -> None:
        started.set()
        try:
            small.check(slow, make_card(), SandboxLimits(cpu_s=60, wall_s=3))
        except ModelLimitError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=occupy)
    worker.start()
    started.wait()
    try:
        while small.running == 0:  # until the occupant holds the only slot
            threading.Event().wait(0.01)
        with pytest.raises(ServiceUnavailableError, match="busy") as info:
            small.check(slow, make_card(), SandboxLimits(queue_s=0.1))
        assert info.value.details == {"retry_after_s": 1}
    finally:
        worker.join()
    assert isinstance(outcome[0], ModelLimitError)
    assert outcome[0].details["limit"] == "wall_time"


def test_the_module_function_uses_the_default_pool(tmp_path: Path) -> None:
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    checked = check_model_file_isolated(path, make_card())
    assert checked.format == "torchscript"
    assert checked.card.sha256 == checked.sha256


@pytest.mark.parametrize(
    "kwargs", [{"wall_s": 0}, {"cpu_s": 0}, {"memory_bytes": 0}, {"queue_s": -1}]
)
def test_limits_must_be_positive(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must"):
        SandboxLimits(**kwargs)


def _report_confinement(conn, workdir: str, limits: SandboxLimits) -> None:
    """Runs in a forkserver child: confine as a check would, then describe the process."""
    import os
    import resource

    import torch

    from models.sandbox import _confine

    _confine(limits, workdir)
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    conn.send(
        {
            "cwd": os.getcwd(),
            "listing": os.listdir("."),
            "cpu": resource.getrlimit(resource.RLIMIT_CPU),
            "core": resource.getrlimit(resource.RLIMIT_CORE),
            "address_space": resource.getrlimit(resource.RLIMIT_AS)[0],
            "threads": torch.get_num_threads(),
            "fds": sorted(fds.values()),
        }
    )


def test_the_child_is_confined_and_inherits_no_open_files(
    pool: SandboxPool, tmp_path: Path
) -> None:
    database = tmp_path / "robustdx.db"
    workdir = tmp_path / "work"
    workdir.mkdir()
    limits = SandboxLimits(cpu_s=7, memory_bytes=GiB)
    with database.open("wb") as held:  # a file the caller holds open, as the API its database
        held.write(b"tenant rows")
        receive, send = pool._context.Pipe(duplex=False)
        child = pool._context.Process(target=_report_confinement, args=(send, str(workdir), limits))
        child.start()
        send.close()
        assert receive.poll(60)
        report = receive.recv()
        child.join(10)
    assert report["cwd"] == str(workdir)
    assert report["listing"] == []
    assert report["cpu"] == (7, 12)
    assert report["core"] == (0, 0)
    assert report["address_space"] > GiB  # the libraries' mappings plus the allowance
    assert report["threads"] == 1
    assert not [target for target in report["fds"] if str(tmp_path) in target]


@pytest.mark.parametrize(
    "answer",
    [b"\x80\x04K\x01.", b"not json", b"{}", b"[]"],  # a pickle is never unpickled
)
def test_an_unreadable_answer_from_the_child_counts_as_none(
    pool: SandboxPool, answer: bytes
) -> None:
    from models.sandbox import _receive

    receive, send = pool._context.Pipe(duplex=False)
    send.send_bytes(answer)
    assert _receive(receive) is None


@pytest.mark.parametrize(
    "message",
    [
        ("ok", 1, 2),
        ("error", "RobustDxError", 5, {}),
        ("ok", "{}", "x", "big", "torchscript", {}),
        ("surprise",),
    ],
)
def test_a_malformed_answer_from_the_child_is_refused(message: tuple) -> None:
    from models.errors import InvalidModelFileError
    from models.sandbox import _answer

    with pytest.raises(InvalidModelFileError, match="no usable answer"):
        _answer(message, SandboxLimits())
