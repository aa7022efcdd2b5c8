"""The upload check (load and dry run) in a separate, bounded process.

An uploaded model is code: its load and its forward pass may loop for hours or allocate
until the machine swaps. :func:`check_model_file_isolated` runs
:func:`models.loading.check_model_file` in a child process, never in the caller's
threads, and the child runs under limits:

- **CPU time** (``RLIMIT_CPU``): past ``cpu_s`` the kernel sends ``SIGXCPU``, which kills
  the child (a hard limit a few seconds later sends ``SIGKILL``).
- **Memory** (``RLIMIT_AS``): the child's address space may grow by ``memory_bytes`` beyond
  what the imported libraries already map when it starts (PyTorch alone maps about 3 GiB of
  address space it never touches, so an absolute limit would measure the libraries, not
  the model). An allocation past it fails inside the model, and the check reports the limit.
- **Wall time**: the caller waits ``wall_s`` at most, then kills the child (``SIGKILL``).

A child past a limit is killed and the caller gets a
:class:`~models.errors.ModelLimitError` (422) naming the limit and its value.

Apart from the service:

- Children are forked from a *forkserver* (a fresh interpreter started once, single
  threaded, that has imported the loaders), never from the caller, whose threads, open
  files, sockets and database connections they therefore do not inherit. Each check gets
  a fresh child that exits afterwards, so nothing one upload did survives into the next.
- The child's working directory is a new empty temporary directory (removed afterwards),
  so relative paths in a model name nothing of the service's; core dumps are off
  (``RLIMIT_CORE`` 0); the child uses one CPU thread and loads on the CPU.
- The child's answer crosses back as JSON (at most 1 MiB), never as a pickle: a child
  that ran an uploaded model is not trusted to send objects the caller would unpickle.
- At most ``size`` children run at once (:class:`SandboxPool`); a caller waits up to
  ``queue_s`` for a free slot and otherwise gets a
  :class:`~models.errors.ServiceUnavailableError` (503), so a burst of uploads queues
  instead of taking every core.

As with any ``spawn`` or ``forkserver`` child, the caller's ``__main__`` module is imported
again in each child (as ``__mp_main__``): an entry script must keep its start-up under
``if __name__ == "__main__":`` (console scripts, ``uvicorn`` and ``pytest`` do). The
forkserver and its preloaded modules are shared by the whole process.

What it does not do: the child runs as the service's user and could read any file that
user can, through an operator that reads files, which is why graphs are checked against an
operator allow-list before anything runs (:mod:`models.formats.operators`); there is no
mount or user namespace, seccomp filter or Landlock ruleset (each needs kernel features or
privileges a deployment may not have).

Public API::

    SandboxLimits(wall_s=60.0, cpu_s=30, memory_bytes=4 GiB, queue_s=30.0)
    SandboxPool(size=2)                  # .check(path, card, limits) -> CheckedUpload; .running
    check_model_file_isolated(path, card, *, limits=SandboxLimits(), pool=None)
        -> CheckedUpload                 # the shared default pool when pool is None
    CheckedUpload(card, sha256, size_bytes, format, info)   # .extension

:class:`CheckedUpload` carries what :class:`~models.loading.CheckedModelFile` carries
except the loaded network (which cannot cross a process boundary): ``card`` (with
``sha256``), ``sha256``, ``size_bytes``, ``format``, ``info`` and ``extension``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from models import errors
from models.card import ModelCard
from models.errors import InvalidModelFileError, ModelLimitError, ServiceUnavailableError
from models.formats import EXTENSIONS, FORMATS, ModelFormat

__all__ = [
    "CheckedUpload",
    "SandboxLimits",
    "SandboxPool",
    "check_model_file_isolated",
]

logger = logging.getLogger(__name__)

GiB = 1 << 30
#: Imported once in the forkserver, so that each child starts with the loaders ready.
_PRELOAD = ["models.loading", "models.formats.onnx_graph", "onnx", "onnx2torch"]
_CPU_GRACE_S = 5  # hard RLIMIT_CPU above the soft one: SIGKILL if SIGXCPU did not end it
_MAX_ANSWER = 1 << 20  # bytes: an answer is a card and a small info dict
_OOM_MARKERS = ("can't allocate memory", "not enough memory", "std::bad_alloc", "out of memory")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one upload check; the defaults are generous for a hospital's classifiers.

    Attributes:
        wall_s: seconds the caller waits for the check once its child is forked (the
            forkserver's one-time start, which imports the loaders, is not counted).
        cpu_s: CPU seconds the child may use (all its threads together).
        memory_bytes: bytes of address space the child may add to the libraries' mappings.
        queue_s: seconds to wait for a free slot of the pool.
    """

    wall_s: float = 60.0
    cpu_s: int = 30
    memory_bytes: int = 4 * GiB
    queue_s: float = 30.0

    def __post_init__(self) -> None:
        if not (self.wall_s > 0 and self.cpu_s >= 1 and self.memory_bytes > 0):
            raise ValueError("sandbox limits must be positive (cpu_s at least 1 s)")
        if self.queue_s < 0:
            raise ValueError("queue_s must not be negative")


