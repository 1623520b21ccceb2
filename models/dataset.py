"""Point-in-time training examples: features strictly before a cutoff, labels strictly after.

A sample is (member, cutoff c): its features are `encode(fold(events with ts < c), c)`,
the very fold and encoder serving uses; its labels come from events in [c, c + H):
churn = no purchase there, spend = what was spent there, next item = the item of the
first event there. Cutoffs are calendar times shared by all members, and the splits are
by time: validation labels start where training labels end (see `time_split`).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.batch_fold import LogIndex, snapshots_at, snapshots_of_prefixes
from memberpulse.models.config import DatasetConfig
from memberpulse.models.contract import EVENT_TYPES, PURCHASE
from memberpulse.models.eventlog import EventLog
from memberpulse.models.features import (
    AGGREGATES,
    CENTS_PER_UNIT,
    FeatureBatch,
    FeatureSpec,
    concat,
    encode_sequences,
    normalise,
    raw_aggregates,
    schema_hash,
)
from memberpulse.models.snapshot import MemberSnapshot, StateSpec
from memberpulse.models.timeutil import MS_PER_DAY

NO_NEXT: Final = -2  # no event in the label window: not a next-item example
OUTSIDE: Final = -1  # next item outside the vocabulary: counted as a miss
PURCHASE_CODE: Final = EVENT_TYPES.index(PURCHASE)
PREFIX_ROWS_PER_CHUNK: Final = 2_000_000  # leave-one-out prefixes folded per pass (memory)
RFM_COLUMNS: Final = ("recency_days", "frequency", "monetary", "has_purchase")


@dataclass(frozen=True, eq=False)
class Samples:
    """Encoded examples and their labels, one row per (member, cutoff)."""

    features: FeatureBatch
    churn: NDArray[np.float32]  # 1 = no purchase in [c, c + H)
    spend: NDArray[np.float32]  # currency units spent in [c, c + H)
    next_item: NDArray[np.int64]  # catalogue position, OUTSIDE or NO_NEXT
    member: NDArray[np.int64]  # member index in the log
    cutoff: NDArray[np.int64]
    rfm: NDArray[np.float64]  # RFM_COLUMNS, for the baseline
    idle_days: NDArray[np.float64]  # days from the member's last event to the cutoff
    raw: NDArray[np.float64]  # un-normalised aggregates (normalisation stats come from them)
    wait_days: NDArray[np.float64]  # days from the cutoff to the first purchase in the
    # label window (inf: none), for the shorter-horizon churn targets

    def __len__(self) -> int:
        return self.features.rows

    def take(self, rows: NDArray[np.int64]) -> Samples:
        """The selected rows."""
        return Samples(
            self.features.take(rows),
            *(getattr(self, name)[rows] for name in _ROW_FIELDS),
        )

    def normalised(self, spec: FeatureSpec) -> Samples:
        """The same samples with aggregates normalised by `spec`."""
        features = self.features._replace(aggregates=normalise(self.raw, spec))
        return replace(self, features=features)


_ROW_FIELDS: Final = (
    "churn", "spend", "next_item", "member", "cutoff", "rfm", "idle_days", "raw", "wait_days",
)  # fmt: skip


def cutoffs(first: int, last: int, config: DatasetConfig) -> list[int]:
    """Cutoffs every `stride_days`, aligned back from `last`, none before `first` + history."""
    stride = config.stride_days * MS_PER_DAY
    earliest = first + config.min_history_days * MS_PER_DAY
    out = []
    moment = last
    while moment >= earliest:
        out.append(moment)
        moment -= stride
    return sorted(out)


def time_split(log: EventLog, until: int, config: DatasetConfig) -> tuple[list[int], int]:
    """Training cutoffs and the validation cutoff for a model that may see only ts < until.

    Validation: the cutoff `until − H` (labels in [until − H, until)). Training cutoffs end
    `H` before it, so no training label reaches into the validation window.
    """
    horizon = config.horizon_days * MS_PER_DAY
    valid = until - horizon
    train = cutoffs(log.start, valid - horizon, config)
    if not train:
        days = (until - log.start) / MS_PER_DAY
        raise ValueError(
            f"the log has {days:.1f} days before {until} (epoch ms); training needs at least "
            f"{config.min_history_days + 2 * config.horizon_days} (history + 2 × horizon)"
        )
    return train, valid


@dataclass(frozen=True)
class Split:
    """Training and validation cutoffs, and (for a member split) who is in which."""

    train_cutoffs: list[int]
    valid_cutoff: int
    train_members: frozenset[int] | None = None
    valid_members: frozenset[int] | None = None


def split(log: EventLog, until: int, config: DatasetConfig) -> Split:
    """The validation design `config.validation` asks for (see `time_split`)."""
    if config.validation == "time":
        train, valid = time_split(log, until, config)
        return Split(train, valid)
    horizon = config.horizon_days * MS_PER_DAY
    valid_cutoff = until - horizon
    train = cutoffs(log.start, valid_cutoff, config)
    if not train:
        raise ValueError(f"the log has too few days before {until} (epoch ms) for training")
    held = {m for m in log.iter_members() if _share(log.members[m]) < config.valid_share}
    others = frozenset(set(log.iter_members()) - held)
    return Split(train, valid_cutoff, others, frozenset(held))


def _share(member_id: str) -> float:
    """A member's stable position in [0, 1) (sha256 of the id): who is held out."""
    digest = hashlib.sha256(member_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def build_vocabulary(
    log: EventLog, until: int, config: DatasetConfig, state: StateSpec
) -> FeatureSpec:
    """Vocabularies and price edges from events before `until` (normalisation: identity)."""
    seen = log.ts < until
    counts = np.bincount(log.items[seen], minlength=len(log.item_names))
    frequent = np.flatnonzero(counts >= config.min_item_count)
    order = frequent[np.lexsort((frequent, -counts[frequent]))]  # by count, ties by index
    cats = np.unique(log.categories[seen & (log.categories >= 0)])
    prices = log.prices[seen & np.isfinite(log.prices)]
    quantiles = np.linspace(0, 1, config.price_buckets + 1)[1:-1]
    edges = np.unique(np.quantile(prices, quantiles)) if prices.size else np.array([])
    return FeatureSpec(
        sequence_length=min(config.sequence_length, state.sequence_length),
        hash_buckets=config.hash_buckets,
        items=tuple(log.item_names[i] for i in order.tolist()),
        categories=tuple(log.category_names[i] for i in cats.tolist()),
        price_edges=tuple(float(e) for e in edges),
        agg_mean=(0.0,) * len(AGGREGATES),
        agg_std=(1.0,) * len(AGGREGATES),
        schema=schema_hash(),
    )


def with_normalisation(spec: FeatureSpec, raw: NDArray[np.float64]) -> FeatureSpec:
    """The spec with mean/std of raw aggregate rows (constant columns get std 1)."""
    std = raw.std(axis=0)
    return replace(
        spec,
        agg_mean=tuple(float(v) for v in raw.mean(axis=0)),
        agg_std=tuple(float(v) if v > 0 else 1.0 for v in std),
    )


_INDEXES: weakref.WeakKeyDictionary[EventLog, LogIndex] = weakref.WeakKeyDictionary()


def log_index(log: EventLog) -> LogIndex:
    """The log's `LogIndex`, built once per log object."""
    index = _INDEXES.get(log)
    if index is None:
        index = _INDEXES[log] = LogIndex.of(log)
    return index


def _snapshots(
    log: EventLog, cutoff: int, state: StateSpec, members: Collection[int] | None = None
) -> list[tuple[int, MemberSnapshot]]:
    """`fold` of every member's events before `cutoff`, computed for all of them at once
    (`batch_fold`; a test holds it equal to `fold`)."""
    return snapshots_at(log_index(log), cutoff, state, members)


def build_samples(
    log: EventLog,
    at: Sequence[int],
    horizon_days: int,
    spec: FeatureSpec,
    state: StateSpec,
    members: Collection[int] | None = None,
) -> Samples:
    """Examples for every member (of `members`, if given) with an event before each cutoff."""
    horizon = horizon_days * MS_PER_DAY
    parts = [_samples_at(log, cutoff, horizon, spec, state, members) for cutoff in at]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("no member has an event before any cutoff")
    return Samples(
        concat([p.features for p in parts]),
        *(np.concatenate([getattr(p, name) for p in parts]) for name in _ROW_FIELDS),
    )


def _samples_at(
    log: EventLog,
    cutoff: int,
    horizon: int,
    spec: FeatureSpec,
    state: StateSpec,
    members: Collection[int] | None,
) -> Samples:
    pairs = _snapshots(log, cutoff, state, members)
    members = np.array([m for m, _ in pairs], dtype=np.int64)
    snaps = [s for _, s in pairs]
    catalogue = {item: i for i, item in enumerate(spec.items)}
    churn, spend, next_item, wait = _labels(log, members, cutoff, cutoff + horizon, catalogue)
    nows = np.full(len(members), cutoff, dtype=np.int64)
    return _assemble(snaps, members, nows, (churn, spend, next_item), spec, wait)


def _assemble(
    snaps: Sequence[MemberSnapshot],
    members: NDArray[np.int64],
    nows: NDArray[np.int64],
    labels: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]],
    spec: FeatureSpec,
    wait_days: NDArray[np.float64],
) -> Samples:
    """Samples from snapshots (each as of its `nows` entry) and their labels."""
    at = nows.tolist()
    raw = raw_aggregates(snaps, at)
    features = FeatureBatch._make((*encode_sequences(snaps, at, spec), normalise(raw, spec)))
    return Samples(
        features,
        *labels,
        members,
        nows,
        rfm_inputs(snaps, at),
        np.array([(s.now - s.last_seen) / MS_PER_DAY for s in snaps], dtype=np.float64),
        raw,
        wait_days,
    )


