"""Orthanc as the hospital's PACS: started on free ports from a generated configuration,
driven through its REST API."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.cli.embedded_broker import free_port

AE_TITLE = "ORTHANC"


@dataclass
class Orthanc:
    workdir: Path
    binary: str
    plugin: Path
    modalities: dict[str, list[Any]] = field(default_factory=dict)
    dicomweb_servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "TestPACS",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "Plugins": [str(self.plugin)],
            "DicomModalities": self.modalities,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers":
                         self.dicomweb_servers},
            "StableAge": 1,
            "SaveJobs": False,
        }

    def start(self, timeout: float = 60) -> Orthanc:
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=1))
        log = open(self.workdir / "orthanc.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([self.binary, str(config)], stdout=log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "orthanc.log").read_text()[-2000:]
                raise RuntimeError(f"Orthanc exited: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") \
            else response.content

    def post(self, path: str, body: Any, timeout: float = 60) -> Any:
        kwargs: dict[str, Any] = ({"content": body} if isinstance(body, bytes)
                                  else {"json": body})
        response = httpx.post(f"{self.url}{path}", timeout=timeout, **kwargs)
        response.raise_for_status()
        return response.json()

    def upload(self, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/instances", data)
        return result

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(f"/studies/{study_id}/instances")
        return result
