"""The one timestamp format of the service: UTC, ISO 8601, with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value (SQLite hands those back) was written in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """``2026-12-01T08:36:05.123456Z``."""
    return as_utc(value).isoformat().replace("+00:00", "Z")
