"""Real processes for integration tests: a Redis broker, the API (uvicorn) and workers."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.cli.embedded_broker import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class Broker:
    """The machine's Redis on a random database number when it runs; an embedded one otherwise."""

    def __init__(self) -> None:
        self.embedded: EmbeddedRedis | None = None
        env_url = os.environ.get("ROBUSTDX_TEST_REDIS_URL")
        if env_url:
            self.url = env_url
        elif _reachable("127.0.0.1", 6379):
            self.url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
        else:
            self.embedded = EmbeddedRedis().start()
            self.url = self.embedded.url
        self.flush()

    @property
    def kind(self) -> str:
        return "embedded" if self.embedded else "server"

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        finally:
            client.close()

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def postgres_url() -> str | None:
    """A fresh database on the local PostgreSQL, or None when none runs."""
    base = os.environ.get("ROBUSTDX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if not _reachable("127.0.0.1", 5432) and "ROBUSTDX_TEST_POSTGRES_URL" not in os.environ:
        return None
    import psycopg

    name = f"robustdx_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return base.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres(url: str) -> None:
    import psycopg

    base, name = url.rsplit("/", 1)
    with contextlib.suppress(psycopg.Error), psycopg.connect(
        base + "/test", autocommit=True, connect_timeout=3
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Service:
    """The API and N workers as real subprocesses sharing one data folder and database."""

    data_dir: Path
    broker_url: str
    database_url: str | None = None
    admin_key: str = "test-admin-key"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, data_dir: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ROBUSTDX_ENVIRONMENT": "test",
            "ROBUSTDX_DATA_DIR": str(data_dir or self.data_dir),
            "ROBUSTDX_BROKER_URL": self.broker_url,
            "ROBUSTDX_ADMIN_KEY": self.admin_key,
            "ROBUSTDX_HEARTBEAT_SECONDS": "0.5",
            "ROBUSTDX_STALE_AFTER_SECONDS": "4",
            "ROBUSTDX_TORCH_THREADS": "1",
            "ROBUSTDX_DEVICE": "cpu",
            "ROBUSTDX_REGISTER_ZOO": "false",
            "PYTHONUNBUFFERED": "1",
        })
        if self.database_url:
            env["ROBUSTDX_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start_api(self) -> None:
        self.port = self.port or free_port()
        if self.database_url:
            # As an operator would: a server database is migrated before the API starts
            # (only the embedded SQLite upgrades itself).
            subprocess.run([sys.executable, "-m", "app.cli.main", "db", "upgrade"],
                           env=self.env(), cwd=ROOT, check=True, capture_output=True)
        log = open(self.data_dir / f"api-{time.time_ns()}.log", "wb")  # noqa: SIM115
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.api.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"API exited with {self.api.returncode}; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("API did not start")

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.api.wait(timeout=10)
            if self.api.poll() is None:
                self.api.kill()
            self.api = None

    def start_worker(self, name: str | None = None,
                     data_dir: Path | None = None) -> subprocess.Popen[bytes]:
        """A worker; with ``data_dir``, one with a data folder of its own (another machine's
        disk, as far as the worker can tell)."""
        name = name or f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        log = open((data_dir or self.data_dir) / f"worker-{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
             "--pool", "solo", "--concurrency", "1", "-O", "fair", "--queues", "gpu,cpu",
             "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            env=self.env(data_dir), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL, as the OOM killer or a lost node would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.kill_worker(proc)
        self.workers.clear()
        self.stop_api()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def create_tenant(self, name: str | None = None) -> str:
        with self.client(self.admin_key) as c:
            r = c.post("/v1/tenants", json={"name": name or f"t-{uuid.uuid4().hex[:8]}"})
            r.raise_for_status()
            return str(r.json()["api_key"])

    def wait_job(self, key: str, job_id: str, timeout: float = 300,
                 until: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> dict:
        deadline = time.monotonic() + timeout
        with self.client(key) as c:
            while time.monotonic() < deadline:
                body = c.get(f"/v1/jobs/{job_id}").json()
                if body["status"] in until:
                    return dict(body)
                time.sleep(0.3)
        raise TimeoutError(f"job {job_id} still {body['status']} after {timeout}s: {body}")


@contextlib.contextmanager
def running_service(data_dir: Path, broker: Broker,
                    extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """The API and one worker started on a flushed ``broker``, stopped on leaving."""
    broker.flush()
    svc = Service(data_dir=data_dir, broker_url=broker.url, extra_env=extra_env or {})
    svc.data_dir.mkdir(parents=True)
    svc.start_api()
    svc.start_worker()
    try:
        yield svc
    finally:
        svc.stop()

