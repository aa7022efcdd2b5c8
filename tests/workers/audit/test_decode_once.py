"""Planning decodes a dataset for the audited model's input when nobody has, and only then."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from app.core.storage import Storage
from models.card import ModelCard
from models.datasets import import_dataset, load_dataset
from models.datasets.tensor_cache import CACHE_DIR, MAX_INPUTS_PER_DATASET, input_signature
from models.phantoms import derm
from models.phantoms.export import write_phantom_archive
from workers.tasks.audit import _decode_once


def _card(size: int) -> ModelCard:
    return ModelCard.model_validate({"name": f"m{size}", "task": "single-label",
                                     "labels": list(derm.LABELS),
                                     "input": {"channels": 3, "height": size, "width": size}})


def _plan(tmp_path: Path, size: int, max_bytes: int = 1 << 30) -> tuple[float, Any]:
    storage = Storage(tmp_path / "store")
    root = storage.dataset_dir("d1")
    if not (root / "manifest.json").exists():
        archive = write_phantom_archive("derm", 6, 32, "imagefolder", tmp_path / "a.zip")
        import_dataset(archive.path, "imagefolder", root)
    dataset = load_dataset(root)
    card = _card(size)
    rt: Any = SimpleNamespace(storage=storage,
                              settings=SimpleNamespace(dataset_cache_max_bytes=max_bytes))
    loaded: Any = SimpleNamespace(dataset=dataset,
                                  engine=SimpleNamespace(model=SimpleNamespace(card=card)))
    return _decode_once(rt, loaded), dataset


def test_the_first_audit_decodes_the_next_does_not(tmp_path: Path) -> None:
    seconds, dataset = _plan(tmp_path, 16)
    assert seconds > 0
    assert dataset.cache(_card(16)) is not None
    again, _ = _plan(tmp_path, 16)
    assert again == 0.0


def test_turned_off_or_too_many_inputs_decodes_nothing(tmp_path: Path) -> None:
    seconds, dataset = _plan(tmp_path, 16, max_bytes=0)
    assert seconds == 0.0
    assert dataset.cache(_card(16)) is None
    for size in range(8, 8 + MAX_INPUTS_PER_DATASET):
        _plan(tmp_path, size)
    cache = dataset.root / CACHE_DIR
    assert len(list(cache.iterdir())) == MAX_INPUTS_PER_DATASET
    seconds, dataset = _plan(tmp_path, 40)
    assert seconds == 0.0
    assert input_signature(_card(40)) not in {p.name for p in cache.iterdir()}
    assert dataset.cache(_card(40)) is None
