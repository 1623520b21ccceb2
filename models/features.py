"""Feature encoding: member snapshots → fixed-shape arrays, the same code in training and serving.

Pure numpy (no torch): the worker imports it on the hot path. Two things describe an
encoding and both travel with a model:

- the *feature schema* (`SCHEMA`, hashed by `schema_hash()`): names, dtypes, shapes and
  the meaning of every reserved index and bucket. It is a property of this module's code;
  whoever changes what `encode` computes changes `SCHEMA` (a test pins the hash, so the
  change is deliberate) and a worker then refuses models encoded the old way;
- the per-model `FeatureSpec`: vocabularies, price bucket edges and normalisation
  statistics learned from one training log.

Sequences are right-aligned: position L − 1 holds the latest event, padding comes first.
Index 0 is padding in every id column.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.snapshot import WEEKS, WINDOWS, MemberSnapshot
from memberpulse.models.timeutil import MS_PER_DAY

PAD: Final = 0
UNK: Final = 1  # an item/category the vocabulary cannot place (no hash buckets, or no id)
FIRST_ID: Final = 2  # first index after the reserved ones, in every id column
NO_PRICE: Final = 1  # price bucket of an event without a price
TIME_BUCKETS: Final = 28  # 0 = PAD, then 1 + floor(log2(1 + seconds)), capped (~4 years)
MS_PER_S: Final = 1_000
MISSING_DAYS: Final = 400.0  # stands in for "never" in day-valued features (plus a flag)
CENTS_PER_UNIT: Final = 100
HASH_NAME: Final = "crc32"  # stable across processes and machines, unlike hash()

# Session content, read from the snapshot's whole recent sequence (not only the L events
# the network sees): sessions split where events are more than SESSION_GAP_MS apart (the
# state's default), the latest RECENT_SESSIONS sessions against the earlier ones, and
# category novelty of the latest RECENT_EVENTS events against the earlier ones.
SESSION_GAP_MS: Final = 1_800_000
RECENT_SESSIONS: Final = 3
RECENT_EVENTS: Final = 16
SESSION_PARTS: Final = ("recent", "earlier")
SESSION_STATS: Final = (
    "clicks_per_session",
    "browses_per_session",
    "sessions_without_purchase",
    "log_price_clicked",
    "log_price_bought",
)
CONTENT: Final[tuple[str, ...]] = (
    *(f"{part}_{stat}" for part in SESSION_PARTS for stat in SESSION_STATS),
    "earlier_sessions",
    "novel_category_share",
    "events_since_purchase",
    "sessions_since_purchase",
    "no_purchase_in_sequence",
    "sequence_span_days",
    "sequence_sessions",
)

# The aggregate vector, in order. Counts are log1p; times are log1p(days); money log1p(units).
# Calendar-month buckets are not in it: where `now` falls in its month changes what they
# cover, so they shift between training cutoffs and serving (rolling weeks do not).
AGGREGATES: Final[tuple[str, ...]] = (
    *(f"count_{w}_{t}" for w in WINDOWS for t in EVENT_TYPES),
    *(f"recency_days_{t}" for t in EVENT_TYPES),
    *(f"never_{t}" for t in EVENT_TYPES),
    *(f"week{w}_{t}" for w in range(WEEKS) for t in (*EVENT_TYPES, "active_days")),
    "total_purchases",
    "total_spend",
    "trailing_12m_spend",
    "tenure_days",
    "days_since_last_seen",
    *(
        f"{kind}_{stat}"
        for kind in ("sessions", "orders")
        for stat in ("n", "mean_gap_days", "last_gap_days", "days_since_last", "missing")
    ),
    "orders_overdue",
    "recent_purchases",
    "sequence_fill",
    *CONTENT,
)

#: What `encode` computes, declared. Change it whenever the encoding's meaning changes.
SCHEMA: Final[dict[str, Any]] = {
    "version": 2,
    "layout": "right-aligned sequences, latest event at position L-1, PAD first",
    "columns": {
        "items": ["int32", ["B", "L"], "0 PAD, 1 UNK, 2..2+H-1 crc32 hash buckets, then vocab"],
        "types": ["int32", ["B", "L"], f"0 PAD, 1 + index in {list(EVENT_TYPES)}"],
        "ages": ["int32", ["B", "L"], "0 PAD, 1 + floor(log2(1 + (now - ts) s)), capped"],
        "gaps": ["int32", ["B", "L"], "0 PAD, 1 + floor(log2(1 + gap to previous s)); first 1"],
        "prices": ["int32", ["B", "L"], "0 PAD, 1 no price, 2 + searchsorted(edges, price)"],
        "categories": ["int32", ["B", "L"], "0 PAD, 1 none/unknown, 2 + vocab index"],
        "mask": ["bool", ["B", "L"], "True where an event is present"],
        "aggregates": ["float32", ["B", "A"], "(raw - mean) / std, raw as named"],
    },
    "aggregates": list(AGGREGATES),
    "weeks": "week0 = the 7 days ending with now's day; counts log1p",
    "content": {
        "session_gap_ms": SESSION_GAP_MS,
        "recent_sessions": RECENT_SESSIONS,
        "recent_events": RECENT_EVENTS,
        "log_price": "mean log1p(unit price) of priced events, 0 if none",
        "orders_overdue": "log1p(days since last order start / mean order gap), 0 if none",
    },
    "time_buckets": TIME_BUCKETS,
    "missing_days": MISSING_DAYS,
    "hash": HASH_NAME,
}


def schema_hash() -> str:
    """The feature schema hash: identical encoders have identical hashes."""
    canonical = json.dumps(SCHEMA, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class FeatureBatch(NamedTuple):
    """Encoded members: id columns (B, L) int32, mask (B, L) bool, aggregates (B, A) f32."""

    items: NDArray[np.int32]
    types: NDArray[np.int32]
    ages: NDArray[np.int32]
    gaps: NDArray[np.int32]
    prices: NDArray[np.int32]
    categories: NDArray[np.int32]
    mask: NDArray[np.bool_]
    aggregates: NDArray[np.float32]

    @property
    def rows(self) -> int:
        """Number of members (B)."""
        return int(self.items.shape[0])

    def take(self, rows: NDArray[np.int64] | slice) -> FeatureBatch:
        """The rows selected by an index array or slice."""
        return FeatureBatch._make(column[rows] for column in self)


def concat(batches: Sequence[FeatureBatch]) -> FeatureBatch:
    """Rows of several batches, in order."""
    return FeatureBatch._make(np.concatenate(columns) for columns in zip(*batches, strict=True))


@dataclass(frozen=True)
class FeatureSpec:
    """What one model learned about its training data (saved beside it as JSON)."""

    sequence_length: int
    hash_buckets: int
    items: tuple[str, ...]  # the catalogue the model ranks, index FIRST_ID + H + position
    categories: tuple[str, ...]
    price_edges: tuple[float, ...]
    agg_mean: tuple[float, ...]
    agg_std: tuple[float, ...]
    schema: str = ""  # schema_hash() of the encoder that built it

    def __post_init__(self) -> None:
        if len(self.agg_mean) != len(AGGREGATES) or len(self.agg_std) != len(AGGREGATES):
            raise ValueError(
                f"normalisation stats have {len(self.agg_mean)}/{len(self.agg_std)} values, "
                f"the schema has {len(AGGREGATES)} aggregates"
            )

    @property
    def first_item(self) -> int:
        """Index of the first real catalogue item (PAD, UNK and hash buckets come first)."""
        return FIRST_ID + self.hash_buckets

    @property
    def n_item_ids(self) -> int:
        """Rows of the item embedding table."""
        return self.first_item + len(self.items)

    @property
    def n_categories(self) -> int:
        """Rows of the category embedding table."""
        return FIRST_ID + len(self.categories)

    @property
    def n_price_buckets(self) -> int:
        """Rows of the price-bucket embedding table."""
        return FIRST_ID + len(self.price_edges) + 1

    def item_index(self) -> dict[str, int]:
        """Vocabulary item → embedding index."""
        return {item: self.first_item + i for i, item in enumerate(self.items)}

    def save(self, path: Path) -> None:
        """Write the spec as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        """Read a spec written by `save`."""
        raw: dict[str, Any] = json.loads(path.read_text())
        return cls(
            sequence_length=int(raw["sequence_length"]),
            hash_buckets=int(raw["hash_buckets"]),
            items=tuple(raw["items"]),
            categories=tuple(raw["categories"]),
            price_edges=tuple(raw["price_edges"]),
            agg_mean=tuple(raw["agg_mean"]),
            agg_std=tuple(raw["agg_std"]),
            schema=str(raw["schema"]),
        )


