"""The side environment for PyTriton, and a Triton server started in it.

PyTriton's Python backend needs an interpreter with a shared libpython: Debian's
``/usr/bin/python3.11`` has one, a pyenv build often does not (its models then fail to load
with ``'_thread.RLock' object has no attribute '_recursion_count'``). So the bench and the
remote-model tests build a venv from the system interpreter, install ``nvidia-pytriton``
there (a PyPI install, cached between runs), and let it import the service environment's
torch through a ``.pth`` line appended after its own packages (same CPython 3.11 ABI; no
second torch download). Nothing of this is a dependency of the service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SYSTEM_PYTHON = "/usr/bin/python3.11"
PACKAGE = "nvidia-pytriton"
SERVER = Path(__file__).resolve().with_name("pytriton_server.py")


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "robustdx" / "pytriton-venv"


class SideEnvError(RuntimeError):
    """The side environment cannot be built here (no system python3.11, no package index)."""


def _run(cmd: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SideEnvError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise SideEnvError(f"{what} failed: {(done.stderr or done.stdout).strip()[-400:]}")


def ensure_side_venv(folder: Path | None = None, timeout: float = 600) -> Path:
    """The side interpreter (building the venv on first use); raises :class:`SideEnvError`."""
    folder = folder or default_venv()
    python = folder / "bin" / "python"
    marker = folder / ".robustdx-ready"
    if marker.exists() and python.exists():
        return python
    if not Path(SYSTEM_PYTHON).exists():
        raise SideEnvError(f"{SYSTEM_PYTHON} is missing (apt-get install python3.11-venv)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _run([SYSTEM_PYTHON, "-m", "venv", str(folder)], "python3.11 -m venv", timeout)
    _run([str(python), "-m", "pip", "install", "-q", PACKAGE], f"pip install {PACKAGE}", timeout)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    # Appended after the side venv's own packages: its numpy and tritonclient win; torch
    # (absent there) comes from the service environment.
    Path(site.stdout.strip(), "zz-service-torch.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-c", "import torch, pytriton"], "importing torch and pytriton", timeout)
    marker.write_text("ok\n")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TritonServer:
    """``bench/pytriton_server.py`` in the side interpreter, on free loopback ports."""

    python: Path
    model: Path
    shape: tuple[int, int, int]
    outputs: int
    name: str = "m"
    threads: int = 1
    max_batch: int = 32
    queue_delay_us: int = 2000
    log: Path | None = None
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> TritonServer:
        self.port, self.metrics_port = free_port(), free_port()
        cmd = [str(self.python), str(SERVER), "--model", str(self.model), "--name", self.name,
               "--shape", ",".join(map(str, self.shape)), "--outputs", str(self.outputs),
               "--http-port", str(self.port), "--grpc-port", str(free_port()),
               "--metrics-port", str(self.metrics_port), "--threads", str(self.threads),
               "--max-batch", str(self.max_batch), "--queue-delay-us", str(self.queue_delay_us)]
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        env.pop("PYTHONPATH", None)  # the side interpreter must not see our packages
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SideEnvError(f"the Triton server exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/models/{self.name}/ready",
                             timeout=1).status_code == 200:
                    return self
            time.sleep(0.5)
        self.stop()
        raise SideEnvError(f"the Triton server was not ready within {timeout:.0f}s")

    def inference_count(self) -> int:
        """Images Triton has run for the model (``nv_inference_count``, its own counter)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("nv_inference_count{") and f'model="{self.name}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            import signal

            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


def export_probabilities(model: Any, path: Path, shape: tuple[int, int, int]) -> Path:
    """Trace ``probabilities(model(x))`` of a :class:`models.wrapper.DiagnosticModel` into a
    TorchScript file: the exact computation RobustDx's lanes run, for Triton to serve."""
    import torch

    from models.heads import probabilities

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return probabilities(self.model(x), self.model.head)

    module = Probabilities().eval()
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(module, torch.rand(2, *shape))
    torch.jit.save(traced, str(path))
    return path


if __name__ == "__main__":  # python bench/pytriton_side.py: build the environment once
    print(ensure_side_venv())
    sys.exit(0)
