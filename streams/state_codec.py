"""The Redis state layout (written by lua/apply.lua) and its reading into a snapshot.

Stored per member as one msgpack array (positions 1-based, as in Lua):
 1 layout version (3)   2 member_id   3 latest ts   4 first ts
 5 recent sequence numbers, binary, 19 bytes per event, oldest first by (ts, id hash):
   ts u64, id hash u32, type u8, quantity u16, unit price in cents i32 (-1: none)
 6 recent sequence items, each followed by 0xFF (a byte UTF-8 never contains)
 7 recent sequence categories, the same ("" = none)
 8 day buckets, binary, 12 bytes each, by day: day u16, count per type 5 × u16 (saturating)
 9 month buckets, binary, 12 bytes each, by month: month u16, purchases u32, cents u48
10 latest ts per type (0 = none)    11 purchases    12 spend cents
13 session clusters, flat [closed n, closed first start, closed last start,
   closed previous start, open s1, e1, s2, e2, …]   14 order clusters (same)
15 recent purchases' items (0xFF-separated), newest first   16 their ts, u48 each
17 applied offset per source {"<topic index>:<partition>": offset}
18 latest day    19 latest month
Binary columns keep the msgpack array at a few dozen values: packing and unpacking one
Lua value per number cost ~80 µs of ~120 µs per call in the first layouts. Reading is a
pure function of (layout, now, spec), with the same windows as models/fold.py.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from functools import lru_cache
from itertools import accumulate
from typing import Any, Final

import msgpack

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.snapshot import (
    DAYS_PER_WEEK,
    MONTHS_KEPT,
    WEEKS,
    WINDOWS,
    EventSequence,
    GapStats,
    MemberSnapshot,
    StateSpec,
    day_of,
    month_of,
)
from memberpulse.streams.errors import StateUnavailable

LAYOUT_VERSION: Final = 3
NO_PRICE: Final = -1
NO_CATEGORY: Final = ""
_RECORD_FORMAT: Final = "QxxxxBHi"  # ts, (id hash skipped), type, quantity, cents: 4 values
_RECORD_SIZE: Final = 19
_DAY_SIZE: Final = 2 * (len(EVENT_TYPES) + 1)
_MONTH: Final = struct.Struct(">HIHI")  # month, purchases, cents high 16 bits, cents low 32
_STAMP: Final = struct.Struct(">HI")
_SEP_TEXT: Final = "\udcff"  # byte 0xFF (ends each id in a list column) after decoding
_NTYPES: Final = len(EVENT_TYPES)


def unpack_state(blob: bytes) -> list[Any]:
    """The stored msgpack array, checked for its layout version."""
    # Binary columns travel as msgpack str (Redis 6.2's cmsgpack has no bin type), so
    # everything is read as bytes and only the text fields are decoded.
    state = msgpack.unpackb(blob, raw=True)
    if not isinstance(state, list) or not state or state[0] != LAYOUT_VERSION:
        raise StateUnavailable(f"unknown member state layout: {str(state)[:80]}")
    state[1] = state[1].decode()
    return state


def snapshot_from_state(state: list[Any], now: int, spec: StateSpec) -> MemberSnapshot:
    """The snapshot of a stored member state as of `now`."""
    today = day_of(now)
    first_purchase_day = today - spec.exclusion_days + 1
    stamps = [(hi << 32) | lo for hi, lo in _STAMP.iter_unpack(state[15])]
    recent_purchases = tuple(
        item
        for item, ts in zip(_split(state[14]), stamps, strict=True)
        if day_of(ts) >= first_purchase_day
    )[: spec.max_recent_purchases]
    month_rows = [(m, n, (hi << 32) | lo) for m, n, hi, lo in _MONTH.iter_unpack(state[8])]
    this_month = month_of(now)
    counts, week_counts, week_active_days = _day_windows(state[7], today)
    return MemberSnapshot(
        member_id=state[1],
        now=now,
        events=_sequence(state[4], state[5], state[6]),
        counts=counts,
        week_counts=week_counts,
        week_active_days=week_active_days,
        last_ts=tuple(ts or None for ts in state[9]),
        month_purchases=_months(month_rows, this_month, 1),
        month_spend_cents=_months(month_rows, this_month, 2),
        total_purchases=state[10],
        total_spend_cents=state[11],
        first_seen=state[3],
        last_seen=state[2],
        sessions=_gap_stats(state[12]),
        orders=_gap_stats(state[13]),
        recent_purchases=recent_purchases,
    )


def _split(column: bytes) -> list[str]:
    # One decode for the whole column: each 0xFF separator becomes U+DCFF, which no valid
    # id can contain (ids are UTF-8 text); half the cost of decoding id by id.
    return column.decode("utf-8", "surrogateescape").split(_SEP_TEXT)[:-1]


def _sequence(numbers: bytes, items: bytes, categories: bytes) -> EventSequence:
    flat = _records(len(numbers) // _RECORD_SIZE).unpack(numbers)
    # One C-level unpack of all records, then strided slices: per-record Python work is
    # what made this the slowest part of a snapshot (measured in BENCHMARKS.md).
    return EventSequence(
        items=tuple(_split(items)),
        types=tuple(map(EVENT_TYPES.__getitem__, flat[1::4])),
        ts=flat[0::4],
        prices=tuple([None if c == NO_PRICE else c / 100 for c in flat[3::4]]),
        quantities=flat[2::4],
        categories=tuple([c or None for c in _split(categories)]),
    )


@lru_cache(maxsize=1024)
def _records(count: int) -> struct.Struct:
    return struct.Struct(">" + _RECORD_FORMAT * count)


@lru_cache(maxsize=64)
def _day_records(count: int) -> struct.Struct:
    return struct.Struct(">" + "H" * (_NTYPES + 1) * count)


def _day_windows(
    days: bytes, today: int
) -> tuple[dict[str, tuple[int, ...]], tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Counts per window, per week (oldest first) and active days per week."""
    flat = _day_records(len(days) // _DAY_SIZE).unpack(days)
    stride = _NTYPES + 1
    day_column = flat[0::stride]  # ascending: each window is one contiguous run of rows
    # prefix sums per type, so that each window is two lookups per type
    prefixes = [list(accumulate(flat[1 + index :: stride], initial=0)) for index in range(_NTYPES)]
    counts = {}
    for name, (near, far) in WINDOWS.items():
        low = bisect_left(day_column, today - far)
        high = bisect_right(day_column, today - near)
        counts[name] = tuple([prefix[high] - prefix[low] for prefix in prefixes])
    # Weeks the same way, newest (week 0: today and the 6 days before) to oldest. Every
    # stored row is an active day: apply.lua creates a row with its first event's count.
    weeks, active = [], []
    for back in range(WEEKS):
        low = bisect_left(day_column, today - back * DAYS_PER_WEEK - (DAYS_PER_WEEK - 1))
        high = bisect_right(day_column, today - back * DAYS_PER_WEEK)
        weeks.append(tuple([prefix[high] - prefix[low] for prefix in prefixes]))
        active.append(high - low)
    return counts, tuple(reversed(weeks)), tuple(reversed(active))


def _months(rows: list[tuple[int, int, int]], this_month: int, column: int) -> tuple[int, ...]:
    buckets = [0] * MONTHS_KEPT
    for row in rows:
        back = this_month - row[0]
        if 0 <= back < MONTHS_KEPT:
            buckets[MONTHS_KEPT - 1 - back] += row[column]
    return tuple(buckets)


def _gap_stats(flat: list[int]) -> GapStats:
    closed, closed_first, closed_last, closed_previous = flat[:4]
    starts = flat[4::2]
    count = closed + len(starts)
    if count == 0:
        return GapStats(0, None, None, None, None)
    first = closed_first if closed else starts[0]
    last = starts[-1] if starts else closed_last
    if count == 1:
        return GapStats(1, first, last, None, None)
    if len(starts) >= 2:
        second_last = starts[-2]
    elif len(starts) == 1:
        second_last = closed_last
    else:
        second_last = closed_previous
    return GapStats(count, first, last, (last - first) / (count - 1), last - second_last)
