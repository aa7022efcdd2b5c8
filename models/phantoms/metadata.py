"""Per-image metadata for phantoms: plausible patient and acquisition group labels.

Each phantom image gets a ``sex`` (``M``/``F``, even odds), an age in years (a clipped
normal around 55, sd 18, within 1..95; chest studies skew older in practice, and a wide
spread fills every band) given as ``age_band``, a ``manufacturer`` drawn from three
fictional vendors per kind with unequal shares (so subgroup tables have a small group),
and, for chest radiographs, a ``view`` (``PA`` 70 %, ``AP`` 30 %, the usual split of
departmental and bedside films). Values are drawn from their own generator seeded by
``(seed, kind salt)``, so they are deterministic from the seed and leave the images and
labels of :func:`models.phantoms.generate` unchanged.

The CSV exporter writes these as columns (``sex``, ``age_band``, ``view``,
``manufacturer``); the DICOM exporter as the tags ``PatientSex``, ``PatientAge`` (AS,
``055Y``), ``ViewPosition``, ``Manufacturer`` and ``BodyPartExamined``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.datasets.metadata import age_band
from models.phantoms import get_kind
from models.phantoms.base import PhantomSet

_METADATA_STREAM = 0x6D657461  # "meta": a stream apart from the images'

MANUFACTURERS = {
    "chest": ("Northwind Radiology", "Helix Imaging", "Meridian Medical"),
    "derm": ("Lumen Dermatics", "Northwind Optics", "Helix Imaging"),
    "fundus": ("Retina Works", "Meridian Medical", "Lumen Optics"),
}
MANUFACTURER_SHARES = (0.55, 0.35, 0.10)
BODY_PARTS = {"chest": "CHEST", "derm": "SKIN", "fundus": "EYE"}


@dataclass(frozen=True)
class PhantomPatient:
    """One image's metadata; ``view`` is ``None`` where the modality has none."""

    sex: str
    age_years: int
    manufacturer: str
    view: str | None
    body_part: str

    @property
    def age_band(self) -> str:
        band = age_band(str(self.age_years))
        assert band is not None  # ages are drawn within 1..95
        return band

    def columns(self) -> dict[str, str]:
        """The CSV columns (the group-label keys of :mod:`models.datasets.metadata`)."""
        out = {"sex": self.sex, "age_band": self.age_band, "manufacturer": self.manufacturer}
        if self.view is not None:
            out["view"] = self.view
        return out


def phantom_metadata(phantoms: PhantomSet) -> list[PhantomPatient]:
    """The metadata of every image of ``phantoms``, in order."""
    n = len(phantoms)
    rng = np.random.default_rng([phantoms.seed, get_kind(phantoms.kind).salt, _METADATA_STREAM])
    sex = rng.random(n) < 0.5
    ages = np.clip(np.rint(rng.normal(55.0, 18.0, n)), 1, 95).astype(int)
    vendors = rng.choice(3, size=n, p=MANUFACTURER_SHARES)
    views = rng.random(n) < 0.7
    names = MANUFACTURERS[phantoms.kind]
    chest = phantoms.kind == "chest"
    return [
        PhantomPatient(
            sex="F" if sex[i] else "M",
            age_years=int(ages[i]),
            manufacturer=names[int(vendors[i])],
            view=("PA" if views[i] else "AP") if chest else None,
            body_part=BODY_PARTS[phantoms.kind],
        )
        for i in range(n)
    ]