def time_bucket(ms: NDArray[np.int64]) -> NDArray[np.int32]:
    """1 + floor(log2(1 + seconds)), capped to the last bucket (ms may be negative: 0 s)."""
    seconds = np.maximum(ms, 0).astype(np.float64) / MS_PER_S
    raw = 1 + np.floor(np.log2(1.0 + seconds))
    buckets: NDArray[np.int32] = np.minimum(raw, TIME_BUCKETS - 1).astype(np.int32)
    return buckets


class _Encoder:
    """The encoder for one spec, with its lookup tables built once."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.items = spec.item_index()
        self.categories = {c: FIRST_ID + i for i, c in enumerate(spec.categories)}
        self.edges = np.asarray(spec.price_edges, dtype=np.float64)
        self.mean = np.asarray(spec.agg_mean, dtype=np.float64)
        self.std = np.asarray(spec.agg_std, dtype=np.float64)

    def item_id(self, item: str) -> int:
        known = self.items.get(item)
        if known is not None:
            return known
        buckets = self.spec.hash_buckets
        if not buckets or not item:
            return UNK
        return FIRST_ID + zlib.crc32(item.encode("utf-8", "surrogatepass")) % buckets


_ENCODERS: dict[int, _Encoder] = {}
_ENCODERS_KEPT: Final = 8  # specs alive at once: the serving one, a shadow, a reload


def _encoder(spec: FeatureSpec) -> _Encoder:
    cached = _ENCODERS.get(id(spec))
    if cached is None or cached.spec is not spec:
        if len(_ENCODERS) >= _ENCODERS_KEPT:
            _ENCODERS.clear()
        cached = _ENCODERS[id(spec)] = _Encoder(spec)
    return cached


#: One event time for the whole batch, or one per member (the worker's members come from
#: partitions at different event times: one call instead of one per distinct time).
Now = int | Sequence[int]


def encode(snapshots: Sequence[MemberSnapshot], now: Now, spec: FeatureSpec) -> FeatureBatch:
    """Encode members as of `now` (vectorised over the batch; order kept)."""
    sequences = encode_sequences(snapshots, now, spec)
    return FeatureBatch._make((*sequences, normalise(raw_aggregates(snapshots, now), spec)))


def _per_member(now: Now, n: int) -> list[int]:
    if isinstance(now, int):
        return [now] * n
    if len(now) != n:
        raise ValueError(f"now: expected one time per member ({n}), got {len(now)}")
    return list(now)


def encode_sequences(
    snapshots: Sequence[MemberSnapshot], now: Now, spec: FeatureSpec
) -> tuple[NDArray[Any], ...]:
    """The sequence columns of `FeatureBatch` (items … mask), without the aggregates."""
    return _sequences(snapshots, now, _encoder(spec))


def normalise(raw: NDArray[np.float64], spec: FeatureSpec) -> NDArray[np.float32]:
    """(raw − mean) / std with the spec's statistics."""
    enc = _encoder(spec)
    return ((raw - enc.mean) / enc.std).astype(np.float32)


