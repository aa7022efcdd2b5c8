"""One importer per archive format, looked up by name in :data:`IMPORTERS`.

An importer reads only names, sizes and label files from the (already safety-checked)
archive and returns a :class:`Plan`: which images to store, with which labels, splits and
masks. Image bytes are fetched lazily by the caller, which decodes every one of them
before anything is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from models.card import Task
from models.datasets.archive import Entry, SafeArchive, listed, reason
from models.datasets.labels_csv import CsvLabels, parse_label_csv
from models.datasets.types import ImportLimits
from models.errors import InvalidDatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""})
MASKS_DIR = "masks"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PlannedItem:
    """An image to store. ``payload()`` returns its bytes (read from the archive or made
    from an array); ``dest`` is its path under the dataset's ``files/`` folder."""

    dest: str
    payload: Callable[[], bytes]
    label: int | None = None
    findings: tuple[int, ...] | None = None
    split: str | None = None
    mask_dest: str | None = None
    mask_payload: Callable[[], bytes] | None = None
    require_dicom: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    task: Task
    label_names: tuple[str, ...]
    items: list[PlannedItem]
    implicit_negatives: bool = False
    splits: dict[str, int] | None = None
    ignored_files: int = 0
    extra: dict[str, object] = field(default_factory=dict)


Importer = Callable[[SafeArchive, Path, ImportLimits, Sequence[str] | None, Path], Plan]


def _reader(archive: SafeArchive, entry: Entry, limit: int) -> Callable[[], bytes]:
    return lambda: archive.read(entry, limit)


def _is_image(entry: Entry) -> bool:
    return entry.suffix in IMAGE_SUFFIXES


def _check_masks(items: list[PlannedItem]) -> None:
    with_mask = sum(1 for item in items if item.mask_payload is not None)
    if 0 < with_mask < len(items):
        raise InvalidDatasetError(
            f"masks are given for {with_mask} of {len(items)} images; give a mask for every "
            "image or for none",
            {"with_mask": with_mask, "images": len(items)},
        )


def _labels_index(label_names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(label_names)}


# ----------------------------------------------------------------------------- imagefolder


def import_imagefolder(
    archive: SafeArchive,
    zip_path: Path,
    limits: ImportLimits,
    labels: Sequence[str] | None,
    staging: Path,
) -> Plan:
    """One folder per class (``<class>/<...>/<image>``); masks at ``masks/<same path>``.

    A single folder wrapping all the class folders (``dataset/<class>/...``) is skipped.
    Files outside class folders and files that are not images (by extension: PNG, JPEG,
    DICOM or none) are ignored and counted.
    """
    images = [e for e in archive.entries if _is_image(e)]
    ignored = len(archive.entries) - len(images)
    parts = [e.path.split("/") for e in images]
    prefix = 0
    if parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1:
        prefix = 1  # one wrapper folder around the class folders
    by_rel = {"/".join(p[prefix:]): e for p, e in zip(parts, images, strict=True)}
    masks = {r[len(MASKS_DIR) + 1 :]: e for r, e in by_rel.items() if r.startswith(MASKS_DIR + "/")}
    samples = [(r, e) for r, e in by_rel.items() if not r.startswith(MASKS_DIR + "/")]
    in_class = [(r, e) for r, e in samples if "/" in r]
    ignored += len(samples) - len(in_class)
    if not in_class:
        raise InvalidDatasetError(
            "imagefolder: no images in class folders; expected <class>/<image> entries",
            {"entries": listed([e.path for e in archive.entries])},
        )
    classes = {r.split("/", 1)[0] for r, _ in in_class}
    if labels is not None:
        unknown = sorted(classes - set(labels))
        if unknown:
            raise InvalidDatasetError(
                f"imagefolder: class folders not in the given labels: {unknown}",
                {"unknown": unknown, "labels": list(labels)},
            )
        label_names = tuple(labels)
    else:
        label_names = tuple(sorted(classes))
    index = _labels_index(label_names)
    items = []
    for rel, entry in sorted(in_class):
        mask_entry = masks.get(rel) or masks.get(str(PurePosixPath(rel).with_suffix(".png")))
        items.append(
            PlannedItem(
                dest=entry.path,
                payload=_reader(archive, entry, limits.max_image_bytes),
                label=index[rel.split("/", 1)[0]],
                mask_dest=mask_entry.path if mask_entry else None,
                mask_payload=_reader(archive, mask_entry, limits.max_image_bytes)
                if mask_entry
                else None,
            )
        )
    _check_masks(items)
    return Plan("single-label", label_names, items, ignored_files=ignored)


