"""Label CSVs: which column names the file, and which carry the labels.

Three conventions, recognized from the header (names compared case-insensitively):

1. **ChestX-ray14**: a ``Finding Labels`` column, findings joined by ``|``, ``No Finding``
   for none (multi-label). A finding never named is negative everywhere
   (``implicit_negatives``).
2. **Single-label**: a ``label`` (or ``class``, ``diagnosis``) column of class names.
3. **0/1 columns**: every other column is a finding holding 0 or 1 (multi-label); with
   ``labels`` given, only those columns are read and each must be in the header.

The file column is the first of ``Image Index``, ``file``, ``filename``, ``file_name``,
``image``, ``image_path``, ``path``, ``image_id``; an optional ``mask`` column names a
lesion mask image. Other columns (``Patient Age``, ``View Position``... in ChestX-ray14;
every column beyond the file, mask and label columns in the first two conventions, and
beyond the given labels in the third) are per-image metadata, cleaned and capped by
:mod:`models.datasets.metadata`.

The file is parsed as a stream of rows, never held whole: at most ``max_rows`` rows (and
the caller caps its bytes, see :meth:`SafeArchive.open_text`), at most
:data:`MAX_COLUMNS` columns, each cell at most ``csv.field_size_limit()`` characters.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from models.card import Task
from models.datasets.archive import listed
from models.datasets.metadata import GroupCollector, clean_value, column_key
from models.errors import InvalidDatasetError

FILE_COLUMNS = (
    "image index",
    "file",
    "filename",
    "file_name",
    "image",
    "image_path",
    "path",
    "image_id",
)
MASK_COLUMNS = ("mask", "mask_file", "mask_path")
LABEL_COLUMNS = ("label", "class", "diagnosis")
FINDINGS_COLUMN = "finding labels"
NO_FINDING = "No Finding"
#: Columns per row: findings, metadata and the rest; far beyond any label set in use.
MAX_COLUMNS = 1024
#: Rows, when the caller gives no limit.
DEFAULT_MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class CsvRow:
    file: str
    labels: tuple[str, ...]  # the class name, or the positive findings
    mask: str | None
    line: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CsvLabels:
    task: Task
    label_names: tuple[str, ...]
    rows: tuple[CsvRow, ...]
    implicit_negatives: bool
    convention: str
    metadata_dropped: tuple[str, ...] = ()


def _find(header: list[str], candidates: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    return None


def _natural_order(values: set[str]) -> tuple[str, ...]:
    if all(v.lstrip("-").isdigit() for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _rows(data: bytes | Iterable[str], name: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of the non-blank rows; decoding and CSV errors are refusals."""
    if isinstance(data, bytes):
        try:
            lines: Iterable[str] = io.StringIO(data.decode("utf-8-sig"), newline="")
        except UnicodeDecodeError as exc:
            raise InvalidDatasetError(f"{name}: the CSV is not UTF-8 text ({exc})") from exc
    else:
        lines = data
    reader = csv.reader(lines)
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield reader.line_num, cells
    except UnicodeDecodeError as exc:
        raise InvalidDatasetError(f"{name}: the CSV is not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise InvalidDatasetError(f"{name}: malformed CSV ({exc})") from exc


def parse_label_csv(
    data: bytes | Iterable[str],
    name: str,
    labels: Sequence[str] | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> CsvLabels:
    """Parse a label CSV (bytes, or a text stream read row by row) by the conventions above.

    ``labels``, when given, fixes the label set and its order: a class or finding outside
    it is an error, and in the 0/1 convention each must be a header column. More than
    ``max_rows`` rows are refused as soon as the next row is read.
    """
    rows_in = _rows(data, name)
    first = next(rows_in, None)
    if first is None:
        raise InvalidDatasetError(f"{name}: the CSV is empty")
    header = [h.strip() for h in first[1]]
    if len(header) > MAX_COLUMNS:
        raise InvalidDatasetError(
            f"{name}: the CSV header has {len(header)} columns, more than {MAX_COLUMNS}",
            {"columns": len(header), "max_columns": MAX_COLUMNS},
        )
    file_col = _find(header, FILE_COLUMNS)
    if file_col is None:
        raise InvalidDatasetError(
            f"{name}: the CSV header has no file column; expected one of: "
            + ", ".join(repr(c) for c in ("Image Index", *FILE_COLUMNS[1:])),
            {"header": listed(header)},
        )
    mask_col = _find(header, MASK_COLUMNS)
    wanted = tuple(labels) if labels is not None else None
    convention = _convention(name, header, file_col, mask_col, wanted)
    used = {file_col, *convention.columns, *(() if mask_col is None else (mask_col,))}
    meta_cols = [(i, k) for i, h in enumerate(header) if i not in used and (k := column_key(h))]
    collector = GroupCollector()
    rows: list[CsvRow] = []
    short: list[str] = []
    wide: list[str] = []
    for count, (line, cells) in enumerate(rows_in, start=1):
        if count > max_rows:
            raise InvalidDatasetError(
                f"{name}: the CSV has more than {max_rows} rows, the limit",
                {"max_rows": max_rows},
            )
        if len(cells) < len(header):
            short.append(str(line))
            continue
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            # Cells with no column: a shifted row would label the wrong file.
            wide.append(str(line))
            continue
        meta = {k: v for i, k in meta_cols if (v := clean_value(k, cells[i])) is not None}
        rows.append(
            CsvRow(
                _file_of(name, cells, file_col, line),
                convention.labels(cells, line),
                _cell(cells, mask_col),
                line,
                collector.add(meta),
            )
        )
    if short:
        raise InvalidDatasetError(
            f"{name}: {len(short)} rows have fewer cells than the header",
            {"lines": listed(short)},
        )
    if wide:
        raise InvalidDatasetError(
            f"{name}: {len(wide)} rows have more cells than the header",
            {"lines": listed(wide)},
        )
    if not rows:
        raise InvalidDatasetError(f"{name}: the CSV has a header and no rows")
    task, label_names, implicit = convention.finish(rows)
    kept = [
        CsvRow(r.file, r.labels, r.mask, r.line, m)
        for r, m in zip(rows, collector.finish(r.metadata for r in rows), strict=True)
    ]
    return CsvLabels(
        task, label_names, tuple(kept), implicit, convention.name, tuple(sorted(collector.dropped))
    )


def _cell(row: list[str], col: int | None) -> str | None:
    if col is None:
        return None
    value = row[col].strip()
    return value or None


def _file_of(name: str, row: list[str], col: int, line: int) -> str:
    value = row[col].strip()
    if not value:
        raise InvalidDatasetError(f"{name}: line {line} names no file", {"line": line})
    return value


def _check_known(name: str, found: set[str], wanted: tuple[str, ...] | None, what: str) -> None:
    if wanted is None:
        return
    unknown = sorted(found - set(wanted))
    if unknown:
        raise InvalidDatasetError(
            f"{name}: {what} not in the given labels: {listed(unknown)}",
            {"unknown": listed(unknown), "labels": list(wanted)},
        )


class _Convention:
    """How one convention reads labels: ``labels`` per row (collecting problems), then
    ``finish`` refuses what was collected and gives (task, label names, implicit negatives).
    """

    name = ""
    columns: tuple[int, ...] = ()

    def __init__(self, file_name: str, wanted: tuple[str, ...] | None) -> None:
        self.file_name = file_name
        self.wanted = wanted
        self.found: set[str] = set()

    def labels(self, cells: list[str], line: int) -> tuple[str, ...]:
        raise NotImplementedError

    def finish(self, rows: list[CsvRow]) -> tuple[Task, tuple[str, ...], bool]:
        raise NotImplementedError


class _ChestXray14(_Convention):
    name = "chestxray14"

    def __init__(self, file_name: str, wanted: tuple[str, ...] | None, col: int) -> None:
        super().__init__(file_name, wanted)
        self.columns = (col,)

    def labels(self, cells: list[str], line: int) -> tuple[str, ...]:
        raw = [f.strip() for f in cells[self.columns[0]].split("|") if f.strip()]
        positives = tuple(f for f in raw if f != NO_FINDING)
        if NO_FINDING in raw and positives:
            raise InvalidDatasetError(
                f"{self.file_name}: line {line} lists findings together with {NO_FINDING!r}",
                {"line": line},
            )
        if len(self.found) <= MAX_COLUMNS:
            self.found.update(positives)
        return positives

    def finish(self, rows: list[CsvRow]) -> tuple[Task, tuple[str, ...], bool]:
        _check_known(self.file_name, self.found, self.wanted, "findings")
        label_names = self.wanted if self.wanted is not None else tuple(sorted(self.found))
        if not label_names:
            raise InvalidDatasetError(
                f"{self.file_name}: every row is {NO_FINDING!r}; give the finding names "
                "(labels) to import a dataset without positives"
            )
        if len(label_names) > MAX_COLUMNS:
            raise InvalidDatasetError(
                f"{self.file_name}: more than {MAX_COLUMNS} different findings"
            )
        return "multi-label", label_names, True


class _SingleLabel(_Convention):
    name = "label-column"

    def __init__(self, file_name: str, wanted: tuple[str, ...] | None, col: int) -> None:
        super().__init__(file_name, wanted)
        self.columns = (col,)
        self.empty: list[str] = []

    def labels(self, cells: list[str], line: int) -> tuple[str, ...]:
        value = cells[self.columns[0]].strip()
        if not value:
            self.empty.append(str(line))
        elif len(self.found) <= MAX_COLUMNS:
            self.found.add(value)
        return (value,)

    def finish(self, rows: list[CsvRow]) -> tuple[Task, tuple[str, ...], bool]:
        if self.empty:
            raise InvalidDatasetError(
                f"{self.file_name}: {len(self.empty)} rows have an empty label",
                {"lines": listed(self.empty)},
            )
        if len(self.found) > MAX_COLUMNS:
            raise InvalidDatasetError(f"{self.file_name}: more than {MAX_COLUMNS} classes")
        _check_known(self.file_name, self.found, self.wanted, "classes")
        names = self.wanted if self.wanted is not None else _natural_order(self.found)
        return "single-label", names, False


class _BinaryColumns(_Convention):
    name = "binary-columns"

    def __init__(
        self, file_name: str, wanted: tuple[str, ...] | None, header: list[str], skip: set[int]
    ) -> None:
        super().__init__(file_name, wanted)
        candidates = {h: i for i, h in enumerate(header) if i not in skip}
        if wanted is not None:
            missing = [w for w in wanted if w not in candidates]
            if missing:
                raise InvalidDatasetError(
                    f"{file_name}: labels not in the CSV header: {listed(missing)}",
                    {"missing": listed(missing), "header": listed(header)},
                )
            self.named = {w: candidates[w] for w in wanted}
        else:
            self.named = candidates
        if not self.named:
            raise InvalidDatasetError(
                f"{file_name}: the CSV header names no labels: give a 'label' column "
                "(single-label), a 'Finding Labels' column (ChestX-ray14) or one 0/1 column "
                "per finding",
                {"header": listed(header)},
            )
        self.columns = tuple(self.named.values())
        self.bad: dict[str, list[str]] = {}

    def labels(self, cells: list[str], line: int) -> tuple[str, ...]:
        positives = []
        for label, col in self.named.items():
            value = cells[col].strip()
            if value in ("1", "1.0"):
                positives.append(label)
            elif value not in ("0", "0.0"):
                self.bad.setdefault(label, []).append(str(line))
        return tuple(positives)

    def finish(self, rows: list[CsvRow]) -> tuple[Task, tuple[str, ...], bool]:
        if self.bad:
            raise InvalidDatasetError(
                f"{self.file_name}: label columns must hold 0 or 1; these do not: "
                f"{listed(sorted(self.bad))} (name a 'label' column for class names)",
                {"columns": {k: listed(v) for k, v in list(self.bad.items())[:50]}},
            )
        return "multi-label", tuple(self.named), False


def _convention(
    name: str,
    header: list[str],
    file_col: int,
    mask_col: int | None,
    wanted: tuple[str, ...] | None,
) -> _Convention:
    findings_col = _find(header, (FINDINGS_COLUMN,))
    if findings_col is not None:
        return _ChestXray14(name, wanted, findings_col)
    label_col = _find(header, LABEL_COLUMNS)
    if label_col is not None:
        return _SingleLabel(name, wanted, label_col)
    skip = {file_col} | ({mask_col} if mask_col is not None else set())
    return _BinaryColumns(name, wanted, header, skip)
