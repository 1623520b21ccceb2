"""Reading a stored state (pure): sequence records and their sparse columns, and the window
counts of day buckets plus the events still in the sequence."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.errors import StateCorrupt
from memberpulse.models.snapshot import MAX_DAY_COUNT
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.state.codec import _day_windows, _merged_rows, _records_of

TODAY = 20_400
NTYPES = len(EVENT_TYPES)


def buckets(rows: dict[int, list[int]]) -> bytes:
    """Day bucket column as apply.lua writes it: ascending days, u16 day + u16 per type."""
    return b"".join(struct.pack(">" + "H" * (NTYPES + 1), day, *rows[day]) for day in sorted(rows))


def sequence(events: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ts ascending, type indices) of (day, type) pairs, one event per pair."""
    ordered = sorted((day * MS_PER_DAY + 1000 * i, kind) for i, (day, kind) in enumerate(events))
    return tuple(ts for ts, _ in ordered), tuple(kind for _, kind in ordered)


def test_a_saturated_bucket_plus_the_sequence_stays_saturated() -> None:
    rows = {TODAY - 1: [MAX_DAY_COUNT - 3, 0, 0, 0, 2]}
    ts, kinds = sequence([(TODAY - 1, 0)] * 10 + [(TODAY - 1, 4), (TODAY, 0)])
    counts, weeks, active = _day_windows(buckets(rows), TODAY, ts, kinds)
    assert counts["1d"] == (1, 0, 0, 0, 0)
    assert counts["7d"] == (MAX_DAY_COUNT + 1, 0, 0, 0, 3)  # 65,535 yesterday + 1 today
    assert weeks[-1] == counts["7d"]
    assert active[-1] == 2


day_rows = st.dictionaries(
    st.integers(TODAY - 70, TODAY),
    st.lists(st.integers(0, 300), min_size=NTYPES, max_size=NTYPES),
    max_size=30,
)
seq_events = st.lists(st.tuples(st.integers(TODAY - 70, TODAY + 1), st.integers(0, NTYPES - 1)),
                      max_size=64)  # fmt: skip


@given(day_rows, seq_events)
def test_the_fast_path_equals_merging_the_rows_first(
    rows: dict[int, list[int]], events: list[tuple[int, int]]
) -> None:
    """Summing the two sources per window, packed, is the same as one merged column."""
    ts, kinds = sequence(events)
    days = buckets(rows)
    merged = _merged_rows(struct.unpack(f">{len(days) // 2}H", days), ts, kinds)
    assert _day_windows(days, TODAY, ts, kinds) == _day_windows(
        struct.pack(f">{len(merged)}H", *merged), TODAY, (), ()
    )


def layout_5_records(events: list[tuple[int, int, int, int, int]]) -> bytes:
    """Sequence records as apply.lua writes them: id hash u32, ts × 32 + flags as a u48."""
    out = b""
    for ts, id_hash, kind, has_price, has_quantity in events:
        packed = ts * 32 + kind + 8 * has_price + 16 * has_quantity
        out += struct.pack(">IHI", id_hash, packed >> 32, packed & 0xFFFFFFFF)
    return out


def test_layout_5_records_read_back_with_their_sparse_columns() -> None:
    ts = TODAY * MS_PER_DAY
    records = layout_5_records([(ts, 7, 0, 0, 0), (ts + 1, 9, 2, 1, 1), (ts + 2, 1, 4, 1, 0)])
    state = [5, "M1", *[None] * 2, records, *[None] * 14, b"\x00\x00\x07\xcf\x00\x00\x00\x00",
             b"\x00\x03"]  # fmt: skip
    stamps, kinds, quantities, prices = _records_of(state)
    assert (stamps, tuple(kinds), quantities, prices) == (
        (ts, ts + 1, ts + 2), (0, 2, 4), (1, 3, 1), (None, 19.99, 0.0)
    )  # fmt: skip


def test_sparse_columns_that_do_not_match_their_flags_are_refused() -> None:
    records = layout_5_records([(TODAY * MS_PER_DAY, 7, 2, 1, 0)])
    state = [5, "M1", *[None] * 2, records, *[None] * 14, b"", b""]
    with pytest.raises(StateCorrupt, match="sparse columns do not match"):
        _records_of(state)