def sequence_windows(
    log: EventLog, held_out: int, windows: int, stride: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Leave-one-out training samples: (member, prefix length) pairs.

    Each member's last `held_out` events are never a target; the latest trainable
    target is the event just before them, and the member's earlier events are covered by
    up to `windows` prefixes `stride` events apart (stride = the sequence length: every
    event is then a target at exactly one sample's positions, as SASRec's windows)."""
    lengths = np.diff(log.offsets)
    last = lengths - held_out - 1  # prefix length whose label is the latest trainable event
    members, counts = [], []
    for k in range(windows):
        count = last - k * stride
        ok = count >= 1
        members.append(np.flatnonzero(ok))
        counts.append(count[ok])
    member = np.concatenate(members)
    order = np.lexsort((np.concatenate(counts), member))
    return member[order], np.concatenate(counts)[order]


def build_prefix_samples(
    log: EventLog,
    members: NDArray[np.int64],
    counts: NDArray[np.int64],
    horizon_days: int,
    spec: FeatureSpec,
    state: StateSpec,
) -> Samples:
    """Sample j: member `members[j]`'s first `counts[j]` events (log order) as of the time
    of the event after them, which is the next-item label; churn and spend labels from
    that event's time on, over the horizon."""
    members, counts = np.asarray(members, np.int64), np.asarray(counts, np.int64)
    if not len(members):
        raise ValueError("no member has enough events for a leave-one-out sample")
    target_rows = log.offsets[members] + counts
    nows = log.ts[target_rows]
    snaps = []
    index = log_index(log)
    for chunk in _chunks_of_rows(counts, PREFIX_ROWS_PER_CHUNK):  # bounded memory
        snaps += snapshots_of_prefixes(index, members[chunk], counts[chunk], nows[chunk], state)
    catalogue = {item: i for i, item in enumerate(spec.items)}
    position = np.array([catalogue.get(n, OUTSIDE) for n in log.item_names], dtype=np.int64)
    next_item = position[log.items[target_rows]]
    churn, spend, wait = _purchases_from(
        log, members, target_rows, nows, nows + horizon_days * MS_PER_DAY
    )
    return _assemble(snaps, members, nows, (churn, spend, next_item), spec, wait)


def _chunks_of_rows(counts: NDArray[np.int64], limit: int) -> list[slice]:
    """Consecutive sample ranges whose prefixes hold about `limit` log rows together (a
    single longer prefix is its own chunk)."""
    ends = np.cumsum(counts)
    out, start, base = [], 0, 0
    while start < len(counts):
        stop = max(int(np.searchsorted(ends, base + limit, side="right")), start + 1)
        out.append(slice(start, stop))
        base, start = int(ends[stop - 1]), stop
    return out


def _purchases_from(
    log: EventLog,
    members: NDArray[np.int64],
    rows: NDArray[np.int64],
    starts: NDArray[np.int64],
    stops: NDArray[np.int64],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64]]:
    """Churn (no purchase), spend and days to the first purchase over each member's rows
    from `rows` to ts < `stops` (the window starts at `starts`)."""
    churn = np.ones(len(members), dtype=np.float32)
    spend = np.zeros(len(members), dtype=np.float32)
    wait = np.full(len(members), np.inf)
    ends = log.offsets[members + 1]
    for j, (lo, end, stop) in enumerate(
        zip(rows.tolist(), ends.tolist(), stops.tolist(), strict=True)
    ):
        hi = lo + int(np.searchsorted(log.ts[lo:end], stop, side="left"))
        churn[j], spend[j], wait[j] = _outcome(log, lo, hi, int(starts[j]))
    return churn, spend, wait


