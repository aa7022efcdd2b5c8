"""Per-image metadata: the group labels (sex, age band, view, scanner...) of a dataset.

Metadata come from the label CSV's extra columns and, for DICOM files, from five header
tags: ``PatientSex`` -> ``sex``, ``PatientAge`` -> ``age_band``, ``ViewPosition`` ->
``view``, ``Manufacturer`` -> ``manufacturer``, ``BodyPartExamined`` -> ``body_part``.
A CSV column with one of those meanings (``Patient Gender``, ``Patient Age``, ``View
Position`` in ChestX-ray14) gets the same key, so CSV and DICOM datasets group alike;
where both give a value, the CSV's wins.

Values are group labels, not records: each is at most :data:`MAX_VALUE_CHARS` printable
characters (longer values are dropped), a dataset keeps at most :data:`MAX_KEYS` keys,
and a key with more than :data:`MAX_DISTINCT` distinct values (an identifier, a date, a
free-text comment) is dropped whole. Columns that name people or identify them (a
``name``, ``id``, ``uid``, ``birth``, ``mrn``, ``accession`` ... word in the header) are
never read, nor are ``PatientName`` and ``PatientID``. Ages are banded (``0-17``,
``18-39``, ``40-59``, ``60-79``, ``80+``) from years or from the DICOM AS format
(``045Y``, ``006M``, ``012W``, ``003D``); an age that does not parse is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MAX_VALUE_CHARS = 64
MAX_KEY_CHARS = 64
MAX_KEYS = 16
MAX_DISTINCT = 32

AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")
_BAND_STARTS = (0, 18, 40, 60, 80)
_AS = re.compile(r"^(\d{3})([DWMY])$")
_YEARS = re.compile(r"^\d{1,3}(\.\d+)?$")
_AS_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
_TOKEN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

_ALIASES = {
    "sex": "sex", "gender": "sex", "patientsex": "sex", "patientgender": "sex",
    "age": "age_band", "patientage": "age_band", "ageband": "age_band", "ageyears": "age_band",
    "view": "view", "viewposition": "view", "projection": "view",
    "manufacturer": "manufacturer", "scanner": "manufacturer", "vendor": "manufacturer",
    "bodypart": "body_part", "bodypartexamined": "body_part",
}  # fmt: skip
_IDENTIFYING = frozenset(
    {"id", "ids", "uid", "mrn", "name", "names", "birth", "dob", "birthdate", "address",
     "phone", "email", "accession", "ssn", "initials", "surname"}
)  # fmt: skip
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}
DICOM_TAGS = (
    ("PatientSex", "sex"),
    ("PatientAge", "age_band"),
    ("ViewPosition", "view"),
    ("Manufacturer", "manufacturer"),
    ("BodyPartExamined", "body_part"),
)


def _tokens(header: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(header)]


def column_key(header: str) -> str | None:
    """The metadata key of a CSV column, or ``None`` for a column that identifies people."""
    tokens = _tokens(header)
    if not tokens or any(t in _IDENTIFYING for t in tokens):
        return None
    joined = "".join(tokens)
    if joined in _ALIASES:
        return _ALIASES[joined]
    return header.strip()[:MAX_KEY_CHARS]


def age_band(value: str) -> str | None:
    """The band of an age in years (``58``, ``58.5``) or DICOM AS (``045Y``), or ``None``."""
    text = value.strip().upper()
    if text in AGE_BANDS:
        return text
    match = _AS.match(text)
    if match:
        years = int(match.group(1)) * _AS_DAYS[match.group(2)] / 365.25
    elif _YEARS.match(text):
        years = float(text)
    else:
        return None
    if years > 150:
        return None
    band = sum(1 for start in _BAND_STARTS if years >= start) - 1
    return AGE_BANDS[band]


def clean_value(key: str, raw: object) -> str | None:
    """The group label ``raw`` gives under ``key``, or ``None`` (missing)."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text or len(text) > MAX_VALUE_CHARS or not text.isprintable():
        return None
    if key == "age_band":
        return age_band(text)
    if key == "sex":
        return _SEX.get(text.lower())
    if key == "view":
        return text.upper()
    return text


def dicom_metadata(ds: Dataset) -> dict[str, str]:
    """The group labels of a DICOM header (see the module docstring)."""
    out: dict[str, str] = {}
    for keyword, key in DICOM_TAGS:
        try:
            raw = ds.get(keyword)
            value = raw.value if hasattr(raw, "value") else raw
        except Exception:  # a malformed optional tag is only missing metadata
            continue
        if isinstance(value, bytes):
            continue
        cleaned = clean_value(key, value)
        if cleaned is not None:
            out[key] = cleaned
    return out


class GroupCollector:
    """Keeps what may stay of a dataset's metadata while it is read, in bounded memory.

    :meth:`add` filters one image's metadata (keys over the cap or already dropped are
    left out) and counts distinct values; a key passing :data:`MAX_DISTINCT` is dropped.
    :meth:`finish` removes dropped keys from what was added before they were dropped.
    """

    def __init__(self) -> None:
        self.values: dict[str, set[str]] = {}
        self.dropped: set[str] = set()

    def add(self, metadata: dict[str, str]) -> dict[str, str]:
        kept: dict[str, str] = {}
        for key, value in metadata.items():
            if key in self.dropped:
                continue
            seen = self.values.get(key)
            if seen is None:
                if len(self.values) >= MAX_KEYS:
                    self.dropped.add(key)
                    continue
                seen = self.values[key] = set()
            seen.add(value)
            if len(seen) > MAX_DISTINCT:
                self.dropped.add(key)
                del self.values[key]
                continue
            kept[key] = value
        return kept

    def finish(self, rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k not in self.dropped} for row in rows]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.values))