# ----------------------------------------------------------------------------- csv, dicom


class _Resolver:
    """Finds the archive entry a CSV names: as a path from the archive root, from the
    CSV's folder, or by its unique base name (ChestX-ray14 names bare files)."""

    def __init__(self, archive: SafeArchive, csv_entry: Entry) -> None:
        self.archive = archive
        self.base = str(PurePosixPath(csv_entry.path).parent)
        self.by_name: dict[str, list[Entry]] = {}
        for e in archive.entries:
            self.by_name.setdefault(e.name, []).append(e)

    def exact(self, ref: str) -> Entry | None:
        ref = ref.replace("\\", "/").strip()
        candidates = [ref] if self.base in ("", ".") else [ref, f"{self.base}/{ref}"]
        for c in candidates:
            c = "/".join(p for p in c.split("/") if p not in ("", "."))
            if c in self.archive.by_path:
                return self.archive.by_path[c]
        return None

    def __call__(self, ref: str, exclude: set[str] | frozenset[str] = frozenset()) -> Entry | None:
        found = self.exact(ref)
        if found is not None:
            return found
        name = PurePosixPath(ref.replace("\\", "/").strip()).name
        same = [e for e in self.by_name.get(name, []) if e.path not in exclude]
        return same[0] if len(same) == 1 else None


def _the_csv(archive: SafeArchive) -> Entry:
    csvs = [e for e in archive.entries if e.suffix == ".csv"]
    if len(csvs) != 1:
        raise InvalidDatasetError(
            f"the archive must hold exactly one label CSV; found {len(csvs)}",
            {"csv_files": listed([e.path for e in csvs])},
        )
    return csvs[0]


def _from_csv(
    archive: SafeArchive,
    limits: ImportLimits,
    labels: Sequence[str] | None,
    fmt: str,
) -> Plan:
    csv_entry = _the_csv(archive)
    # Every row names a distinct file of the archive, so rows past the file limit are
    # refused as they are read.
    with archive.open_text(csv_entry, limits.max_csv_bytes) as text:
        parsed: CsvLabels = parse_label_csv(
            text, csv_entry.path, labels, max_rows=min(limits.max_csv_rows, limits.max_files)
        )
    resolve = _Resolver(archive, csv_entry)
    # Masks are found by exact path, so that a bare image name is not confused with its
    # mask of the same name in another folder.
    mask_paths = {m.path for r in parsed.rows if r.mask and (m := resolve.exact(r.mask))}
    index = _labels_index(parsed.label_names)
    missing, missing_masks, duplicates = [], [], []
    used: set[str] = set()
    items = []
    for row in parsed.rows:
        entry = resolve(row.file, exclude=mask_paths)
        if entry is None:
            missing.append(row.file)
            continue
        if entry.path in used:
            duplicates.append(row.file)
            continue
        used.add(entry.path)
        mask_entry = None
        if row.mask is not None:
            mask_entry = resolve.exact(row.mask)
            if mask_entry is None:
                missing_masks.append(row.mask)
                continue
        if parsed.task == "single-label":
            label, findings = index[row.labels[0]], None
        else:
            label, findings = None, tuple(sorted(index[f] for f in row.labels))
        items.append(
            PlannedItem(
                dest=entry.path,
                payload=_reader(archive, entry, limits.max_image_bytes),
                label=label,
                findings=findings,
                mask_dest=mask_entry.path if mask_entry else None,
                mask_payload=_reader(archive, mask_entry, limits.max_image_bytes)
                if mask_entry
                else None,
                require_dicom=fmt == "dicom",
                metadata=row.metadata,
            )
        )
    if missing or missing_masks:
        raise InvalidDatasetError(
            f"{csv_entry.path} names {len(missing)} image files and {len(missing_masks)} "
            "mask files that are not in the archive",
            {"missing": listed(missing), "missing_masks": listed(missing_masks)},
        )
    if duplicates:
        raise InvalidDatasetError(
            f"{csv_entry.path} names {len(duplicates)} files more than once",
            {"duplicates": listed(duplicates)},
        )
    _check_masks(items)
    ignored = len(archive.entries) - len(items) - len(mask_paths) - 1
    return Plan(
        parsed.task,
        parsed.label_names,
        items,
        implicit_negatives=parsed.implicit_negatives,
        ignored_files=max(ignored, 0),
        extra={"convention": parsed.convention, "metadata_dropped": parsed.metadata_dropped},
    )


