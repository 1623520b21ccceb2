"""The Redis state layout (written by lua/apply.lua) and its reading into a snapshot.

Stored per member, as one msgpack array (positions, 1-based as in Lua):
 1 version            2 member_id          3 latest ts          4 first ts
 5 recent events [[Δts, id_hash, item, type, cents|-1, quantity, category|""], …]
   ascending by (ts, id_hash); Δts is from the previous event (the first is absolute)
 6 day buckets [[day, count per type ×5], …]      7 month buckets [[month, n, cents], …]
 8 latest ts per type (0 = none)                  9 purchases  10 spend cents
11 session clusters [closed n, closed first start, closed last, closed previous, [[s, e], …]]
12 order clusters (same)                          13 recent purchases [[item, ts], …]
14 applied offset per source {"topic#:partition": offset}
15 latest day         16 latest month
Reading is a pure function of (layout, now, spec): the same windows as models/fold.py.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.snapshot import (
    MONTHS_KEPT,
    WINDOWS,
    GapStats,
    MemberSnapshot,
    RecentEvent,
    StateSpec,
    day_of,
    month_of,
)
from memberpulse.streams.errors import StateUnavailable

LAYOUT_VERSION: Final = 1
NO_PRICE: Final = -1
NO_CATEGORY: Final = ""


def unpack_state(blob: bytes) -> list[Any]:
    """The stored msgpack array, checked for its layout version."""
    state = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    if not isinstance(state, list) or not state or state[0] != LAYOUT_VERSION:
        raise StateUnavailable(f"unknown member state layout: {str(state)[:80]}")
    return state


def snapshot_from_state(state: list[Any], now: int, spec: StateSpec) -> MemberSnapshot:
    """The snapshot of a stored member state as of `now`."""
    today = day_of(now)
    first_purchase_day = today - spec.exclusion_days + 1
    recent_purchases = tuple(item for item, ts in state[12] if day_of(ts) >= first_purchase_day)[
        : spec.max_recent_purchases
    ]
    return MemberSnapshot(
        member_id=state[1],
        now=now,
        events=_recent_events(state[4]),
        counts=_window_counts(state[5], today),
        last_ts=tuple(ts or None for ts in state[7]),
        month_purchases=_months(state[6], month_of(now), 1),
        month_spend_cents=_months(state[6], month_of(now), 2),
        total_purchases=state[8],
        total_spend_cents=state[9],
        first_seen=state[3],
        last_seen=state[2],
        sessions=_gap_stats(state[10]),
        orders=_gap_stats(state[11]),
        recent_purchases=recent_purchases,
    )


def _recent_events(stored: list[list[Any]]) -> tuple[RecentEvent, ...]:
    events = []
    ts = 0
    for delta, _hash, item, type_index, cents, quantity, category in stored:
        ts += delta
        price = None if cents == NO_PRICE else cents / 100
        events.append(
            RecentEvent(item, EVENT_TYPES[type_index], ts, price, quantity, category or None)
        )
    return tuple(events)


def _window_counts(days: list[list[int]], today: int) -> dict[str, tuple[int, ...]]:
    counts = {}
    for name, (near, far) in WINDOWS.items():
        totals = [0] * len(EVENT_TYPES)
        for day, *per_type in days:
            if today - far <= day <= today - near:
                for index, count in enumerate(per_type):
                    totals[index] += count
        counts[name] = tuple(totals)
    return counts


def _months(months: list[list[int]], this_month: int, column: int) -> tuple[int, ...]:
    buckets = [0] * MONTHS_KEPT
    for row in months:
        back = this_month - row[0]
        if 0 <= back < MONTHS_KEPT:
            buckets[MONTHS_KEPT - 1 - back] += row[column]
    return tuple(buckets)


def _gap_stats(clusters: list[Any]) -> GapStats:
    closed, closed_first, closed_last, closed_previous, open_intervals = clusters
    starts = [start for start, _end in open_intervals]
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
