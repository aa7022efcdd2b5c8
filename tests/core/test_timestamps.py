from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from app.core.timestamps import format_utc


def test_naive_values_are_utc_and_aware_ones_are_converted() -> None:
    assert format_utc(datetime(2026, 12, 1, 8, 36, 5, 123456)) == "2026-12-01T08:36:05.123456Z"
    paris = timezone(timedelta(hours=1))
    assert format_utc(datetime(2026, 12, 1, 9, 36, 5, tzinfo=paris)) == "2026-12-01T08:36:05Z"
    assert format_utc(datetime(2026, 12, 1, tzinfo=UTC)) == "2026-12-01T00:00:00Z"