def _outcome(log: EventLog, lo: int, hi: int, start: int) -> tuple[float, float, float]:
    """(churn label, spend, days from `start` to the first purchase) of log rows lo..hi:
    1, 0 and inf without a purchase among them."""
    bought = log.types[lo:hi] == PURCHASE_CODE
    if not bought.any():
        return 1.0, 0.0, math.inf
    price = np.nan_to_num(log.prices[lo:hi][bought])
    first = int(log.ts[lo:hi][bought][0])
    return 0.0, float((price * log.quantities[lo:hi][bought]).sum()), (first - start) / MS_PER_DAY


def _labels(
    log: EventLog, members: NDArray[np.int64], start: int, stop: int, catalogue: dict[str, int]
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64], NDArray[np.float64]]:
    wait = np.full(len(members), np.inf)
    churn = np.ones(len(members), dtype=np.float32)
    spend = np.zeros(len(members), dtype=np.float32)
    next_item = np.full(len(members), NO_NEXT, dtype=np.int64)
    for row, member in enumerate(members.tolist()):
        rows = log.rows(member)
        ts = log.ts[rows]
        lo = rows.start + int(np.searchsorted(ts, start, side="left"))
        hi = rows.start + int(np.searchsorted(ts, stop, side="left"))
        if lo == hi:
            continue
        name = log.item_names[log.items[lo]]
        next_item[row] = catalogue.get(name, OUTSIDE)
        churn[row], spend[row], wait[row] = _outcome(log, lo, hi, start)
    return churn, spend, next_item, wait


def rfm_inputs(snapshots: Sequence[MemberSnapshot], now: int | list[int]) -> NDArray[np.float64]:
    """Recency (days since the last purchase, else since first seen), frequency, monetary."""
    out = np.empty((len(snapshots), len(RFM_COLUMNS)), dtype=np.float64)
    nows = now if isinstance(now, list) else [now] * len(snapshots)
    for row, (snap, at) in enumerate(zip(snapshots, nows, strict=True)):
        last = snap.last_ts[PURCHASE_CODE]
        since = at - (snap.first_seen if last is None else last)
        out[row] = (
            since / MS_PER_DAY,
            snap.total_purchases,
            snap.total_spend_cents / CENTS_PER_UNIT,
            0.0 if last is None else 1.0,
        )
    return out