def import_csv(
    archive: SafeArchive,
    zip_path: Path,
    limits: ImportLimits,
    labels: Sequence[str] | None,
    staging: Path,
) -> Plan:
    """Image files (PNG, JPEG or DICOM) plus one label CSV (see ``labels_csv``)."""
    return _from_csv(archive, limits, labels, "csv")


def import_dicom(
    archive: SafeArchive,
    zip_path: Path,
    limits: ImportLimits,
    labels: Sequence[str] | None,
    staging: Path,
) -> Plan:
    """DICOM files plus one label CSV; every image must be DICOM."""
    return _from_csv(archive, limits, labels, "dicom")


# ----------------------------------------------------------------------------- medmnist


def _open_npz(
    archive: SafeArchive, zip_path: Path, limits: ImportLimits, staging: Path
) -> tuple[np.lib.npyio.NpzFile, str]:
    if any(e.suffix == ".npy" for e in archive.entries):
        source, name = zip_path, zip_path.name  # the upload is the npz itself
    else:
        npzs = [e for e in archive.entries if e.suffix == ".npz"]
        if len(npzs) != 1:
            raise InvalidDatasetError(
                f"medmnist-npz: the archive must hold exactly one .npz file; found {len(npzs)}",
                {"npz_files": listed([e.path for e in npzs])},
            )
        source = staging / "_upload.npz"
        archive.copy_to(npzs[0], source)
        name = npzs[0].path
        # The inner npz is a zip too: the same bomb checks apply to its members.
        SafeArchive(
            source,
            max_files=limits.max_files,
            max_uncompressed_bytes=limits.max_uncompressed_bytes,
            label=name,
        ).close()
    try:
        return np.load(source, allow_pickle=False), name
    except Exception as exc:
        raise InvalidDatasetError(
            f"medmnist-npz: {name} is not a readable npz ({reason(exc)})"
        ) from exc


