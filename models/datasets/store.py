"""Import an archive into the canonical on-disk dataset, and load it back.

A stored dataset is a folder::

    manifest.json   info (DatasetInfo), the limits it was checked with, one item per image
    files/...       the original image files (DICOM headers survive), masks, or PNGs made
                    from a MedMNIST npz

Import is all or nothing: the archive is checked, planned, extracted and every image
decoded in a staging folder beside ``dest_dir``, which is renamed into place only when all
passed. On refusal nothing is left (the staging folder is removed, and ``dest_dir`` too
when it was empty).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from models.card import ModelCard
from models.datasets.archive import SafeArchive
from models.datasets.extract import Extracted, extract
from models.datasets.importers import IMPORTERS, Plan
from models.datasets.tensor_cache import TensorCache, input_signature, open_cache
from models.datasets.types import (
    FORMATS,
    MANIFEST,
    ON_BAD_FILES,
    DatasetInfo,
    ImportLimits,
    Manifest,
    ManifestItem,
    OnBadFiles,
)
from models.errors import InvalidDatasetError, InvalidParametersError, LabelMismatchError
from models.hashing import sha256_file
from models.imaging import DecodedImage, DecodeLimits, decode_image, resize, to_model_input

logger = logging.getLogger(__name__)

MAX_LISTED_SKIPPED = 50


def import_dataset(
    zip_path: Path,
    fmt: str,
    dest_dir: Path,
    *,
    limits: ImportLimits | None = None,
    labels: Sequence[str] | None = None,
    on_bad_files: OnBadFiles = "refuse",
) -> DatasetInfo:
    """Check, extract and decode an uploaded archive into ``dest_dir``.

    Args:
        zip_path: the uploaded zip (for ``medmnist-npz``, the npz itself or a zip holding
            one npz).
        fmt: ``imagefolder``, ``csv``, ``medmnist-npz`` or ``dicom``.
        dest_dir: where the dataset goes; must not exist or be empty.
        limits: the archive and image limits (defaults: :class:`ImportLimits`).
        labels: the label names, in order, when the archive does not say them all (a
            MedMNIST npz) or to fix their order; labels outside it are refused.
        on_bad_files: what to do with images (or masks) that do not decode. ``"refuse"``
            (the default): refuse the import, listing every bad file (the first 50) and
            its reason. ``"skip"``: import the rest and record the skipped files in
            ``DatasetInfo.skipped_files`` / ``skipped_count`` (refused when none is left).

    Raises:
        InvalidParametersError: unknown format or ``on_bad_files`` value.
        InvalidDatasetError: an unsafe, oversized or malformed archive, unreadable images
            (listed in ``details["unreadable"]``), a CSV naming missing files, labels not
            in the CSV header. Nothing is stored.
    """
    limits = limits or ImportLimits()
    if on_bad_files not in ON_BAD_FILES:
        raise InvalidParametersError(
            f"unknown on_bad_files {on_bad_files!r}; valid: {', '.join(ON_BAD_FILES)}",
            {"valid": list(ON_BAD_FILES)},
        )
    importer = IMPORTERS.get(fmt)
    if importer is None:
        raise InvalidParametersError(
            f"unknown dataset format {fmt!r}; valid: {', '.join(FORMATS)}",
            {"valid": list(FORMATS)},
        )
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise FileExistsError(f"{dest_dir} exists and is not an empty folder")
    size = zip_path.stat().st_size
    if size > limits.max_archive_bytes:
        raise InvalidDatasetError(
            f"the archive is {size} bytes, more than the limit of {limits.max_archive_bytes}",
            {"bytes": size, "max_archive_bytes": limits.max_archive_bytes},
        )
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = dest_dir.parent / f".{dest_dir.name}.importing-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with SafeArchive(
            zip_path,
            max_files=limits.max_files,
            max_uncompressed_bytes=limits.max_uncompressed_bytes,
        ) as archive:
            plan = importer(archive, zip_path, limits, labels, staging)
            if not plan.items:
                raise InvalidDatasetError("the archive holds no images")
            extracted = extract(plan, staging, limits, on_bad_files)
        info = _info(fmt, plan, extracted, sha256_file(zip_path))
        (staging / "_upload.npz").unlink(missing_ok=True)
        manifest = Manifest(info=info, limits=limits, items=tuple(extracted.items))
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=1))
        if dest_dir.exists():
            dest_dir.rmdir()
        os.replace(staging, dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if dest_dir.is_dir() and not any(dest_dir.iterdir()):
            dest_dir.rmdir()
        raise
    logger.info("imported %s dataset: %d images, labels %s", fmt, info.count, info.label_names)
    return info


def _info(fmt: str, plan: Plan, extracted: Extracted, sha256: str) -> DatasetInfo:
    items = extracted.items
    splits = None
    if plan.splits is not None:
        splits = {name: 0 for name in plan.splits}
        for item in items:
            folder = item.split or "all"
            splits[folder] = splits.get(folder, 0) + 1
    return DatasetInfo(
        format=fmt,
        count=len(items),
        task=plan.task,
        label_names=plan.label_names,
        label_counts=_label_counts(plan.label_names, items),
        sha256=sha256,
        splits=splits,
        has_masks=all(i.mask is not None for i in items),
        implicit_negatives=plan.implicit_negatives,
        image_formats=extracted.formats,
        ignored_files=plan.ignored_files,
        skipped_files=tuple(extracted.bad[:MAX_LISTED_SKIPPED]),
        skipped_count=len(extracted.bad),
        metadata_keys=extracted.metadata_keys,
        metadata_dropped=extracted.metadata_dropped,
    )


def _label_counts(label_names: tuple[str, ...], items: list[ManifestItem]) -> dict[str, int]:
    counts = dict.fromkeys(label_names, 0)
    for item in items:
        if item.label is not None:
            counts[label_names[item.label]] += 1
        for k in item.findings or ():
            counts[label_names[k]] += 1
    return counts


# ----------------------------------------------------------------------------- loading


class StoredDataset:
    """An imported dataset on disk. Images are decoded on demand, exactly as predict does
    (:func:`models.imaging.decode_image` then :func:`models.imaging.to_model_input`)."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.info = manifest.info
        self.items = manifest.items
        self._caches: dict[str, TensorCache] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.info.label_names

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def has_masks(self) -> bool:
        return self.info.has_masks

    def split_indices(self, split: str) -> np.ndarray:
        """Indices of the images in ``split`` (``train``, ``val``, ``test``)."""
        return np.array([i for i, it in enumerate(self.items) if it.split == split], np.int64)

    def decode(self, index: int) -> DecodedImage:
        """Image ``index``, decoded under the limits the dataset was imported with."""
        item = self.items[index]
        return decode_image(
            (self.root / item.file).read_bytes(),
            filename=item.source,
            limits=self._decode_limits,
        )

    @property
    def _decode_limits(self) -> DecodeLimits:
        return self.manifest.limits.decode_limits()

    def metadata(self, indices: Sequence[int] | np.ndarray | None = None) -> list[dict[str, str]]:
        """The per-image metadata (group labels such as ``sex``, ``age_band``, ``view``,
        ``manufacturer``), in dataset order or for ``indices``; ``{}`` for an image without
        any, and for every image of a dataset imported before metadata were kept."""
        idx = range(len(self.items)) if indices is None else [int(i) for i in indices]
        return [dict(self.items[i].metadata) for i in idx]

    def labels(self, card: ModelCard | None = None) -> torch.Tensor:
        """All labels in the head convention: ``LongTensor [N]`` class indices or float
        ``[N, K]`` 0/1 findings, in the card's label order when a card is given."""
        return self._labels(range(len(self.items)), card)

    def _labels(self, indices: Sequence[int] | range, card: ModelCard | None) -> torch.Tensor:
        names = card.labels if card is not None else self.label_names
        to_card = {d: names.index(n) for d, n in enumerate(self.label_names) if n in names}
        if self.info.task == "single-label":
            values = []
            for i in indices:
                label = self.items[i].label
                assert label is not None
                if label not in to_card:
                    raise LabelMismatchError(
                        f"class {self.label_names[label]!r} is not a label of the model"
                    )
                values.append(to_card[label])
            return torch.tensor(values, dtype=torch.long)
        out = torch.zeros(len(indices), len(names), dtype=torch.float32)
        for row, i in enumerate(indices):
            for k in self.items[i].findings or ():
                if k in to_card:
                    out[row, to_card[k]] = 1.0
        return out

    def tensors(
        self, card: ModelCard, indices: Sequence[int] | np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(images, labels, masks)`` for ``indices`` (all when ``None``).

        images: float32 ``[N, C, H, W]`` in ``[0, 1]`` at the card's size and channels;
        labels: the head convention in the card's label order (see :meth:`labels`);
        masks: float32 ``[N, H, W]`` 0/1 lesion masks resized as the images are, or
        ``None`` when the dataset has none.

        Read from the dataset's tensor cache for the card's input
        (:mod:`models.datasets.tensor_cache`) when it has one, else decoded: the two give
        the same tensors.

        Raises:
            LabelMismatchError: the dataset's labels do not fit the card (:func:`check_labels`).
        """
        return self._tensors(card, indices, self.cache(card))

    def cache(self, card: ModelCard) -> TensorCache | None:
        """The tensor cache for ``card``'s input, or ``None`` (looked for again next time)."""
        key = input_signature(card)
        if key not in self._caches:
            found = open_cache(self, card)
            if found is None:
                return None
            self._caches[key] = found
        return self._caches[key]

    def decoded_tensors(
        self, card: ModelCard, indices: Sequence[int] | np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`tensors`, always decoding the files (what the tensor cache is built from)."""
        return self._tensors(card, indices, None)

    def _tensors(
        self, card: ModelCard, indices: Sequence[int] | np.ndarray | None,
        cache: TensorCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        check_labels(self.info, card)
        idx = list(range(len(self.items))) if indices is None else [int(i) for i in indices]
        labels = self._labels(idx, card)
        if cache is not None:
            if any(not 0 <= i < len(self.items) for i in idx):
                raise IndexError("image index out of range")
            images, cached_masks = cache.rows(idx)
            masks = None if cached_masks is None else torch.from_numpy(cached_masks)
            return torch.from_numpy(images), labels, masks
        decoded = (
            torch.stack([to_model_input(self.decode(i), card) for i in idx])
            if idx
            else (torch.empty(0, card.input.channels, card.input.height, card.input.width))
        )
        return decoded, labels, self._masks(idx, card) if self.has_masks else None

    def batches(
        self, card: ModelCard, batch_size: int, indices: Sequence[int] | np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """``(indices, images, labels, masks)`` in batches of at most ``batch_size``."""
        idx = np.arange(len(self.items)) if indices is None else np.asarray(indices, np.int64)
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            yield (part, *self.tensors(card, part))

    def _masks(self, idx: list[int], card: ModelCard) -> torch.Tensor:
        h, w = card.input.height, card.input.width
        out = torch.zeros(len(idx), h, w)
        for row, i in enumerate(idx):
            mask_file = self.items[i].mask
            assert mask_file is not None
            decoded = decode_image(
                (self.root / mask_file).read_bytes(), filename=mask_file, limits=self._decode_limits
            )
            # On the integer samples: a mask never needs a full-size float copy.
            lesion = decoded.samples.max(axis=2) > decoded.scale / 2.0
            m = torch.from_numpy(lesion).float()[None, None]
            out[row] = resize(m, h, w, card.preprocessing.resize, mode="nearest")[0, 0]
        return out


def load_dataset(dest_dir: Path) -> StoredDataset:
    """The dataset stored by :func:`import_dataset` in ``dest_dir``."""
    root = Path(dest_dir)
    path = root / MANIFEST
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidDatasetError("the dataset's files are missing (was it deleted?)") from exc
    except ValueError as exc:
        raise InvalidDatasetError(
            f"the dataset manifest is invalid ({type(exc).__name__})"
        ) from exc
    return StoredDataset(root, manifest)


def check_labels(info: DatasetInfo, card: ModelCard) -> None:
    """Refuse a dataset whose labels do not fit the model card (HTTP 422).

    The tasks must match; every dataset label must be a card label (a test set may lack
    some classes); for multi-label data every card finding must be in the dataset too,
    unless the dataset's convention makes unnamed findings negative (ChestX-ray14).
    """
    dataset, model = list(info.label_names), list(card.labels)
    unknown = [n for n in dataset if n not in model]
    missing = [n for n in model if n not in dataset]
    details = {
        "dataset_task": info.task,
        "model_task": card.task,
        "dataset_labels": dataset,
        "model_labels": model,
        "unknown": unknown,
        "missing": missing,
    }
    if info.task != card.task:
        raise LabelMismatchError(
            f"the dataset is {info.task} but model {card.name!r} is {card.task}", details
        )
    if unknown:
        raise LabelMismatchError(
            f"dataset labels {unknown} are not labels of model {card.name!r} {model}", details
        )
    if info.task == "multi-label" and missing and not info.implicit_negatives:
        raise LabelMismatchError(
            f"model {card.name!r} findings {missing} are not in the dataset", details
        )
