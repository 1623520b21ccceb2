"""Window counts of a stored state (pure): day buckets plus the events still in the sequence."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.snapshot import MAX_DAY_COUNT
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.state_codec import _day_windows, _merged_rows

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
