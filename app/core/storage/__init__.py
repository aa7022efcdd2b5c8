"""The artifact store: one interface (:class:`Storage`), two backends.

- :class:`LocalStorage` (``Storage`` itself): a local folder, the default;
- :class:`S3Storage`: an S3-compatible bucket (``ROBUSTDX_STORAGE_URL=s3://bucket/prefix``)
  with the process's ``data_dir`` as its cache.

:func:`open_storage` picks the backend from the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.storage.files import write_atomic
from app.core.storage.local import LocalStorage, Storage
from app.core.storage.s3 import S3Location, S3Storage, s3_client

if TYPE_CHECKING:
    from app.core.settings import Settings

__all__ = ["LocalStorage", "S3Location", "S3Storage", "Storage", "open_storage", "write_atomic"]

_OPEN: dict[tuple[object, ...], Storage] = {}


def open_storage(settings: Settings) -> Storage:
    """The store the settings name, one instance per process and configuration (the S3
    backend remembers which immutable folders it has already fetched)."""
    key = (settings.storage_url, str(settings.data_dir), settings.s3_endpoint_url)
    if key not in _OPEN:
        _OPEN[key] = _build(settings)
    return _OPEN[key]


def _build(settings: Settings) -> Storage:
    if not settings.storage_url:
        return LocalStorage(settings.data_dir)
    secret = settings.s3_secret_access_key
    client = s3_client(settings.s3_endpoint_url, settings.s3_region,
                       settings.s3_access_key_id,
                       secret.get_secret_value() if secret is not None else None)
    return S3Storage(settings.data_dir, S3Location.parse(settings.storage_url), client,
                     multipart_bytes=settings.s3_multipart_bytes,
                     threads=settings.s3_transfer_threads)
