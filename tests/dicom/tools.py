"""The external DICOM programs the tests start (dcmtk, Orthanc), found or skipped with the
reason, and an in-process DIMSE SCP."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.cli.embedded_broker import free_port
from app.core.settings import Settings

INSTALL_HINT = ("install it with `make dicom-tools` (apt-get install orthanc "
                "orthanc-dicomweb dcmtk)")


def need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{program} is not installed and could not be installed: {INSTALL_HINT}")
    return path


def orthanc_plugin() -> Path:
    for candidate in (Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
                      Path("/usr/lib/orthanc/libOrthancDicomWeb.so")):
        if candidate.exists():
            return candidate
    pytest.skip(f"the Orthanc DICOMweb plugin is not installed: {INSTALL_HINT}")


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def scp_server(settings: Settings) -> Iterator[Any]:
    """The C-ECHO/C-STORE SCP on a free port, in this process."""
    from app.core.dicom.scp import serve

    port = free_port()
    server = serve(settings.model_copy(update={"dicom_port": port,
                                               "dicom_host": "127.0.0.1"}), block=False)
    server.test_port = port
    try:
        yield server
    finally:
        server.shutdown()
