"""Extraction: every planned image decoded (the predict path's checks), kept or reported.

Each image of a :class:`~models.datasets.importers.Plan` is read from the archive,
decoded with :func:`models.imaging.decode_image` under the import's decode limits and one
pixel budget for the whole import, and written to the staging folder when it decodes.
Images (or their masks) that do not decode, or are over the image byte limit, are *bad
files*, collected by name with the decoder's reason: with ``on_bad_files="refuse"`` (the
default) the import is refused listing them, with ``"skip"`` the rest is kept and the bad
ones are recorded in the dataset info. An archive entry that is corrupt or inflates past
its declared size, and an import past its pixel budget, refuse the whole import whatever
the option: those are attacks on the importer, not bad images.

Per-image metadata (:mod:`models.datasets.metadata`) is gathered here too: the CSV's
columns over the DICOM header's tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.datasets.archive import listed
from models.datasets.importers import Plan, PlannedItem
from models.datasets.metadata import GroupCollector, dicom_metadata
from models.datasets.types import FILES_DIR, BadFile, ImportLimits, ManifestItem, OnBadFiles
from models.errors import ImageTooLargeError, InvalidDatasetError, InvalidImageError
from models.imaging import DecodeBudget, DecodedImage, DecodeLimits, decode_image


@dataclass
class Extracted:
    """What extraction kept: manifest items, images per format, the bad files and the
    metadata keys kept and dropped."""

    items: list[ManifestItem] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    bad: list[BadFile] = field(default_factory=list)
    metadata_keys: tuple[str, ...] = ()
    metadata_dropped: tuple[str, ...] = ()


class _Decoder:
    """Decodes payloads under one set of limits and one budget, writing good ones."""

    def __init__(self, staging: Path, limits: ImportLimits) -> None:
        self.staging = staging
        self.limits: DecodeLimits = limits.decode_limits()
        self.budget: DecodeBudget = self.limits.budget()

    def store(self, payload: Callable[[], bytes], dest: str) -> DecodedImage | str:
        """The decoded image (its bytes written under ``files/``), or why it is bad."""
        try:
            data = payload()
        except InvalidDatasetError as exc:
            if "bytes" not in exc.details:
                raise  # corrupt, or inflating past its declared size: the archive lies
            return exc.message  # over the image byte limit: a bad file
        try:
            decoded = decode_image(data, filename=dest, limits=self.limits, budget=self.budget)
        except ImageTooLargeError as exc:
            if "max_total_pixels" in exc.details:
                raise InvalidDatasetError(
                    f"the archive's images together exceed {self.budget.limit} pixels, the "
                    "import's limit; nothing was stored",
                    {"max_total_pixels": self.budget.limit},
                ) from exc
            return exc.message
        except InvalidImageError as exc:
            return exc.message
        path = self.staging / FILES_DIR / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return decoded

    def forget(self, dest: str) -> None:
        (self.staging / FILES_DIR / dest).unlink(missing_ok=True)


def extract(
    plan: Plan, staging: Path, limits: ImportLimits, on_bad_files: OnBadFiles = "refuse"
) -> Extracted:
    """Decode and store every planned image; see the module docstring.

    Raises:
        InvalidDatasetError: bad files with ``on_bad_files="refuse"``, or no good image
            left with ``"skip"`` (``details["unreadable"]`` lists the first 50 as
            ``{"file", "error"}``, ``details["count"]`` counts them); a corrupt or lying
            archive entry; the import's pixel budget passed.
    """
    decoder = _Decoder(staging, limits)
    collector = GroupCollector()
    out = Extracted()
    kept_metadata: list[dict[str, str]] = []
    for item in plan.items:
        result = _store_item(decoder, item)
        if isinstance(result, BadFile):
            out.bad.append(result)
            continue
        fmt, header_metadata = result
        out.formats[fmt] = out.formats.get(fmt, 0) + 1
        kept_metadata.append(collector.add({**header_metadata, **item.metadata}))
        out.items.append(_manifest_item(item))
    if out.bad and (on_bad_files == "refuse" or not out.items):
        raise InvalidDatasetError(
            f"{len(out.bad)} images cannot be read; nothing was stored",
            {"unreadable": listed([b.model_dump() for b in out.bad]), "count": len(out.bad)},
        )
    metadata = collector.finish(kept_metadata)
    out.items = [
        item.model_copy(update={"metadata": m}) for item, m in zip(out.items, metadata, strict=True)
    ]
    out.metadata_keys = collector.keys
    from_csv = plan.extra.get("metadata_dropped", ())
    dropped = set(collector.dropped) | set(from_csv if isinstance(from_csv, tuple) else ())
    out.metadata_dropped = tuple(sorted(dropped))
    return out


def _store_item(decoder: _Decoder, item: PlannedItem) -> BadFile | tuple[str, dict[str, str]]:
    """Store one image and its mask: ``(format, header metadata)``, or the bad file."""
    decoded = decoder.store(item.payload, item.dest)
    if isinstance(decoded, str):
        return BadFile(file=item.dest, error=decoded)
    if item.require_dicom and decoded.source_format != "dicom":
        decoder.forget(item.dest)
        return BadFile(file=item.dest, error=f"{decoded.source_format.upper()}, not DICOM")
    if item.mask_payload is not None and item.mask_dest is not None:
        mask = decoder.store(item.mask_payload, item.mask_dest)
        if isinstance(mask, str):
            decoder.forget(item.dest)
            return BadFile(file=item.mask_dest, error=mask)
    header = decoded.dicom.header if decoded.dicom is not None else None
    return decoded.source_format, dicom_metadata(header) if header is not None else {}


def _manifest_item(item: PlannedItem) -> ManifestItem:
    return ManifestItem(
        file=f"{FILES_DIR}/{item.dest}",
        label=item.label,
        findings=item.findings,
        split=item.split,
        mask=f"{FILES_DIR}/{item.mask_dest}" if item.mask_dest else None,
        source=item.dest,
    )
