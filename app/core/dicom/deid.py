"""De-identification on ingest: the PS3.15 Annex E Basic Application Level Confidentiality
Profile, applied with the profile's own table.

The table (Table E.1-1, the actions D, Z, X, U and their combinations for every attribute
the standard lists, including the repeating overlay and curve groups) is the one maintained
in ``dicom-anonymizer`` (KitwareMedical, ``dicomfields_2026c``). That library's own
applier is not used: it replaces UIDs with random ones kept in a per-process dictionary
(two processes, the API and the DIMSE SCP, would map one study two ways) and does not
descend into sequences. Here the table is applied to every element at every depth, and:

- **U** (UIDs): ``2.25.<128-bit HMAC-SHA256 of the UID under the tenant's secret>``, so a
  UID maps to the same new UID in every instance of a study, across processes and
  re-sends (a duplicate stays a duplicate), and cannot be reversed without the secret;
- **D** on Patient ID: a pseudonym ``RDX-<HMAC>``, so instances of one patient stay
  together and a QIDO ``PatientID`` query can be mapped the same way; other **D**
  values get dummies of their VR; **Z** empties; **X** removes; combinations take the
  strongest action that keeps the file valid (X where allowed);
- private attributes are removed (the profile's default);
- ``PatientIdentityRemoved`` = ``YES``, ``DeidentificationMethod`` and the
  ``DeidentificationMethodCodeSequence`` (CID 7050: 113100, and 113106 when dates are kept
  under the Retain Longitudinal Temporal Information with Full Dates Option) are set.

Burned-in annotation cannot be removed from pixels by a header profile: ``BurnedInAnnotation``
is read and reported (``YES``, ``NO`` or ``UNKNOWN`` when absent), and datasets built from
studies refuse ``YES`` instances unless asked.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

METHOD = "PS3.15 E.1 Basic Application Confidentiality Profile"  # LO: <= 64
_BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
_KEEP_DATES = ("113106", "Retain Longitudinal Temporal Information Full Dates Option")
_DATE_VRS = frozenset({"DA", "DT", "TM"})
#: Dummy values for D by VR (the standard asks for a non-empty value of the right VR).
_DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101",
    "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0", "LO": "ANONYMIZED",
    "LT": "ANONYMIZED", "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED",
    "UC": "ANONYMIZED", "UT": "ANONYMIZED", "UR": "http://anonymized.invalid",
    "FD": 0.0, "FL": 0.0, "SS": 0, "US": 0, "SL": 0, "UL": 0, "OB": b"\x00\x00",
    "UN": b"\x00\x00",
}
_PATIENT_ID = 0x00100020


@lru_cache(maxsize=1)
def profile_table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """The profile's actions: exact tags -> action, and masked (repeating-group) entries."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    tables = dicom_anonymization_database_selector("dicomfields_2026c")
    codes = {
        "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z",
        "X_Z_TAGS": "X", "X_D_TAGS": "X", "X_Z_D_TAGS": "X", "X_Z_U_STAR_TAGS": "XU",
    }
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in codes.items():
        for entry in tables[category]:
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                masked.append((entry[0], entry[1], entry[2], entry[3], action))
    return exact, tuple(masked)


def _action(tag: BaseTag) -> str | None:
    return _action_of(int(tag))


@lru_cache(maxsize=8192)
def _action_of(tag: int) -> str | None:
    exact, masked = profile_table()
    found = exact.get(tag)
    if found is not None:
        return found
    tag_group, tag_element = tag >> 16, tag & 0xFFFF
    for group, element, gmask, emask, action in masked:
        if tag_group & gmask == group & gmask and tag_element & emask == element & emask:
            return action
    return None


@dataclass(frozen=True)
class Pseudonymizer:
    """Keyed, deterministic replacements for one tenant (``secret`` is its hex key)."""

    secret: str

    def _digest(self, kind: str, value: str) -> bytes:
        key = bytes.fromhex(self.secret)
        return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str) -> str:
        return "2.25." + str(int.from_bytes(self._digest("uid", value.strip())[:16], "big"))

    def patient_id(self, value: str) -> str:
        return "RDX-" + self._digest("pid", value.strip()).hex()[:16].upper()


def burned_in_flag(ds: Dataset) -> str:
    value = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    return value if value in ("YES", "NO") else "UNKNOWN"


def deidentify(ds: Dataset, pseudo: Pseudonymizer, *, keep_dates: bool = False) -> None:
    """Apply the profile to ``ds`` (and its file meta) in place."""
    ds.remove_private_tags()  # recursive
    _clean(ds, pseudo, keep_dates)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = [_BASIC_PROFILE, _KEEP_DATES] if keep_dates else [_BASIC_PROFILE]
    ds.DeidentificationMethodCodeSequence = Sequence([_code(v, m) for v, m in codes])


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _clean(ds: Dataset, pseudo: Pseudonymizer, keep_dates: bool) -> None:
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or ():
                _clean(item, pseudo, keep_dates)
        if int(elem.tag) == _PATIENT_ID:
            elem.value = pseudo.patient_id(str(elem.value or ""))
            continue
        action = _action(elem.tag)
        if action is None or (keep_dates and elem.VR in _DATE_VRS):
            continue
        _APPLY[action](ds, elem, pseudo)


def _remove(ds: Dataset, elem: DataElement, _: Pseudonymizer) -> None:
    del ds[elem.tag]


def _empty(ds: Dataset, elem: DataElement, _: Pseudonymizer) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        elem.value = b""
    elif elem.VR in ("FD", "FL", "SS", "US", "SL", "UL", "SV", "UV", "AT"):
        elem.value = None
    else:
        elem.value = ""


def _dummy(ds: Dataset, elem: DataElement, pseudo: Pseudonymizer) -> None:
    if elem.VR == "UI":
        _uid(ds, elem, pseudo)
    elif elem.VR == "SQ":
        pass  # the items were cleaned above: what remains in them is allowed
    elif elem.VR in _DUMMY:
        elem.value = _DUMMY[elem.VR]
    else:
        _remove(ds, elem, pseudo)


def _uid(ds: Dataset, elem: DataElement, pseudo: Pseudonymizer) -> None:
    if elem.VR != "UI":
        _remove(ds, elem, pseudo)
        return
    if elem.VM > 1:
        elem.value = [pseudo.uid(str(v)) for v in elem.value]
    elif elem.value:
        elem.value = pseudo.uid(str(elem.value))


def _keep_references(ds: Dataset, elem: DataElement, pseudo: Pseudonymizer) -> None:
    """X/Z/U*: a reference sequence is kept with its UIDs replaced (its items were
    cleaned above, where Referenced SOP Instance UID is U), so references between the
    instances of a study still resolve."""
    if elem.VR != "SQ":
        _uid(ds, elem, pseudo)


_APPLY: dict[str, Callable[[Dataset, DataElement, Pseudonymizer], None]] = {
    "D": _dummy, "Z": _empty, "X": _remove, "U": _uid, "XU": _keep_references,
}
