"""The reference fold: a member's events → `MemberSnapshot`, computed directly.

Plain Python over the full event list, written for obviousness rather than speed: it is
the definition the Redis state layer is tested against, and what the dataset builder uses
to make training features. `admit` applies the lateness rule the state layer applies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from memberpulse.models.contract import EVENT_TYPES, PURCHASE, Event
from memberpulse.models.snapshot import (
    MAX_DAY_COUNT,
    MONTHS_KEPT,
    WEEKS,
    WINDOWS,
    EventSequence,
    GapStats,
    MemberSnapshot,
    StateSpec,
    day_of,
    from_cents,
    id_hash,
    month_of,
    spend_cents,
    to_cents,
    week_back,
)


def admit(events: Iterable[Event], lateness_ms: int) -> tuple[list[Event], list[Event]]:
    """Split events, in arrival order, into admitted and too late.

    An event is too late when its ts is more than `lateness_ms` before the latest ts of the
    same member admitted before it. Duplicate event ids are dropped (first one wins).
    """
    admitted: list[Event] = []
    late: list[Event] = []
    latest: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for event in events:
        key = (event.member_id, event.event_id)
        if key in seen:
            continue
        if event.ts < latest.get(event.member_id, event.ts) - lateness_ms:
            late.append(event)
            continue
        seen.add(key)
        latest[event.member_id] = max(latest.get(event.member_id, event.ts), event.ts)
        admitted.append(event)
    return admitted, late


def fold(events: Sequence[Event], now: int, spec: StateSpec) -> MemberSnapshot:
    """The snapshot of one member's (admitted, distinct) events as of `now`."""
    if not events:
        raise ValueError("fold needs at least one event")
    members = {event.member_id for event in events}
    if len(members) != 1:
        raise ValueError(f"fold takes one member's events, got {len(members)} members")
    ordered = sorted(events, key=lambda e: (e.ts, id_hash(e.event_id)))
    purchases = [e for e in ordered if e.type == PURCHASE]
    week_counts, week_active_days = _weeks(ordered, now)
    return MemberSnapshot(
        member_id=ordered[0].member_id,
        now=now,
        events=_sequence(ordered[-spec.sequence_length :]),
        counts=_window_counts(ordered, now),
        week_counts=week_counts,
        week_active_days=week_active_days,
        last_ts=tuple(
            max((e.ts for e in ordered if e.type == name), default=None) for name in EVENT_TYPES
        ),
        month_purchases=_months(purchases, now, lambda e: 1),
        month_spend_cents=_months(purchases, now, spend_cents),
        total_purchases=len(purchases),
        total_spend_cents=sum(spend_cents(e) for e in purchases),
        first_seen=ordered[0].ts,
        last_seen=ordered[-1].ts,
        sessions=gap_stats([e.ts for e in ordered], spec.session_gap_ms),
        orders=gap_stats([e.ts for e in purchases], spec.session_gap_ms),
        recent_purchases=_recent_purchases(purchases, now, spec),
    )


def _sequence(events: Sequence[Event]) -> EventSequence:
    return EventSequence(
        items=tuple(e.item_id for e in events),
        types=tuple(e.type for e in events),
        ts=tuple(e.ts for e in events),
        prices=tuple(from_cents(to_cents(e.price)) for e in events),
        quantities=tuple(e.quantity for e in events),
        categories=tuple(e.category for e in events),
    )


def _window_counts(events: Sequence[Event], now: int) -> dict[str, tuple[int, ...]]:
    today = day_of(now)
    per_day = Counter((day_of(e.ts), e.type) for e in events)
    counts = {}
    for name, (near, far) in WINDOWS.items():
        counts[name] = tuple(
            sum(
                min(count, MAX_DAY_COUNT)
                for (day, kind), count in per_day.items()
                if kind == name_type and today - far <= day <= today - near
            )
            for name_type in EVENT_TYPES
        )
    return counts


def _weeks(
    events: Sequence[Event], now: int
) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    today = day_of(now)
    counts = [[0] * len(EVENT_TYPES) for _ in range(WEEKS)]
    days: list[set[int]] = [set() for _ in range(WEEKS)]
    per_day = Counter((day_of(e.ts), e.type) for e in events)
    for (day, kind), count in per_day.items():
        back = week_back(day, today)
        if 0 <= back < WEEKS:
            counts[back][EVENT_TYPES.index(kind)] += min(count, MAX_DAY_COUNT)
            days[back].add(day)
    return tuple(tuple(c) for c in reversed(counts)), tuple(len(d) for d in reversed(days))


def _months(purchases: Sequence[Event], now: int, value: Callable[[Event], int]) -> tuple[int, ...]:
    this_month = month_of(now)
    buckets = [0] * MONTHS_KEPT
    for event in purchases:
        back = this_month - month_of(event.ts)
        if 0 <= back < MONTHS_KEPT:
            buckets[MONTHS_KEPT - 1 - back] += value(event)
    return tuple(buckets)


def gap_stats(times: Sequence[int], gap_ms: int) -> GapStats:
    """Cluster sorted times into runs with gaps ≤ `gap_ms`; stats over the run starts."""
    starts: list[int] = []
    previous: int | None = None
    for ts in times:
        if previous is None or ts - previous > gap_ms:
            starts.append(ts)
        previous = ts
    if not starts:
        return GapStats(0, None, None, None, None)
    if len(starts) == 1:
        return GapStats(1, starts[0], starts[0], None, None)
    mean = (starts[-1] - starts[0]) / (len(starts) - 1)
    return GapStats(len(starts), starts[0], starts[-1], mean, starts[-1] - starts[-2])


def _recent_purchases(purchases: Sequence[Event], now: int, spec: StateSpec) -> tuple[str, ...]:
    first_day = day_of(now) - spec.exclusion_days + 1
    latest: dict[str, int] = {}
    for event in purchases:
        if first_day <= day_of(event.ts):
            latest[event.item_id] = max(latest.get(event.item_id, event.ts), event.ts)
    ranked = sorted(latest.items(), key=lambda pair: (-pair[1], pair[0]))
    return tuple(item for item, _ in ranked[: spec.max_recent_purchases])
