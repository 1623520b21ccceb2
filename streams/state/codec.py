"""The Redis state layout (written by lua/apply.lua) and its reading into a snapshot.

The value under a member's state key (lua/value.lua): byte 0xC1 (which starts no msgpack
value), the decision state's length (u16), the decision state (opaque bytes written by
round trip 2), then the state: one msgpack array (empty until the first applied event;
positions 1-based, as in Lua):
 1 layout version (5)   2 member_id   3 latest ts   4 first ts
 5 recent sequence records, binary, 10 bytes per event, oldest first by (ts, id hash):
   id hash u32, then ts × 32 + flags as a u48; flags: type index (bits 0-2), has a price
   (8: its unit price in cents is the next entry of column 20), has a quantity other than
   1 (16: the next entry of column 21). ts < 2^43 ms (the year 2248).
 6 recent sequence items, each followed by 0xFF (a byte UTF-8 never contains)
 7 recent sequence categories, the same ("" = none)
 8 day buckets of the events that have left the sequence, binary, 12 bytes each, by day:
   day u16, count per type 5 × u16 (saturating); a window counts these plus the sequence
 9 month buckets, binary, 12 bytes each, by month: month u16, purchases u32, cents u48
10 latest ts per type (0 = none)    11 purchases    12 spend cents
13 session clusters, flat [closed n, closed first start, closed last start,
   closed previous start, open s1, e1, s2, e2, …]   14 order clusters (same)
15 recent purchases' items (0xFF-separated), newest first   16 their ts, u48 each
17 applied offset per source {"<topic index>:<partition>": offset}
18 latest day    19 latest month
20 unit prices of the sequence events that have one, in order, i32 cents each
21 quantities of the sequence events whose quantity is not 1, in order, u16 each
Binary columns keep the msgpack array at a few dozen values: packing and unpacking one
Lua value per number cost ~80 µs of ~120 µs per call in the first layouts. Reading is a
pure function of (layout, now, spec), with the same windows as models/fold.py.

Older layouts are still read here, and apply.lua rewrites one as layout 5 when it next
applies to its member:
- up to layout 4 the value was the bare msgpack array, and the decision state had a key
  of its own (`…:d`, ~85 bytes of Redis overhead per member): the scripts fold it in;
- layout 4 kept a fixed 17-byte record per event (ts u48, id hash u32, type u8, quantity
  u16, cents i32 with -1 for no price) and no columns 20 and 21. Most events (clicks,
  views) have no price and a quantity of 1, so 7 of those bytes were mostly constant;
- layout 3 also had u64 ts (19-byte records), and its day buckets counted every event,
  the sequence's too (~470 bytes of a full member counted twice).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache
from itertools import compress, repeat
from operator import and_, floordiv, lshift, mul, or_, rshift
from typing import Any, Final

import msgpack

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.errors import StateCorrupt
from memberpulse.models.snapshot import (
    DAYS_KEPT,
    DAYS_PER_WEEK,
    MAX_DAY_COUNT,
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
from memberpulse.models.timeutil import MS_PER_DAY

LAYOUT_VERSION: Final = 5
_LAYOUTS_READ: Final = (3, 4, LAYOUT_VERSION)
NO_PRICE: Final = -1
NO_CATEGORY: Final = ""
# Per layout: one record's struct format (the id hash skipped) and its size in bytes.
# Layout 4's u48 is read as a high u16 and a low u32 (struct has no 6-byte integer); layout
# 5's as a u64 that starts 2 bytes early, inside the id hash, whose 16 bits are masked off.
_RECORD: Final = {3: ("QxxxxBHi", 19), 4: ("HIxxxxBHi", 17), 5: ("xxQ", 10)}
_U48: Final = (1 << 48) - 1
_FLAG_BITS: Final = 5
_TYPE_MASK: Final = 7
_HAS_PRICE: Final = 8
_HAS_QUANTITY: Final = 16
# bytes.translate tables over the flag bytes: the type index, and 1 where a flag is set.
_TYPE_TABLE: Final = bytes(flag & _TYPE_MASK for flag in range(256))  # any byte: bits 0-4
_HAS_PRICE_TABLE: Final = bytes(int(bool(flag & _HAS_PRICE)) for flag in range(256))
_HAS_QUANTITY_TABLE: Final = bytes(int(bool(flag & _HAS_QUANTITY)) for flag in range(256))
_PRICE: Final = struct.Struct(">i")
_QUANTITY: Final = struct.Struct(">H")
_DAY_SIZE: Final = 2 * (len(EVENT_TYPES) + 1)
_MONTH: Final = struct.Struct(">HIHI")  # month, purchases, cents high 16 bits, cents low 32
_STAMP: Final = struct.Struct(">HI")
_SEP_TEXT: Final = "\udcff"  # byte 0xFF (ends each id in a list column) after decoding
_NTYPES: Final = len(EVENT_TYPES)
_FRAME: Final = b"\xc1"
_DECISION_LENGTH: Final = struct.Struct(">H")
# Window and week counts packed into one int (`_day_windows`): a 32-bit lane per range and
# type (a range spans at most 60 days of saturated u16 day counts, < 2^22), read back as
# little-endian u32s; a day and a type share one table key, `day << 3 | type`.
_LANE_BITS: Final = 32
_TYPE_BITS: Final = 3
_LANES_OUT: Final = struct.Struct("<" + "I" * _NTYPES * (len(WINDOWS) + WEEKS))
_NONE: Final = repeat(0)  # the default of each table lookup: a day no range reads


def split_value(
    value: bytes | None, old_decision: bytes | None = None
) -> tuple[bytes | None, bytes | None]:
    """(state blob, decision state) of a state key's value; None where absent.

    A value written by layout 4 or older is the bare state: its decision state is
    `old_decision`, the value of the member's own decision key then.
    """
    if value is None or value[:1] != _FRAME:
        return value, old_decision
    (length,) = _DECISION_LENGTH.unpack_from(value, 1)
    start = 1 + _DECISION_LENGTH.size
    return value[start + length :] or None, value[start : start + length] or None


def unpack_state(blob: bytes) -> list[Any]:
    """The stored msgpack array, checked for its layout version."""
    # Binary columns travel as msgpack str (Redis 6.2's cmsgpack has no bin type), so
    # everything is read as bytes and only the text fields are decoded.
    try:
        state = msgpack.unpackb(blob, raw=True)
    except (ValueError, TypeError) as exc:  # msgpack's errors derive from ValueError
        raise StateCorrupt(f"member state does not decode ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, list) or not state or state[0] not in _LAYOUTS_READ:
        raise StateCorrupt(f"unknown member state layout: {str(state)[:80]}")
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
    layout = state[0]
    ts, kinds, quantities, prices = _records_of(state)
    # Buckets hold only what left the sequence; layout 3's held everything.
    in_buckets = layout == 3
    counts, week_counts, week_active_days = _day_windows(
        state[7], today, () if in_buckets else ts, () if in_buckets else kinds
    )
    items, categories = _split(state[5]), _split(state[6])
    if len(ts) > spec.sequence_length:  # L was lowered: apply.lua trims at the next event
        keep = slice(len(ts) - spec.sequence_length, None)
        ts, kinds, quantities = ts[keep], kinds[keep], quantities[keep]
        prices, items, categories = prices[keep], items[keep], categories[keep]
    events = EventSequence(
        items=tuple(items),
        types=tuple(map(EVENT_TYPES.__getitem__, kinds)),
        ts=ts,
        prices=prices,
        quantities=quantities,
        categories=tuple([c or None for c in categories]),
    )
    return MemberSnapshot(
        member_id=state[1],
        now=now,
        events=events,
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


def _records_of(
    state: list[Any],
) -> tuple[tuple[int, ...], Sequence[int], tuple[int, ...], tuple[float | None, ...]]:
    """The sequence records as columns: ts, type index, quantity, unit price."""
    layout, numbers = state[0], state[4]
    size = _RECORD[layout][1]
    # One C-level unpack of all records, then strided slices: per-record Python work is
    # what made this the slowest part of a snapshot (measured in BENCHMARKS.md).
    flat = _records(layout, len(numbers) // size).unpack(numbers)
    if layout == 3:  # ts u64
        return flat[0::4], flat[1::4], flat[2::4], _prices(flat[3::4])
    if layout == 4:
        ts = tuple(map(or_, map(lshift, flat[0::5], repeat(32)), flat[1::5]))
        return ts, flat[2::5], flat[3::5], _prices(flat[4::5])
    # u48 = ts << 5 | flags; the flags are each record's last byte (the tables below mask
    # them, and byte-wise tables are C loops)
    ts = tuple(map(rshift, map(and_, flat, repeat(_U48)), repeat(_FLAG_BITS)))
    flags = numbers[size - 1 :: size]
    price_column, quantity_column = state[19], state[20]
    has_price, has_quantity = (
        flags.translate(_HAS_PRICE_TABLE),
        flags.translate(_HAS_QUANTITY_TABLE),
    )
    if (has_price.count(1) * _PRICE.size, has_quantity.count(1) * _QUANTITY.size) != (
        len(price_column),
        len(quantity_column),
    ):
        raise StateCorrupt(f"member state {state[1]!r}: sparse columns do not match")
    # Fill in the few events that carry a value; `compress` picks their positions in C.
    prices: Sequence[float | None] = (None,) * len(flags)
    if price_column:
        prices = list(prices)
        cents = struct.unpack(f">{len(price_column) // _PRICE.size}i", price_column)
        for at, value in zip(compress(range(len(flags)), has_price), cents, strict=True):
            prices[at] = value / 100
        prices = tuple(prices)
    quantities: Sequence[int] = (1,) * len(flags)
    if quantity_column:
        quantities = list(quantities)
        counts = struct.unpack(f">{len(quantity_column) // _QUANTITY.size}H", quantity_column)
        for at, value in zip(compress(range(len(flags)), has_quantity), counts, strict=True):
            quantities[at] = value
        quantities = tuple(quantities)
    return ts, flags.translate(_TYPE_TABLE), tuple(quantities), tuple(prices)


def _prices(cents: Sequence[int]) -> tuple[float | None, ...]:
    return tuple([None if c == NO_PRICE else c / 100 for c in cents])


@lru_cache(maxsize=1024)
def _records(layout: int, count: int) -> struct.Struct:
    return struct.Struct(">" + _RECORD[layout][0] * count)


@lru_cache(maxsize=64)
def _day_records(count: int) -> struct.Struct:
    return struct.Struct(">" + "H" * (_NTYPES + 1) * count)


@lru_cache(maxsize=8)
def _ranges(today: int) -> tuple[tuple[int, int], ...]:
    """(first day, last day) of each window in WINDOWS order, then of each week, newest
    first (week 0: today and the 6 days before)."""
    windows = [(today - far, today - near) for near, far in WINDOWS.values()]
    weeks = [
        (today - back * DAYS_PER_WEEK - (DAYS_PER_WEEK - 1), today - back * DAYS_PER_WEEK)
        for back in range(WEEKS)
    ]
    return tuple(windows + weeks)


def _day_windows(
    days: bytes, today: int, seq_ts: Sequence[int], seq_kinds: Sequence[int]
) -> tuple[dict[str, tuple[int, ...]], tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Counts per window, per week (oldest first) and active days per week, of the day
    buckets plus the sequence events given (ts ascending, type indices).

    Every count of every range is one lane of a single packed int: an event adds the
    table's value for its (day, type), which holds a 1 in the lane of each range that
    contains that day, so the whole sum is one C-level `sum` (`_range_tables`).
    """
    flat = _day_records(len(days) // _DAY_SIZE).unpack(days)
    stride = _NTYPES + 1
    start = bisect_left(seq_ts, (today - DAYS_KEPT + 1) * MS_PER_DAY)  # older: no window
    seq_ts, seq_kinds = seq_ts[start:], seq_kinds[start:]
    if flat and seq_ts and max(flat) > MAX_DAY_COUNT - len(seq_ts):
        # a bucket near saturation: the sum of both sources must saturate per day and type
        flat, seq_ts, seq_kinds = _merged_rows(flat, seq_ts, seq_kinds), (), ()
    per_event, per_day = _range_tables(today)
    seq_days = list(map(floordiv, seq_ts, repeat(MS_PER_DAY)))
    packed = sum(
        map(per_event.get, map(or_, map(lshift, seq_days, repeat(_TYPE_BITS)), seq_kinds), _NONE)
    )
    active_days = set(seq_days)
    if flat:
        day_column = flat[0::stride]
        active_days.update(day_column)
        shifted = list(map(lshift, day_column, repeat(_TYPE_BITS)))
        for kind in range(_NTYPES):
            lanes = map(per_event.get, map(or_, shifted, repeat(kind)), _NONE)
            packed += sum(map(mul, flat[1 + kind :: stride], lanes))
    totals = _LANES_OUT.unpack(packed.to_bytes(_LANES_OUT.size, "little"))
    per_range = [totals[at : at + _NTYPES] for at in range(0, len(totals), _NTYPES)]
    windows = len(WINDOWS)
    counts = dict(zip(WINDOWS, per_range[:windows], strict=True))
    # Every row is an active day: apply.lua creates a bucket with its first event's count.
    active = sum(map(per_day.get, active_days, _NONE)).to_bytes(WEEKS, "little")
    return counts, tuple(reversed(per_range[windows:])), tuple(reversed(active))


@lru_cache(maxsize=8)
def _range_tables(today: int) -> tuple[dict[int, int], dict[int, int]]:
    """For `_day_windows`: per `day << 3 | type`, one event's packed contribution to every
    range of `_ranges(today)` (a 32-bit lane per range and type); per day, its contribution
    to each week's count of active days (an 8-bit lane per week, newest first). Days that
    no range reads are absent."""
    ranges = _ranges(today)
    per_event, per_day = {}, {}
    for day in range(today - DAYS_KEPT + 1, today + 1):
        inside = [at for at, (first, last) in enumerate(ranges) if first <= day <= last]
        for kind in range(_NTYPES):
            per_event[day << _TYPE_BITS | kind] = sum(
                1 << (_LANE_BITS * (at * _NTYPES + kind)) for at in inside
            )
        per_day[day] = sum(1 << (8 * (at - len(WINDOWS))) for at in inside if at >= len(WINDOWS))
    return per_event, per_day


def _merged_rows(
    flat: Sequence[int], seq_ts: Sequence[int], seq_kinds: Sequence[int]
) -> tuple[int, ...]:
    """Day rows of the buckets plus the sequence, each count saturating as the fold does."""
    stride = _NTYPES + 1
    rows = {flat[i]: list(flat[i + 1 : i + stride]) for i in range(0, len(flat), stride)}
    for ts, kind in zip(seq_ts, seq_kinds, strict=True):
        row = rows.setdefault(ts // MS_PER_DAY, [0] * _NTYPES)
        row[kind] = min(row[kind] + 1, MAX_DAY_COUNT)
    return tuple(value for day in sorted(rows) for value in (day, *rows[day]))


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