@dataclass(frozen=True)
class CheckedUpload:
    """What the registry stores for an accepted upload, as checked in the sandbox."""

    card: ModelCard  # with ``sha256`` filled in
    sha256: str
    size_bytes: int
    format: ModelFormat
    info: dict[str, Any]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


class SandboxPool:
    """At most ``size`` upload checks at once, each in a fresh child of one forkserver."""

    def __init__(self, size: int = 2) -> None:
        if size < 1:
            raise ValueError("a sandbox pool needs at least one slot")
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._running = 0
        self._count_lock = threading.Lock()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(_PRELOAD)

    def check(self, path: Path, card: ModelCard, limits: SandboxLimits) -> CheckedUpload:
        """:func:`~models.loading.check_model_file` of ``path`` in a child under ``limits``.

        Raises:
            ModelLimitError: the child went past a limit (it has been killed).
            ServiceUnavailableError: no slot became free within ``limits.queue_s``.
            RobustDxError: whatever the check itself refused the upload with.
        """
        if not self._slots.acquire(timeout=limits.queue_s):
            raise ServiceUnavailableError(
                f"all {self.size} model-check workers are busy; retry the upload later",
                {"retry_after_s": max(1, round(limits.queue_s))},
            )
        self._count(+1)
        try:
            return self._run(Path(path).resolve(), card, limits)
        finally:
            self._count(-1)
            self._slots.release()

    @property
    def running(self) -> int:
        """How many checks hold a slot now (for metrics and tests)."""
        with self._count_lock:
            return self._running

    def _count(self, delta: int) -> None:
        with self._count_lock:
            self._running += delta

    def _run(self, path: Path, card: ModelCard, limits: SandboxLimits) -> CheckedUpload:
        workdir = tempfile.mkdtemp(prefix="robustdx-check-")
        receive, send = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child_main,
            args=(send, str(path), card.model_dump_json(), limits, workdir),
            name="robustdx-model-check",
            daemon=True,
        )
        message: tuple[Any, ...] | None = None
        timed_out = False
        try:
            try:
                child.start()  # returns once forked, so the wall time excludes the forkserver
            except OSError as exc:
                raise ServiceUnavailableError("the model-check worker could not start") from exc
            send.close()
            if receive.poll(limits.wall_s):
                message = _receive(receive)
            else:
                timed_out = True
        finally:
            receive.close()
            _stop(child, wait=not timed_out)
            shutil.rmtree(workdir, ignore_errors=True)
        if timed_out:
            raise _limit_error("wall_time", limits.wall_s)
        if message is None:
            raise _death_error(child.exitcode, limits)
        return _answer(message, limits)


def _receive(conn: Connection) -> tuple[Any, ...] | None:
    """The child's answer: JSON, never a pickle, since the child ran an uploaded model."""
    try:
        raw = conn.recv_bytes(_MAX_ANSWER)
        message = json.loads(raw)
    except (EOFError, OSError, ValueError):  # died before answering, or sent garbage
        return None
    return tuple(message) if isinstance(message, list) and message else None


def _stop(child: multiprocessing.process.BaseProcess, *, wait: bool) -> None:
    """Let a child that answered exit; kill one past its wall time or that lingers."""
    if child.pid is None:  # never started
        return
    if wait:
        child.join(timeout=5)
    if child.is_alive():
        child.kill()
        child.join()