def _array(npz: np.lib.npyio.NpzFile, key: str, name: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except Exception as exc:  # object arrays (pickles) are refused here, among others
        raise InvalidDatasetError(f"medmnist-npz: {name}[{key!r}] cannot be read ({exc})") from exc


def _png_of(array: np.ndarray, index: int) -> Callable[[], bytes]:
    from models.imaging import encode_png

    return lambda: encode_png(array[index])


_Split = tuple[str | None, np.ndarray, np.ndarray, np.ndarray | None]


def import_medmnist(
    archive: SafeArchive,
    zip_path: Path,
    limits: ImportLimits,
    labels: Sequence[str] | None,
    staging: Path,
) -> Plan:
    """The MedMNIST npz layout: ``<split>_images`` uint8 ``[N, H, W]`` or ``[N, H, W, 3]``
    (uint16 greyscale too) and ``<split>_labels`` ``[N]``/``[N, 1]`` class indices or
    ``[N, K]`` 0/1 findings, for splits ``train``, ``val``, ``test`` (or unsplit
    ``images``/``labels``). Optional: ``label_names`` and ``<split>_masks`` ``[N, H, W]``.
    Images are stored as lossless PNGs."""
    npz, name = _open_npz(archive, zip_path, limits, staging)
    keys = set(npz.files)
    found = [s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]
    split_keys: list[tuple[str | None, str]] = [(s, f"{s}_") for s in found]
    if not split_keys and {"images", "labels"} <= keys:
        split_keys = [(None, "")]
    if not split_keys:
        raise InvalidDatasetError(
            f"medmnist-npz: {name} has no '<split>_images' and '<split>_labels' arrays "
            "(splits train, val, test)",
            {"keys": sorted(keys)},
        )
    parts = [_npz_split(npz, name, keys, split, prefix) for split, prefix in split_keys]
    widths = {y.shape[1] for _, _, y, _ in parts}
    if len(widths) != 1:
        raise InvalidDatasetError(f"medmnist-npz: the splits have different label widths {widths}")
    width = widths.pop()
    task: Task = "single-label" if width == 1 else "multi-label"
    if task == "multi-label" and any((y > 1).any() for _, _, y, _ in parts):
        raise InvalidDatasetError("medmnist-npz: multi-label labels must be 0 or 1")
    count = width if task == "multi-label" else int(max(y.max() for _, _, y, _ in parts)) + 1
    if labels is not None:
        label_names = tuple(labels)
    elif "label_names" in keys:
        label_names = tuple(str(v) for v in _array(npz, "label_names", name).tolist())
    else:
        label_names = tuple(str(i) for i in range(count))
    if (task == "multi-label" and len(label_names) != width) or len(label_names) < count:
        raise InvalidDatasetError(
            f"medmnist-npz: {len(label_names)} label names for labels that need {count}",
            {"label_names": list(label_names)},
        )
    items, split_counts = _npz_items(parts, task)
    splits = split_counts if any(s is not None for s, *_ in parts) else None
    return Plan(task, label_names, items, splits=splits)


def _npz_split(
    npz: np.lib.npyio.NpzFile, name: str, keys: set[str], split: str | None, prefix: str
) -> _Split:
    """One split's images, labels ``[N, K]`` int64 and masks, checked."""
    images = _array(npz, f"{prefix}images", name)
    y = _array(npz, f"{prefix}labels", name)
    where = f"{prefix}images"
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
        raise InvalidDatasetError(
            f"medmnist-npz: {where} must be [N, H, W] or [N, H, W, 3], got {images.shape}"
        )
    if images.dtype not in (np.uint8, np.uint16) or (
        images.dtype == np.uint16 and images.ndim == 4
    ):
        raise InvalidDatasetError(
            f"medmnist-npz: {where} must be uint8 (or uint16 greyscale), got {images.dtype}"
        )
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != images.shape[0]:
        raise InvalidDatasetError(
            f"medmnist-npz: {prefix}labels must be [N] or [N, K] with N = "
            f"{images.shape[0]}, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise InvalidDatasetError(f"medmnist-npz: {prefix}labels must be numbers")
    if not np.all(np.equal(np.mod(y, 1), 0)) or (y < 0).any():
        raise InvalidDatasetError(f"medmnist-npz: {prefix}labels must hold non-negative integers")
    masks = _array(npz, f"{prefix}masks", name) if f"{prefix}masks" in keys else None
    if masks is not None and (masks.shape != images.shape[:3] or masks.dtype != np.uint8):
        raise InvalidDatasetError(
            f"medmnist-npz: {prefix}masks must be uint8 {images.shape[:3]}, "
            f"got {masks.dtype} {masks.shape}"
        )
    return split, images, y.astype(np.int64), masks


def _npz_items(parts: list[_Split], task: Task) -> tuple[list[PlannedItem], dict[str, int]]:
    items = []
    split_counts: dict[str, int] = {}
    for split, images, y, masks in parts:
        folder = split or "all"
        mask_png = (masks > 0).astype(np.uint8) * np.uint8(255) if masks is not None else None
        split_counts[folder] = int(images.shape[0])
        for i in range(images.shape[0]):
            dest = f"{folder}/{i:07d}.png"
            items.append(
                PlannedItem(
                    dest=dest,
                    payload=_png_of(images, i),
                    label=int(y[i, 0]) if task == "single-label" else None,
                    findings=tuple(int(k) for k in np.flatnonzero(y[i]))
                    if task == "multi-label"
                    else None,
                    split=split,
                    mask_dest=f"masks/{dest}" if mask_png is not None else None,
                    mask_payload=_png_of(mask_png, i) if mask_png is not None else None,
                )
            )
    return items, split_counts


IMPORTERS: dict[str, Importer] = {
    "imagefolder": import_imagefolder,
    "csv": import_csv,
    "medmnist-npz": import_medmnist,
    "dicom": import_dicom,
}
