"""What the API process does when it starts and stops.

On SIGTERM (or SIGINT) the inference service stops at once, before the server starts
waiting for open requests: queued inference fails with 503 and each lane finishes only
the pass it is running, so the server's wait for in-flight requests is bounded by one pass
instead of by the longest request (a smoothed predict could otherwise run for many
minutes). The server's own handler then runs as before.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.api.auth_cache import AuthorizedModels
from app.core.db import Database, open_database
from app.core.dispatcher import Dispatcher
from app.core.settings import Settings
from app.core.storage import S3Storage, Storage, open_storage
from app.core.tenants import dev_api_key, ensure_tenant

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: Storage
    dispatcher: Dispatcher | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    authorized: AuthorizedModels = field(default_factory=lambda: AuthorizedModels(0.0))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def startup(settings: Settings) -> AppState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    storage = open_storage(settings)
    if settings.s3_create_bucket and isinstance(storage, S3Storage):
        storage.ensure_bucket()
    state = AppState(settings=settings, db=db, storage=storage,
                     authorized=AuthorizedModels(settings.auth_cache_seconds))
    if settings.environment == "development":
        # Several API processes (ROBUSTDX_API_WORKERS) start at once: seed under a lock.
        with _file_lock(settings.data_dir / ".startup.lock"):
            key = dev_api_key(settings)
            with db.session() as session:
                tenant = ensure_tenant(session, settings.dev_tenant, key)
                tenant_id = tenant.id
            if settings.register_zoo:
                from app.core.zoo import register_zoo

                try:
                    register_zoo(db, storage, tenant_id)
                except Exception:
                    logger.exception("could not register the demo zoo")
    if settings.run_dispatcher:
        state.dispatcher = Dispatcher(
            db,
            settings.resolved_broker_url,
            settings.stale_after_seconds,
            interval=settings.dispatcher_interval_seconds,
            lease_seconds=settings.dispatcher_lease_seconds,
        )
        state.dispatcher.start()
    install_signal_handlers(state)
    return state


def stop_inference(state: AppState) -> None:
    """Fail queued inference with 503 and stop taking more (see the module docstring)."""
    state.extras["stopping"] = True  # first: no service may be created after this
    service = state.extras.get("inference")
    if service is not None:
        service.shutdown()


def install_signal_handlers(state: AppState) -> None:
    """Chain a handler before the server's for SIGTERM and SIGINT (main thread only: an
    in-process test client runs the lifespan in another thread and needs none)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(received: int, frame: Any, previous: Any = previous) -> None:
            # A signal handler runs between two bytecodes of the event loop, which may hold
            # the service's locks: stop it from a thread of its own.
            threading.Thread(target=stop_inference, args=(state,), daemon=True).start()
            if callable(previous):
                previous(received, frame)
            elif previous == signal.SIG_DFL:  # no server handler: die as the default would
                signal.signal(received, signal.SIG_DFL)
                os.kill(os.getpid(), received)

        signal.signal(signum, handler)


def shutdown(state: AppState) -> None:
    if state.dispatcher is not None:
        state.dispatcher.stop()
    service = state.extras.get("inference")
    if service is not None:
        service.close(timeout=state.settings.shutdown_grace_seconds)
    checks = state.extras.get("model_checks")
    if checks is not None:
        checks.close()
