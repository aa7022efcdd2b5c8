"""Per-process resources of a worker: settings, database, storage, device."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import torch

from app.core.db import Database, ModelRow, open_database
from app.core.settings import Settings, get_settings
from app.core.storage import Storage, open_storage
from models.card import ModelCard
from models.datasets import StoredDataset
from models.device import resolve_device
from models.errors import NotFoundError
from models.wrapper import DiagnosticModel


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    storage: Storage
    device: torch.device


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    return Runtime(
        settings=settings,
        db=open_database(settings),
        storage=open_storage(settings),
        device=resolve_device(settings.device),
    )


def model_row(rt: Runtime, model_id: str) -> ModelRow:
    """The registered model a job names, detached from its session."""
    with rt.db.session() as session:
        row = session.get(ModelRow, model_id)
        if row is None:
            raise NotFoundError(f"model {model_id} no longer exists")
        session.expunge(row)
        return row


#: Models kept loaded between jobs on this worker, most recent last.
KEEP_MODELS = 2
_LOADED: OrderedDict[tuple[str, str, str], DiagnosticModel] = OrderedDict()
_LOADED_LOCK = threading.Lock()


def loaded_model(rt: Runtime, row: ModelRow) -> DiagnosticModel:
    """The registered model on the worker's device, kept loaded between jobs (the
    :data:`KEEP_MODELS` most recent, by id and sha256), so the next audit of the same model
    starts without loading it again (an ONNX conversion takes seconds). Attacks and
    analyses restore the model's modes and flags when they finish, so a kept model is as
    it was loaded. Remote models are made afresh for every job: their client checks the
    URL again and their query budget is the job's.
    """
    from app.core.registry import REMOTE, load_registered_model

    if row.format == REMOTE:
        return load_registered_model(rt.storage, row, rt.device)
    key = (row.id, row.sha256, str(rt.device))
    with _LOADED_LOCK:
        model = _LOADED.get(key)
        if model is not None:
            _LOADED.move_to_end(key)
            return model
    model = load_registered_model(rt.storage, row, rt.device)
    with _LOADED_LOCK:
        _LOADED[key] = model
        while len(_LOADED) > KEEP_MODELS:
            _LOADED.popitem(last=False)
    return model


def stored_dataset(rt: Runtime, dataset_id: str, card: ModelCard) -> StoredDataset:
    """A registered dataset in this process's store, with its tensor cache for ``card``'s
    input when it has one (made after this process first pulled the dataset).

    Raises:
        LabelMismatchError: the dataset's labels do not fit the card.
    """
    from models.datasets import check_labels, load_dataset
    from models.datasets.tensor_cache import cache_dir

    dataset = load_dataset(rt.storage.dataset_dir(dataset_id))
    check_labels(dataset.info, card)
    rt.storage.pull(cache_dir(dataset.root, card))
    return dataset


def warm_up() -> None:
    """What every worker's first job would otherwise pay for, paid when the worker starts,
    before it takes tasks (Celery's ``worker_init``): the database and the store opened,
    the device initialised (a CUDA context takes seconds), and the analysis and report
    modules imported (scipy, matplotlib). Never fatal: a part that fails here fails again,
    with its real error, in the job that needs it."""
    import logging
    import time

    log = logging.getLogger(__name__)
    started = time.perf_counter()
    try:
        rt = runtime()
        torch.zeros(1, device=rt.device).sum().item()
        from workers.analyses.registry import list_analyses
        from workers.attacks import list_attacks

        list_analyses()
        list_attacks()
        import workers.audit.rendering
        import workers.reports.builder
        import workers.reports.html
        import workers.reports.junit  # noqa: F401
        from workers.analyses.plotting import new_figure, render_png

        fig, ax = new_figure(1, 1)  # matplotlib loads its fonts at the first text drawn
        ax.set_title("warm-up")
        render_png(fig)
    except Exception as exc:  # a warm-up must not stop a worker
        log.warning("worker warm-up stopped early (%s); jobs will load what they need",
                    type(exc).__name__)
        return
    log.info("worker warmed up in %.2f s on %s", time.perf_counter() - started, rt.device)

