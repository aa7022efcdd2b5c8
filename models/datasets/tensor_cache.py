"""Decoded model inputs of a stored dataset, cached once per input signature.

An audit runs every shard on model inputs (:func:`models.imaging.to_model_input`), and
decoding them again for every shard, every audit and every fitted attack costs more than a
small model's forward pass. The cache decodes a dataset once for one *input signature*
(the card fields ``to_model_input`` reads: channels, height, width, resize policy, DICOM
window) into ``cache/<signature>/``::

    images.npy    float32 [N, C, H, W] in [0, 1], exactly what decoding gives
    masks.npy     uint8 [N, H, W] 0/1 lesion masks, when the dataset has masks
    info.json     the signature's fields, N and the shapes; written last

Readers memory-map the arrays (``np.load(mmap_mode="r")``), so a worker reads only the
rows of its shard and every worker process of a machine shares one copy in the page
cache. A cache is made in a hidden staging folder and renamed into place, so a reader
sees a whole cache or none; two builders racing keep the first. A cache whose files do
not match its ``info.json`` or the dataset is ignored (the images are decoded instead),
never trusted. A dataset larger than the byte limit gets no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.format import open_memmap

from models.card import ModelCard

if TYPE_CHECKING:
    from models.datasets.store import StoredDataset

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
INFO = "info.json"
#: Bumped when what decoding gives for the same card changes: old caches are then ignored.
VERSION = 1
#: Images decoded per write while a cache is built (bounds the builder's memory).
BUILD_BATCH = 64
#: The default largest cache (``images.npy``) made for one dataset and signature.
DEFAULT_MAX_BYTES = 8 * 1024**3
#: The most model inputs one dataset is cached for: past them, audits decode per shard (a
#: tenant auditing one dataset with models of ever new input sizes cannot fill the disk).
MAX_INPUTS_PER_DATASET = 8


def signature_fields(card: ModelCard) -> dict[str, Any]:
    """What :func:`models.imaging.to_model_input` reads from ``card``, and nothing else."""
    window = card.preprocessing.dicom_window
    return {
        "version": VERSION,
        "channels": card.input.channels,
        "height": card.input.height,
        "width": card.input.width,
        "resize": card.preprocessing.resize,
        "dicom_window": window.model_dump(mode="json") if window is not None else None,
    }


def input_signature(card: ModelCard) -> str:
    """A short name of the card's input view: two cards with the same one see the same
    tensors for the same image."""
    text = json.dumps(signature_fields(card), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(dataset_root: Path, card: ModelCard) -> Path:
    return Path(dataset_root) / CACHE_DIR / input_signature(card)


def image_bytes(count: int, card: ModelCard) -> int:
    """The size of ``images.npy``'s data for ``count`` images at the card's input."""
    return count * card.input.channels * card.input.height * card.input.width * 4


@dataclass(frozen=True)
class TensorCache:
    """A memory-mapped cache: ``images`` [N, C, H, W] float32, ``masks`` [N, H, W] uint8."""

    folder: Path
    images: np.ndarray
    masks: np.ndarray | None

    def rows(self, index: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies of rows ``index`` (a slice read when they are consecutive)."""
        if index and index == list(range(index[0], index[0] + len(index))):
            pick: Any = slice(index[0], index[0] + len(index))
        else:
            pick = np.asarray(index, dtype=np.int64)
        images = np.array(self.images[pick], dtype=np.float32)
        masks = None if self.masks is None else np.array(self.masks[pick], dtype=np.float32)
        return images, masks


def open_cache(dataset: StoredDataset, card: ModelCard) -> TensorCache | None:
    """The dataset's cache for ``card``'s input signature, or ``None`` when there is none
    or it does not match (then it is ignored, and logged)."""
    folder = cache_dir(dataset.root, card)
    try:
        info = json.loads((folder / INFO).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        logger.warning("ignoring an unreadable tensor cache in %s", folder.name)
        return None
    c, h, w = card.input.channels, card.input.height, card.input.width
    expected = {"signature": signature_fields(card), "count": len(dataset),
                "dataset_sha256": dataset.info.sha256, "masks": dataset.has_masks}
    if not isinstance(info, dict) or any(info.get(k) != v for k, v in expected.items()):
        logger.warning("ignoring a tensor cache that does not match its dataset (%s)",
                       folder.name)
        return None
    try:
        images = np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False)
        masks = (np.load(folder / "masks.npy", mmap_mode="r", allow_pickle=False)
                 if dataset.has_masks else None)
    except (OSError, ValueError):
        logger.warning("ignoring a tensor cache whose arrays do not load (%s)", folder.name)
        return None
    n = len(dataset)
    if images.shape != (n, c, h, w) or images.dtype != np.float32 or (
            masks is not None and (masks.shape != (n, h, w) or masks.dtype != np.uint8)):
        logger.warning("ignoring a tensor cache of the wrong shape (%s)", folder.name)
        return None
    return TensorCache(folder, images, masks)


def build_cache(dataset: StoredDataset, card: ModelCard,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Path | None:
    """Decode every image of ``dataset`` for ``card`` once into its cache folder.

    Returns the folder (also when another builder made it first), or ``None`` when the
    images would take more than ``max_bytes`` (those datasets are decoded per shard).

    Raises:
        LabelMismatchError: the dataset's labels do not fit the card.
    """
    from models.datasets.store import check_labels

    check_labels(dataset.info, card)
    folder = cache_dir(dataset.root, card)
    if open_cache(dataset, card) is not None:
        return folder
    n = len(dataset)
    size = image_bytes(n, card)
    if size > max_bytes:
        logger.info("no tensor cache for a dataset of %d images: %d bytes, limit %d",
                    n, size, max_bytes)
        return None
    c, h, w = card.input.channels, card.input.height, card.input.width
    staging = folder.parent / f".{folder.name}.building-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        images = open_memmap(staging / "images.npy", "w+", np.float32, (n, c, h, w))
        masks = (open_memmap(staging / "masks.npy", "w+", np.uint8, (n, h, w))
                 if dataset.has_masks else None)
        for start in range(0, n, BUILD_BATCH):
            index = np.arange(start, min(start + BUILD_BATCH, n))
            x, _, m = dataset.decoded_tensors(card, index)
            images[start:start + len(index)] = x.numpy()
            if masks is not None and m is not None:
                masks[start:start + len(index)] = m.numpy().astype(np.uint8)
        images.flush()
        del images
        if masks is not None:
            masks.flush()
            del masks
        info = {"signature": signature_fields(card), "count": n,
                "dataset_sha256": dataset.info.sha256, "masks": dataset.has_masks,
                "shape": [n, c, h, w], "dtype": "float32"}
        (staging / INFO).write_text(json.dumps(info, indent=1))
        try:
            os.replace(staging, folder)
        except OSError:  # another builder renamed its cache into place first
            if open_cache(dataset, card) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("tensor cache of %d images (%d bytes) for input %s", n, size, folder.name)
    return folder