def _sequences(
    snapshots: Sequence[MemberSnapshot], now: Now, enc: _Encoder
) -> tuple[NDArray[Any], ...]:
    n, length = len(snapshots), enc.spec.sequence_length
    nows = np.asarray(_per_member(now, n), dtype=np.int64)
    shape = (n, length)
    lengths = np.array([min(len(s.events), length) for s in snapshots], dtype=np.int64)
    total = int(lengths.sum())
    # Flatten every member's last `length` events once; positions come from the lengths.
    items: list[str] = []
    types: list[str] = []
    ts: list[int] = []
    prices: list[float | None] = []
    categories: list[str | None] = []
    for snap, k in zip(snapshots, lengths.tolist(), strict=True):
        if k:
            seq = snap.events
            items += seq.items[-k:]
            types += seq.types[-k:]
            ts += seq.ts[-k:]
            prices += seq.prices[-k:]
            categories += seq.categories[-k:]
    rows = np.repeat(np.arange(n), lengths)
    starts = length - lengths
    cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[rows]

    type_index = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}
    stamps = np.asarray(ts, dtype=np.int64)
    first = np.zeros(total, dtype=bool)
    first[np.cumsum(lengths)[lengths > 0] - lengths[lengths > 0]] = True
    previous = np.concatenate(([0], stamps[:-1])) if total else stamps
    gap_ms = np.where(first, 0, stamps - previous)
    price = np.array([np.nan if p is None else p for p in prices], dtype=np.float64)
    price_bucket = np.where(
        np.isnan(price), NO_PRICE, FIRST_ID + np.searchsorted(enc.edges, price, side="right")
    )
    values = (
        [enc.item_id(item) for item in items],
        [type_index[t] for t in types],
        time_bucket(nows[rows] - stamps),
        time_bucket(gap_ms),
        price_bucket,
        [enc.categories.get(c, UNK) if c else UNK for c in categories],
    )
    columns: list[NDArray[Any]] = []
    for value in values:
        column = np.zeros(shape, dtype=np.int32)
        column[rows, cols] = value
        columns.append(column)
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return (*columns, mask)


