"""The bad-input corpus: one table of cases, each a request that must get a clear 4xx.

A case names what it attacks (``group``), builds its request from the :class:`Target`
(the tenant, its model and dataset, a scratch folder), and says which statuses are right.
Cases whose fix belongs elsewhere carry ``xfail`` with the area that fixes them; they are
run with ``strict=True``, so the day they pass the mark must go.

To add a case: write a builder in the group's module (``cases_*.py``) and append a
``Case`` to that module's ``CASES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUPS = ("model files", "images", "datasets", "http", "job bodies")


@dataclass(frozen=True)
class Target:
    """What the cases aim at: one tenant's model and dataset, and another tenant's."""

    key: str
    model_id: str
    dataset_id: str
    other_model_id: str
    scratch: Path
    card: dict[str, Any]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    files: Any = None
    data: dict[str, str] | None = None
    authenticated: bool = True


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    build: Callable[[Target], Request]
    status: tuple[int, int] = (400, 499)  # inclusive
    xfail: str | None = None

    def __post_init__(self) -> None:
        assert self.group in GROUPS, self.group
        assert 400 <= self.status[0] <= self.status[1] <= 499, self.status


def upload_model(file: bytes, card: dict[str, Any] | str, name: str = "model.bin") -> Request:
    import json

    text = card if isinstance(card, str) else json.dumps(card)
    return Request("POST", "/v1/models", files={"file": (name, file, "application/octet-stream")},
                   data={"card": text})


def predict(t: Target, *images: tuple[str, bytes], **params: str) -> Request:
    field_name = "file" if len(images) == 1 else "files"
    return Request("POST", f"/v1/models/{t.model_id}/predict", params=params or None,
                   files=[(field_name, (n, d, "application/octet-stream")) for n, d in images])


def upload_dataset(archive: bytes, fmt: str = "imagefolder", **fields: str) -> Request:
    return Request("POST", "/v1/datasets",
                   files={"file": ("data.zip", archive, "application/zip")},
                   data={"format": fmt, **fields})


def audit(t: Target, **body: Any) -> Request:
    request = {"model_id": t.model_id, "dataset_id": t.dataset_id,
               "attacks": [{"name": "fgsm", "params": {"eps": "2/255"}}]}
    request.update(body)
    return Request("POST", "/v1/audits", json=request)


def attack(t: Target, name: str, **params: Any) -> Request:
    return audit(t, attacks=[{"name": name, "params": params}])