def _death_error(exitcode: int | None, limits: SandboxLimits) -> ModelLimitError:
    if exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        # SIGXCPU at the soft RLIMIT_CPU, SIGKILL at the hard one.
        return _limit_error("cpu_time", limits.cpu_s)
    logger.warning("a model-check child exited with code %s without answering", exitcode)
    return ModelLimitError(
        "the model check ended without an answer (the process died, for example of an "
        "allocation past its memory limit); the upload was not accepted",
        {"limit": "process", "exitcode": exitcode},
    )


def _limit_error(limit: str, value: float) -> ModelLimitError:
    if limit == "memory":
        shown = f"{value / GiB:g} GiB"
        return ModelLimitError(
            f"the model exceeded its memory limit of {shown} while being loaded and dry-run",
            {"limit": "memory", "value": int(value), "unit": "bytes"},
        )
    what = {"cpu_time": "CPU-time", "wall_time": "wall-time"}[limit]
    return ModelLimitError(
        f"the model exceeded its {what} limit of {value:g} s while being loaded and dry-run",
        {"limit": limit, "value": value, "unit": "s"},
    )


def _answer(message: tuple[Any, ...], limits: SandboxLimits) -> CheckedUpload:
    kind = message[0]
    if kind == "ok" and len(message) == 6:
        card, sha256, size_bytes, fmt, info = message[1:]
        if (
            isinstance(card, str)
            and isinstance(sha256, str)
            and isinstance(size_bytes, int)
            and fmt in FORMATS
            and isinstance(info, dict)
        ):
            return CheckedUpload(ModelCard.model_validate_json(card), sha256, size_bytes, fmt, info)
    if kind == "memory":
        raise _limit_error("memory", limits.memory_bytes)
    if kind != "error" or len(message) != 4:
        raise InvalidModelFileError("the model check gave no usable answer")
    _, name, text, details = message
    if not (isinstance(name, str) and isinstance(text, str) and isinstance(details, dict)):
        raise InvalidModelFileError("the model check gave no usable answer")
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.RobustDxError)):
        cls = InvalidModelFileError
    raise cls(text, details)


_default: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool of two slots that :func:`check_model_file_isolated` uses."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SandboxPool()
        return _default


def check_model_file_isolated(
    path: Path,
    card: ModelCard,
    *,
    limits: SandboxLimits | None = None,
    pool: SandboxPool | None = None,
) -> CheckedUpload:
    """:func:`~models.loading.check_model_file` in a sandboxed child (see the module doc).

    Args:
        path: the uploaded file (read by the child; it must stay in place until this
            returns).
        card: the validated model card.
        limits: CPU, wall-time, memory and queueing limits; the defaults when ``None``.
        pool: the pool to draw a child from; :func:`default_pool` when ``None``.
    """
    return (pool or default_pool()).check(path, card, limits or SandboxLimits())


# ----------------------------------------------------------------------------- in the child


def _child_main(
    conn: Connection, path: str, card_json: str, limits: SandboxLimits, workdir: str
) -> None:
    """Entry point of the child: confine, check, send one answer."""
    try:
        _confine(limits, workdir)
        message = _check(Path(path), card_json)
    except BaseException as exc:  # the child must answer, whatever the upload did
        message = ("memory",) if _out_of_memory(exc) else _error_message(exc)
    with contextlib.suppress(OSError, TypeError, ValueError):
        conn.send_bytes(json.dumps(message).encode())
        conn.close()


def _confine(limits: SandboxLimits, workdir: str) -> None:
    import os
    import resource

    import torch

    os.chdir(workdir)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + _CPU_GRACE_S))
    mapped = _address_space_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + limits.memory_bytes,) * 2)
    torch.set_num_threads(1)


def _address_space_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _check(path: Path, card_json: str) -> tuple[Any, ...]:
    from models.loading import check_model_file

    card = ModelCard.model_validate_json(card_json)
    checked = check_model_file(path, card, device="cpu")
    return (
        "ok",
        checked.card.model_dump_json(),
        checked.sha256,
        checked.size_bytes,
        checked.format,
        checked.loaded.info,
    )


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain of a wrapped allocator error
        if seen is None:
            return False
        if isinstance(seen, MemoryError) or any(m in str(seen) for m in _OOM_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _error_message(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, errors.RobustDxError):
        return ("error", type(exc).__name__, exc.message, exc.details)
    logger.warning("the model check failed unexpectedly: %s", type(exc).__name__)
    return ("error", "InvalidModelFileError", "the model check failed on this upload", {})