def raw_aggregates(snapshots: Sequence[MemberSnapshot], now: Now) -> NDArray[np.float64]:
    """The un-normalised aggregate vector of each member, columns as in `AGGREGATES`."""
    out = np.empty((len(snapshots), len(AGGREGATES)), dtype=np.float64)
    per_member = len(AGGREGATES) - len(CONTENT)
    for row, (snap, at) in enumerate(zip(snapshots, _per_member(now, len(snapshots)), strict=True)):
        out[row, :per_member] = _aggregate_row(snap, at)
    out[:, per_member:] = session_content(snapshots)
    return out


def _days(ms: float | None) -> float:
    return MISSING_DAYS if ms is None else max(ms, 0) / MS_PER_DAY


def _aggregate_row(snap: MemberSnapshot, now: int) -> list[float]:
    log1p = math.log1p
    row = [log1p(c) for window in WINDOWS for c in snap.counts[window]]
    row += [log1p(_days(None if t is None else now - t)) for t in snap.last_ts]
    row += [1.0 if t is None else 0.0 for t in snap.last_ts]
    for counts, days in zip(
        reversed(snap.week_counts), reversed(snap.week_active_days), strict=True
    ):
        row += [log1p(c) for c in counts]
        row.append(log1p(days))
    row += [
        log1p(snap.total_purchases),
        log1p(snap.total_spend_cents / CENTS_PER_UNIT),
        log1p(snap.trailing_12m_spend_cents / CENTS_PER_UNIT),
        log1p(_days(now - snap.first_seen)),
        log1p(_days(now - snap.last_seen)),
    ]
    for stats in (snap.sessions, snap.orders):
        since = None if stats.last_start is None else now - stats.last_start
        row += [
            log1p(stats.n),
            log1p(_days(stats.mean_gap_ms)),
            log1p(_days(stats.last_gap_ms)),
            log1p(_days(since)),
            1.0 if stats.mean_gap_ms is None else 0.0,
        ]
    orders = snap.orders
    overdue = 0.0
    if orders.mean_gap_ms and orders.last_start is not None:
        overdue = log1p(max(now - orders.last_start, 0) / orders.mean_gap_ms)
    row += [overdue, log1p(len(snap.recent_purchases)), float(len(snap.events))]
    return row


