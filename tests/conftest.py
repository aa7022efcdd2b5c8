"""Shared fixtures: settings on a temporary data folder, a real broker, real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.seaweed import SeaweedS3
from tests.support.services import (
    Broker,
    Service,
    drop_postgres,
    postgres_url,
    running_service,
)

torch.set_num_threads(int(os.environ.get("ROBUSTDX_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    yield url
    drop_postgres(url)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) for the session; each test takes its own bucket."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"SeaweedFS could not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every database-layer test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'robustdx.db'}"
    return str(request.getfixturevalue("postgres"))


@pytest.fixture
def service(tmp_path: Path, broker: Broker) -> Iterator[Service]:
    """The API and one worker as real processes on a real broker."""
    with running_service(tmp_path / "data", broker) as svc:
        yield svc
