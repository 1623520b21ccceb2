"""Timestamps: epoch milliseconds UTC everywhere inside; ISO-8601 or epoch ms at the edges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

MS_PER_SECOND: Final = 1_000
MS_PER_MINUTE: Final = 60_000
MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000


def parse_ts(value: str | int) -> int:
    """Parse ISO-8601 (UTC when no zone) or epoch milliseconds into epoch milliseconds.

    >>> parse_ts("1997-10-01")
    875664000000
    >>> parse_ts("1700000000000")
    1700000000000
    """
    if isinstance(value, bool):
        raise ValueError(f"expected ISO-8601 text or epoch milliseconds, got {value!r}")
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected ISO-8601 (e.g. 2026-11-26T12:00:00Z) or epoch milliseconds, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * MS_PER_SECOND)


def to_iso(ts_ms: int) -> str:
    """Epoch milliseconds to an ISO-8601 UTC string with a `Z` suffix."""
    moment = datetime.fromtimestamp(ts_ms / MS_PER_SECOND, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_index(ts_ms: int) -> int:
    """The UTC calendar day number (days since 1970-01-01) of a timestamp."""
    return ts_ms // MS_PER_DAY