def session_content(snapshots: Sequence[MemberSnapshot]) -> NDArray[np.float64]:
    """The `CONTENT` columns of each member, vectorised over the batch's events."""
    n = len(snapshots)
    lengths = np.array([len(s.events) for s in snapshots], dtype=np.int64)
    ts_list: list[int] = []
    type_list: list[str] = []
    price_list: list[float | None] = []
    category_list: list[str | None] = []
    for snap in snapshots:
        seq = snap.events
        ts_list += seq.ts
        type_list += seq.types
        price_list += seq.prices
        category_list += seq.categories
    out = np.zeros((n, len(CONTENT)), dtype=np.float64)
    total = len(ts_list)
    if not total:
        return out
    rows = np.repeat(np.arange(n), lengths)
    ends = np.cumsum(lengths)
    begins = ends - lengths
    position = np.arange(total) - begins[rows]  # index within the member's sequence
    ts = np.asarray(ts_list, dtype=np.int64)
    codes = {name: i for i, name in enumerate(EVENT_TYPES)}
    kind = np.fromiter(map(codes.__getitem__, type_list), dtype=np.int64, count=total)
    price = np.array(price_list, dtype=np.float64)  # None becomes NaN
    log_price = np.log1p(np.maximum(price, 0.0))

    # Sessions: a new one at each member's first event and after every long gap.
    starts = position == 0
    starts[1:] |= np.diff(ts) > SESSION_GAP_MS
    session = np.cumsum(starts) - 1  # batch-global session number
    n_sessions = np.bincount(rows, weights=starts, minlength=n)
    first_session = session[begins[lengths > 0]]
    session_first = np.zeros(n, dtype=np.int64)
    session_first[lengths > 0] = first_session
    in_member = session - session_first[rows]  # session number within the member
    recent = in_member >= (n_sessions[rows] - RECENT_SESSIONS)
    bought = kind == codes["purchase"]
    session_bought = np.bincount(session, weights=bought) > 0
    session_rows = rows[starts]

    columns: list[NDArray[np.float64]] = []
    for part in (recent, ~recent):
        sessions = np.bincount(rows, weights=starts & part, minlength=n)
        per = np.maximum(sessions, 1.0)
        part_starts = part[starts]
        without = np.bincount(session_rows, weights=part_starts & ~session_bought, minlength=n)
        columns += [
            np.bincount(rows, weights=part & (kind == codes["click"]), minlength=n) / per,
            np.bincount(rows, weights=part & (kind == codes["browse"]), minlength=n) / per,
            without / per,
            _mean_by_row(rows, log_price, part & (kind == codes["click"]), n),
            _mean_by_row(rows, log_price, part & bought, n),
        ]
    columns.append(np.log1p(np.bincount(rows, weights=starts & ~recent, minlength=n)))

    # Category novelty: an event among the latest RECENT_EVENTS whose category no earlier
    # event of the member has (its first occurrence is inside the recent block).
    category_codes = {c: i for i, c in enumerate(dict.fromkeys(category_list))}
    category = np.fromiter(
        map(category_codes.__getitem__, category_list), dtype=np.int64, count=total
    )
    _, first_index, inverse = np.unique(
        rows * len(category_codes) + category, return_index=True, return_inverse=True
    )
    recent_start = np.maximum(lengths - RECENT_EVENTS, 0)
    in_block = position >= recent_start[rows]
    novel = in_block & (position[first_index[inverse]] >= recent_start[rows])
    has_earlier = recent_start > 0
    block = np.maximum(np.bincount(rows, weights=in_block, minlength=n), 1.0)
    columns.append(
        np.where(has_earlier, np.bincount(rows, weights=novel, minlength=n) / block, 0.0)
    )

    # Since the latest purchase in the sequence (the whole sequence when there is none).
    last_purchase = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_purchase, rows[bought], position[bought])
    last_purchase_session = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_purchase_session, rows[bought], in_member[bought])
    none = last_purchase < 0
    columns += [
        np.log1p(np.where(none, lengths, lengths - 1 - last_purchase)),
        np.log1p(np.where(none, n_sessions, n_sessions - 1 - last_purchase_session)),
        none.astype(np.float64),
    ]
    span = np.zeros(n, dtype=np.float64)
    present = lengths > 0
    span[present] = (ts[ends[present] - 1] - ts[begins[present]]) / MS_PER_DAY
    columns += [np.log1p(span), np.log1p(n_sessions)]
    out[:] = np.column_stack(columns)
    return out


def _mean_by_row(
    rows: NDArray[np.int64], values: NDArray[np.float64], where: NDArray[np.bool_], n: int
) -> NDArray[np.float64]:
    """Mean of the non-NaN `values` selected by `where`, per row (0 where none)."""
    use = where & ~np.isnan(values)
    count = np.bincount(rows, weights=use, minlength=n)
    total = np.bincount(rows, weights=np.where(use, values, 0.0), minlength=n)
    return np.where(count > 0, total / np.maximum(count, 1.0), 0.0)
