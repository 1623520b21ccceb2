"""The fold of every member at once: an event log and a cutoff → the `MemberSnapshot`s
that `fold` (models/fold.py) computes one member at a time, with numpy over the whole log.

`fold` stays the definition (the Redis state layer is tested against it); this module is
how training computes it fast, and a property test holds the two equal snapshot for
snapshot on random logs. What it reproduces, in `fold`'s terms:

- the recent sequence: the last L events by (ts, event-id hash) — the log is sorted by
  (member, ts), so only runs of equal timestamps are re-ordered, by the hash;
- window and week counts from (member, day, type) counts capped at `MAX_DAY_COUNT`;
- per-type latest times, calendar-month purchase buckets, totals in integer cents;
- sessions and orders: starts where the gap to the previous event exceeds the session gap;
- recently bought items: the latest purchase time per item within `exclusion_days`,
  newest first, ties by item id.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.eventlog import EventLog
from memberpulse.models.snapshot import (
    DAYS_KEPT,
    DAYS_PER_WEEK,
    MAX_DAY_COUNT,
    MONTHS_KEPT,
    PURCHASE_INDEX,
    WEEKS,
    WINDOWS,
    EventSequence,
    GapStats,
    MemberSnapshot,
    StateSpec,
    id_hash,
)
from memberpulse.models.timeutil import MS_PER_DAY

N_TYPES: Final = len(EVENT_TYPES)
EPOCH_MONTH: Final = 1970 * 12  # month numbers as `snapshot.month_of` writes them


@dataclass(frozen=True, eq=False)
class LogIndex:
    """What every cutoff reuses: the log in fold order and per-row derived columns."""

    log: EventLog
    order: NDArray[np.int64]  # log rows in (member, ts, id hash) order
    owner: NDArray[np.int64]  # member of each row (fold order)
    ts: NDArray[np.int64]
    day: NDArray[np.int64]
    month: NDArray[np.int64]
    types: NDArray[np.int64]
    spend: NDArray[np.int64]  # cents spent (purchases with a price), else 0
    price: NDArray[np.float64]  # the unit price as the state stores it (cents / 100), NaN none
    item_rank: NDArray[np.int64]  # rank of each item name in sorted order (the id tie-break)
    rank: NDArray[np.int64]  # fold-order position of each log row

    @classmethod
    def of(cls, log: EventLog) -> LogIndex:
        """Index a log (the hashes of tied timestamps are the only per-row Python)."""
        n = len(log)
        owner = np.repeat(np.arange(len(log.members)), np.diff(log.offsets))
        tie_key = np.zeros(n, dtype=np.int64)
        same = (owner[1:] == owner[:-1]) & (log.ts[1:] == log.ts[:-1])
        tied = np.flatnonzero(np.r_[same, False] | np.r_[False, same])
        for row in tied.tolist():
            tie_key[row] = id_hash(log.event_ids[row])
        order = np.lexsort((tie_key, log.ts, owner))
        ts = log.ts[order]
        day = ts // MS_PER_DAY
        months = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
        types = log.types[order].astype(np.int64)
        raw_price = log.prices[order]
        has_price = ~np.isnan(raw_price)
        cents = np.where(has_price, np.floor(np.nan_to_num(raw_price) * 100 + 0.5), 0).astype(
            np.int64
        )
        spend = np.where(types == PURCHASE_INDEX, cents * log.quantities[order], 0)
        names = np.array(log.item_names, dtype=object)
        item_rank = np.empty(len(names), dtype=np.int64)
        item_rank[np.argsort(names, kind="stable")] = np.arange(len(names))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        return cls(
            log,
            order,
            owner[order],
            ts,
            day,
            months + EPOCH_MONTH,
            types,
            spend,
            np.where(has_price, cents / 100, np.nan),
            item_rank,
            rank,
        )


def snapshots_at(
    index: LogIndex, cutoff: int, state: StateSpec, members: Collection[int] | None = None
) -> list[tuple[int, MemberSnapshot]]:
    """(member, snapshot of its events with ts < cutoff, as of cutoff) for every member
    (of `members`) with such an event, in member order — what `fold` gives for each."""
    log = index.log
    n_members = len(log.members)
    wanted = np.ones(n_members, dtype=bool)
    if members is not None:
        wanted[:] = False
        wanted[np.fromiter(members, dtype=np.int64)] = True
    before = index.ts < cutoff
    rows = np.flatnonzero(before & wanted[index.owner])
    owner = index.owner[rows]
    counts = np.bincount(owner, minlength=n_members)
    chosen = np.flatnonzero(counts)
    if not len(chosen):
        return []
    slot = np.full(n_members, -1, dtype=np.int64)
    slot[chosen] = np.arange(len(chosen))
    nows = np.full(len(chosen), cutoff, dtype=np.int64)
    snaps = _fold_rows(index, rows, slot[owner], chosen, nows, state)
    return list(zip(chosen.tolist(), snaps, strict=True))


def snapshots_of_prefixes(
    index: LogIndex,
    members: NDArray[np.int64],
    counts: NDArray[np.int64],
    nows: NDArray[np.int64],
    state: StateSpec,
) -> list[MemberSnapshot]:
    """Sample j: `fold` of member `members[j]`'s first `counts[j]` events in log order
    (≥ 1), as of `nows[j]` — the leave-one-out samples, whose inputs end at an event,
    not at a time (events tied with the target's ts stay in, as in the log's order)."""
    log = index.log
    members, counts = np.asarray(members, np.int64), np.asarray(counts, np.int64)
    if (counts < 1).any() or (counts > np.diff(log.offsets)[members]).any():
        raise ValueError("every prefix needs between 1 and all of its member's events")
    k = len(members)
    if not k:
        return []
    # Each sample's log rows, then the same rows in fold order (a subset of fold order
    # is the fold order of the subset).
    who = np.repeat(np.arange(k), counts)
    first = np.cumsum(counts) - counts
    log_rows = log.offsets[members][who] + (np.arange(len(who)) - first[who])
    rank = index.rank[log_rows]
    order = np.lexsort((rank, who))
    return _fold_rows(index, rank[order], who[order], members, np.asarray(nows, np.int64), state)


def _fold_rows(
    index: LogIndex,
    rows: NDArray[np.int64],
    who: NDArray[np.int64],
    sample_member: NDArray[np.int64],
    nows: NDArray[np.int64],
    state: StateSpec,
) -> list[MemberSnapshot]:
    """Snapshots of k samples from their fold-order `rows`, grouped by sample `who`
    (non-decreasing, every sample non-empty), each as of `nows[who]`."""
    log = index.log
    k = len(sample_member)
    starts = np.searchsorted(who, np.arange(k), side="left")
    stops = np.searchsorted(who, np.arange(k), side="right")
    today = nows // MS_PER_DAY  # per sample
    ts, day, types = index.ts[rows], index.day[rows], index.types[rows]

    windows, weeks, week_days = _day_counts(who, day, types, today, k)
    last_ts = np.full((k, N_TYPES), -1, dtype=np.int64)
    np.maximum.at(last_ts, (who, types), ts)
    bought = types == PURCHASE_INDEX
    month_purchases, month_spend = _months(who[bought], index.month[rows][bought],
                                           index.spend[rows][bought], nows, k)  # fmt: skip
    total_purchases = np.bincount(who[bought], minlength=k)
    total_spend_cents = np.zeros(k, dtype=np.int64)
    np.add.at(total_spend_cents, who[bought], index.spend[rows][bought])  # exact integers
    sessions = _gap_stats(who, ts, state.session_gap_ms, k)
    orders = _gap_stats(who[bought], ts[bought], state.session_gap_ms, k)
    recent = _recent_purchases(index, rows[bought], who[bought], today, state, k)

    out: list[MemberSnapshot] = []
    length = state.sequence_length
    names, categories = log.item_names, log.category_names
    source = index.order[rows]  # original log rows (ids, items, categories)
    item_codes = log.items[source]
    category_codes = log.categories[source]
    quantity = log.quantities[source]
    price = index.price[rows]
    window_names = list(WINDOWS)
    for j, member in enumerate(sample_member.tolist()):
        lo, hi = int(starts[j]), int(stops[j])
        seq = slice(max(lo, hi - length), hi)
        seq_prices = price[seq].tolist()
        out.append(
            MemberSnapshot(
                member_id=log.members[member],
                now=int(nows[j]),
                events=EventSequence(
                    items=tuple(names[i] for i in item_codes[seq].tolist()),
                    types=tuple(EVENT_TYPES[t] for t in types[seq].tolist()),
                    ts=tuple(ts[seq].tolist()),
                    prices=tuple(None if p != p else p for p in seq_prices),
                    quantities=tuple(quantity[seq].tolist()),
                    categories=tuple(
                        None if c < 0 else categories[c] for c in category_codes[seq].tolist()
                    ),
                ),
                counts={name: tuple(windows[w, j].tolist()) for w, name in enumerate(window_names)},
                week_counts=tuple(tuple(week) for week in weeks[j].tolist()),
                week_active_days=tuple(week_days[j].tolist()),
                last_ts=tuple(None if t < 0 else t for t in last_ts[j].tolist()),
                month_purchases=tuple(month_purchases[j].tolist()),
                month_spend_cents=tuple(month_spend[j].tolist()),
                total_purchases=int(total_purchases[j]),
                total_spend_cents=int(total_spend_cents[j]),
                first_seen=int(ts[lo]),
                last_seen=int(ts[hi - 1]),
                sessions=sessions[j],
                orders=orders[j],
                recent_purchases=recent[j],
            )
        )
    return out


def _day_counts(
    who: NDArray[np.int64],
    day: NDArray[np.int64],
    types: NDArray[np.int64],
    today: NDArray[np.int64],
    k: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Window counts (W, k, T), week counts (k, WEEKS, T) oldest first, active days per week."""
    back = today[who] - day
    near = back < DAYS_KEPT
    key = (who[near] * DAYS_KEPT + back[near]) * N_TYPES + types[near]
    unique, count = np.unique(key, return_counts=True)
    count = np.minimum(count, MAX_DAY_COUNT)
    kind = unique % N_TYPES
    member_day = unique // N_TYPES
    member, days_back = member_day // DAYS_KEPT, member_day % DAYS_KEPT
    windows = np.zeros((len(WINDOWS), k, N_TYPES), dtype=np.int64)
    for w, (first, last) in enumerate(WINDOWS.values()):
        inside = (days_back >= first) & (days_back <= last)
        np.add.at(windows[w], (member[inside], kind[inside]), count[inside])
    week = days_back // DAYS_PER_WEEK
    in_weeks = week < WEEKS
    weeks = np.zeros((k, WEEKS, N_TYPES), dtype=np.int64)
    column = WEEKS - 1 - week  # oldest first
    np.add.at(weeks, (member[in_weeks], column[in_weeks], kind[in_weeks]), count[in_weeks])
    active = np.unique(member_day[in_weeks])
    week_days = np.zeros((k, WEEKS), dtype=np.int64)
    np.add.at(
        week_days, (active // DAYS_KEPT, WEEKS - 1 - (active % DAYS_KEPT) // DAYS_PER_WEEK), 1
    )
    return windows, weeks, week_days


def _months(
    who: NDArray[np.int64],
    month: NDArray[np.int64],
    spend: NDArray[np.int64],
    nows: NDArray[np.int64],
    k: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    this_month = (nows // MS_PER_DAY).astype("datetime64[D]").astype("datetime64[M]")
    back = this_month.astype(np.int64)[who] + EPOCH_MONTH - month
    inside = (back >= 0) & (back < MONTHS_KEPT)
    purchases = np.zeros((k, MONTHS_KEPT), dtype=np.int64)
    cents = np.zeros((k, MONTHS_KEPT), dtype=np.int64)
    column = MONTHS_KEPT - 1 - back[inside]
    np.add.at(purchases, (who[inside], column), 1)
    np.add.at(cents, (who[inside], column), spend[inside])
    return purchases, cents


def _gap_stats(
    who: NDArray[np.int64], ts: NDArray[np.int64], gap_ms: int, k: int
) -> list[GapStats]:
    """`fold.gap_stats` per member over rows sorted by (member, ts)."""
    first_row = np.r_[True, who[1:] != who[:-1]] if len(who) else np.zeros(0, dtype=bool)
    gap = np.r_[0, np.diff(ts)] if len(ts) else np.zeros(0, dtype=np.int64)
    start = first_row | (gap > gap_ms)
    s_who, s_ts = who[start], ts[start]
    n = np.bincount(s_who, minlength=k)
    out: list[GapStats] = []
    begin = np.searchsorted(s_who, np.arange(k), side="left").tolist()
    times = s_ts.tolist()
    for j, count in enumerate(n.tolist()):
        if count == 0:
            out.append(GapStats(0, None, None, None, None))
            continue
        lo = begin[j]
        first, last = times[lo], times[lo + count - 1]
        if count == 1:
            out.append(GapStats(1, first, first, None, None))
        else:
            out.append(
                GapStats(
                    count, first, last, (last - first) / (count - 1), last - times[lo + count - 2]
                )
            )
    return out


def _recent_purchases(
    index: LogIndex,
    rows: NDArray[np.int64],
    who: NDArray[np.int64],
    today: NDArray[np.int64],
    state: StateSpec,
    k: int,
) -> list[tuple[str, ...]]:
    """Items bought since `exclusion_days` ago, newest first (ties by item id), capped."""
    log = index.log
    recent = index.day[rows] >= today[who] - state.exclusion_days + 1
    rows, who = rows[recent], who[recent]
    items = log.items[index.order[rows]].astype(np.int64)
    key = who * len(log.item_names) + items
    unique, inverse = np.unique(key, return_inverse=True)
    latest = np.full(len(unique), np.iinfo(np.int64).min)
    np.maximum.at(latest, inverse, index.ts[rows])
    u_who, u_item = unique // len(log.item_names), unique % len(log.item_names)
    order = np.lexsort((index.item_rank[u_item], -latest, u_who))
    u_who, u_item = u_who[order], u_item[order]
    out: list[tuple[str, ...]] = [() for _ in range(k)]
    begin = np.searchsorted(u_who, np.arange(k), side="left").tolist()
    end = np.searchsorted(u_who, np.arange(k), side="right").tolist()
    names = log.item_names
    items_sorted = u_item.tolist()
    for j in range(k):
        if end[j] > begin[j]:
            stop = min(end[j], begin[j] + state.max_recent_purchases)
            out[j] = tuple(names[i] for i in items_sorted[begin[j] : stop])
    return out
