"""``robustdx run``: the API, one worker and (unless a broker URL is given) an embedded
Redis, supervised: a process that dies is started again, as systemd, Kubernetes or a
compose restart policy would do in production.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from app.cli.embedded_broker import EmbeddedRedis
from app.core.settings import Settings
from app.core.storage import write_atomic
from app.core.tenants import dev_api_key

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = field(default=1.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def worker_argv(settings: Settings, name: str = "worker1") -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "--pool", "solo", "--concurrency", "1", "-O", "fair",
        "--queues", settings.worker_queues, "--hostname", f"{name}@%h", "--loglevel", "INFO",
    ]


def api_argv(host: str, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "app.api.main:create_app", "--factory",
        "--host", host, "--port", str(port), "--log-level", "info",
        "--workers", str(workers),
    ]


def run(settings: Settings, host: str, port: int, workers: int = 1) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedRedis | None = None
    env = dict(os.environ)
    env["ROBUSTDX_DATA_DIR"] = str(settings.data_dir.resolve())
    if settings.broker_url is None:
        broker = EmbeddedRedis(workdir=settings.data_dir / "redis").start()
        env["ROBUSTDX_BROKER_URL"] = broker.url
        write_atomic(settings.data_dir / "broker-url", broker.url.encode())
    key = dev_api_key(settings) if settings.environment == "development" else None

    children = [Child("api", api_argv(host, port, settings.api_workers), env)]
    children += [Child(f"worker{i + 1}", worker_argv(settings, f"worker{i + 1}"), env)
                 for i in range(workers)]
    if settings.dicom_port:
        children.append(Child("dicom", [sys.executable, "-m", "app.core.dicom.scp"], env))
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    for child in children:
        child.start()
    banner = [
        "",
        f"  RobustDx API    http://{host}:{port}   (docs: http://{host}:{port}/docs)",
        f"  data folder     {settings.data_dir.resolve()}",
        f"  broker          {env.get('ROBUSTDX_BROKER_URL', settings.resolved_broker_url)}"
        + ("  (embedded)" if broker else ""),
    ]
    if settings.dicom_port:
        banner.append(f"  DICOM (DIMSE)   {settings.dicom_ae_title}@{host}:{settings.dicom_port}"
                      f"   (DICOMweb: http://{host}:{port}/dicomweb)")
    if key:
        banner.append(f"  dev API key     {key}   (also in {settings.data_dir / 'dev-api-key'})")
    sys.stderr.write("\n".join(banner) + "\n\n")
    try:
        while not stopping:
            time.sleep(0.5)
            if broker is not None and not broker.alive():
                logger.error("embedded broker died; restarting it on the same port")
                broker.start()
            for child in children:
                if stopping or child.alive():
                    continue
                code = child.process.returncode if child.process else None
                if time.monotonic() - child.started_at > 60:
                    child.backoff = 1.0
                logger.error("%s exited with %s; restarting in %.0fs", child.name, code,
                             child.backoff)
                time.sleep(child.backoff)
                child.backoff = min(child.backoff * 2, 30.0)
                child.restarts += 1
                child.start()
    finally:
        for child in reversed(children):
            child.stop()
        if broker is not None:
            broker.stop()
    return 0
