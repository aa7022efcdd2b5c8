"""Label CSVs: which column names the file, and which carry the labels.

Three conventions, recognized from the header (names compared case-insensitively):

1. **ChestX-ray14**: a ``Finding Labels`` column, findings joined by ``|``, ``No Finding``
   for none (multi-label). Other columns (``Follow-up #``, ``Patient Age``...) are ignored.
   A finding never named is negative everywhere (``implicit_negatives``).
2. **Single-label**: a ``label`` (or ``class``, ``diagnosis``) column of class names.
3. **0/1 columns**: every other column is a finding holding 0 or 1 (multi-label); with
   ``labels`` given, only those columns are read and each must be in the header.

The file column is the first of ``Image Index``, ``file``, ``filename``, ``file_name``,
``image``, ``image_path``, ``path``, ``image_id``; an optional ``mask`` column names a
lesion mask image.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from models.card import Task
from models.datasets.archive import listed
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


@dataclass(frozen=True)
class CsvRow:
    file: str
    labels: tuple[str, ...]  # the class name, or the positive findings
    mask: str | None
    line: int


@dataclass(frozen=True)
class CsvLabels:
    task: Task
    label_names: tuple[str, ...]
    rows: tuple[CsvRow, ...]
    implicit_negatives: bool
    convention: str


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


def parse_label_csv(data: bytes, name: str, labels: Sequence[str] | None = None) -> CsvLabels:
    """Parse a label CSV by the conventions above.

    ``labels``, when given, fixes the label set and its order: a class or finding outside
    it is an error, and in the 0/1 convention each must be a header column.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDatasetError(f"{name}: the CSV is not UTF-8 text ({exc})") from exc
    try:
        table = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InvalidDatasetError(f"{name}: malformed CSV ({exc})") from exc
    table = [row for row in table if any(cell.strip() for cell in row)]
    if not table:
        raise InvalidDatasetError(f"{name}: the CSV is empty")
    header = [h.strip() for h in table[0]]
    body = table[1:]
    if not body:
        raise InvalidDatasetError(f"{name}: the CSV has a header and no rows")
    file_col = _find(header, FILE_COLUMNS)
    if file_col is None:
        raise InvalidDatasetError(
            f"{name}: the CSV header has no file column; expected one of: "
            + ", ".join(repr(c) for c in ("Image Index", *FILE_COLUMNS[1:])),
            {"header": header},
        )
    mask_col = _find(header, MASK_COLUMNS)
    short = [i + 2 for i, row in enumerate(body) if len(row) < len(header)]
    if short:
        raise InvalidDatasetError(
            f"{name}: {len(short)} rows have fewer cells than the header",
            {"lines": listed([str(n) for n in short])},
        )

    findings_col = _find(header, (FINDINGS_COLUMN,))
    label_col = _find(header, LABEL_COLUMNS)
    wanted = tuple(labels) if labels is not None else None
    if findings_col is not None:
        return _chestxray14(name, header, body, file_col, mask_col, findings_col, wanted)
    if label_col is not None:
        return _single_label(name, body, file_col, mask_col, label_col, wanted)
    return _binary_columns(name, header, body, file_col, mask_col, wanted)


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
            f"{name}: {what} not in the given labels: {unknown}",
            {"unknown": unknown, "labels": list(wanted)},
        )


def _chestxray14(
    name: str,
    header: list[str],
    body: list[list[str]],
    file_col: int,
    mask_col: int | None,
    findings_col: int,
    wanted: tuple[str, ...] | None,
) -> CsvLabels:
    rows = []
    found: set[str] = set()
    for i, row in enumerate(body):
        line = i + 2
        raw = [f.strip() for f in row[findings_col].split("|") if f.strip()]
        positives = tuple(f for f in raw if f != NO_FINDING)
        if NO_FINDING in raw and positives:
            raise InvalidDatasetError(
                f"{name}: line {line} lists findings together with {NO_FINDING!r}",
                {"line": line},
            )
        found.update(positives)
        rows.append(
            CsvRow(_file_of(name, row, file_col, line), positives, _cell(row, mask_col), line)
        )
    _check_known(name, found, wanted, "findings")
    label_names = wanted if wanted is not None else tuple(sorted(found))
    if not label_names:
        raise InvalidDatasetError(
            f"{name}: every row is {NO_FINDING!r}; give the finding names (labels) to "
            "import a dataset without positives"
        )
    return CsvLabels("multi-label", label_names, tuple(rows), True, "chestxray14")


def _single_label(
    name: str,
    body: list[list[str]],
    file_col: int,
    mask_col: int | None,
    label_col: int,
    wanted: tuple[str, ...] | None,
) -> CsvLabels:
    rows = []
    empty = []
    for i, row in enumerate(body):
        line = i + 2
        value = row[label_col].strip()
        if not value:
            empty.append(str(line))
        rows.append(
            CsvRow(_file_of(name, row, file_col, line), (value,), _cell(row, mask_col), line)
        )
    if empty:
        raise InvalidDatasetError(
            f"{name}: {len(empty)} rows have an empty label", {"lines": listed(empty)}
        )
    found = {r.labels[0] for r in rows}
    _check_known(name, found, wanted, "classes")
    label_names = wanted if wanted is not None else _natural_order(found)
    return CsvLabels("single-label", label_names, tuple(rows), False, "label-column")


def _binary_columns(
    name: str,
    header: list[str],
    body: list[list[str]],
    file_col: int,
    mask_col: int | None,
    wanted: tuple[str, ...] | None,
) -> CsvLabels:
    skip = {file_col} | ({mask_col} if mask_col is not None else set())
    candidates = {h: i for i, h in enumerate(header) if i not in skip}
    if wanted is not None:
        missing = [w for w in wanted if w not in candidates]
        if missing:
            raise InvalidDatasetError(
                f"{name}: labels not in the CSV header: {missing}",
                {"missing": missing, "header": header},
            )
        columns = {w: candidates[w] for w in wanted}
    else:
        columns = candidates
    if not columns:
        raise InvalidDatasetError(
            f"{name}: the CSV header names no labels: give a 'label' column (single-label), "
            "a 'Finding Labels' column (ChestX-ray14) or one 0/1 column per finding",
            {"header": header},
        )
    bad: dict[str, list[str]] = {}
    rows = []
    for i, row in enumerate(body):
        line = i + 2
        positives = []
        for label, col in columns.items():
            value = row[col].strip()
            if value in ("1", "1.0"):
                positives.append(label)
            elif value not in ("0", "0.0"):
                bad.setdefault(label, []).append(str(line))
        rows.append(
            CsvRow(
                _file_of(name, row, file_col, line), tuple(positives), _cell(row, mask_col), line
            )
        )
    if bad:
        raise InvalidDatasetError(
            f"{name}: label columns must hold 0 or 1; these do not: {sorted(bad)} "
            "(name a 'label' column for class names)",
            {"columns": {k: listed(v) for k, v in bad.items()}},
        )
    return CsvLabels("multi-label", tuple(columns), tuple(rows), False, "binary-columns")
