"""`MemberSnapshot`: everything derived from a member's events, as the encoder reads it.

The Redis state layer returns exactly this type, and a property test proves that the
snapshot read from Redis equals `fold` (models/fold.py) of the same events at the same
`now`: training, which folds event logs, and serving, which reads Redis, cannot drift.

Conventions shared by the fold and the Redis scripts:
- windows are whole UTC days: "over 7 days" is the day of `now` and the 6 days before;
  "previous 30 days" is days 30–59 before `now`'s day; week w (0 = latest) is days
  7w … 7w + 6 before `now`'s day;
- months are UTC calendar months; `month_*` hold the 13 months ending with `now`'s month;
- money is integer cents (`round(unit price × 100)`, times quantity for spend), so sums
  are exact in any order and on any machine;
- a *session* is a maximal run of events whose consecutive gaps are ≤ `session_gap_ms`;
  an *order* is the same over purchase events; gaps are measured between start times;
- the recent sequence holds the last L events by (ts, event-id hash), oldest first;
- ids are raw strings (never a model's vocabulary indices): a new model needs no migration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, NamedTuple

from memberpulse.models.contract import EVENT_TYPES, PURCHASE, Event
from memberpulse.models.timeutil import MS_PER_DAY

#: Day windows of the rolling counts, in days back from `now`'s day (inclusive range).
WINDOWS: Final[dict[str, tuple[int, int]]] = {
    "1d": (0, 0),
    "7d": (0, 6),
    "30d": (0, 29),
    "prev30d": (30, 59),
}
#: Whole weeks of per-type counts (week 0 = `now`'s day and the 6 days before), for trends.
WEEKS: Final = 8
DAYS_PER_WEEK: Final = 7
#: Oldest day offset any window reads: day buckets older than this are dropped.
DAYS_KEPT: Final = max(max(end for _, end in WINDOWS.values()), WEEKS * DAYS_PER_WEEK - 1) + 1
MONTHS_KEPT: Final = 13
#: Events of one type one member can count on one day; beyond, the count saturates (the
#: state stores day counts in 16 bits: a member beyond this is a bot, not a customer).
MAX_DAY_COUNT: Final = 65_535
TYPE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(EVENT_TYPES)}
PURCHASE_INDEX: Final = TYPE_INDEX[PURCHASE]
_ID_HASH_BYTES: Final = 4  # a tie-break and dedup key; dedup also needs equal ts and item


@dataclass(frozen=True)
class StateSpec:
    """What the state keeps per member (from Settings; the same for fold and Redis)."""

    sequence_length: int = 64
    lateness_ms: int = 3_600_000
    session_gap_ms: int = 1_800_000
    exclusion_days: int = 30
    max_recent_purchases: int = 32


class EventSequence(NamedTuple):
    """The recent events, oldest first, column by column (raw ids), as the encoder reads
    them: columns turn into arrays without a per-event object on the serving path.
    """

    items: tuple[str, ...]
    types: tuple[str, ...]
    ts: tuple[int, ...]
    prices: tuple[float | None, ...]
    quantities: tuple[int, ...]
    categories: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.ts)


class GapStats(NamedTuple):
    """Sessions or orders: how many, and the gaps between their starts (ms)."""

    n: int
    first_start: int | None
    last_start: int | None
    mean_gap_ms: float | None
    last_gap_ms: int | None


@dataclass(frozen=True)
class MemberSnapshot:
    """Everything derived from one member's events, as of event time `now`."""

    member_id: str
    now: int
    events: EventSequence
    counts: dict[str, tuple[int, ...]]  # window name → count per EVENT_TYPES
    week_counts: tuple[tuple[int, ...], ...]  # WEEKS weeks, oldest first: count per type
    week_active_days: tuple[int, ...]  # WEEKS weeks, oldest first: days with an event
    last_ts: tuple[int | None, ...]  # per EVENT_TYPES: time of the latest such event
    month_purchases: tuple[int, ...]  # 13 months, oldest first, last = month of `now`
    month_spend_cents: tuple[int, ...]
    total_purchases: int
    total_spend_cents: int
    first_seen: int
    last_seen: int
    sessions: GapStats
    orders: GapStats
    recent_purchases: tuple[str, ...]  # items bought within `exclusion_days`, newest first

    def recency_ms(self, event_type: str) -> int | None:
        """Time since the member's latest event of `event_type`, None if there is none."""
        last = self.last_ts[TYPE_INDEX[event_type]]
        return None if last is None else self.now - last

    @property
    def tenure_ms(self) -> int:
        """Time since the member's first event."""
        return self.now - self.first_seen

    @property
    def trailing_12m_spend_cents(self) -> int:
        """Spend over the 12 calendar months ending with `now`'s month."""
        return sum(self.month_spend_cents[-12:])


@dataclass(frozen=True)
class DecisionState:
    """What decisions remember per member (written by round trip 2, read by round trip 1).

    Opaque to the state layer; the streaming app gives the fields their meaning.
    """

    last_risk: float | None = None
    armed: bool = True
    episodes: dict[str, int] = field(default_factory=dict)
    cooldown_until: dict[str, int] = field(default_factory=dict)
    recommendation_fingerprint: str | None = None
    next_idle_check: int | None = None
    projected_tier: str | None = None
    decided_at: int | None = None  # event time of the latest decision (replays stay quiet)


def day_of(ts_ms: int) -> int:
    """UTC day number of a timestamp."""
    return ts_ms // MS_PER_DAY


def week_back(day: int, today: int) -> int:
    """Whole weeks between a day and `today` (0: today and the 6 days before)."""
    return (today - day) // DAYS_PER_WEEK


def month_of(ts_ms: int) -> int:
    """UTC calendar month number of a timestamp (year × 12 + month − 1)."""
    return month_of_day(ts_ms // MS_PER_DAY)


@lru_cache(maxsize=4096)
def month_of_day(day: int) -> int:
    """UTC calendar month number of a day number (cached: the hot path asks per event)."""
    moment = datetime.fromtimestamp(day * 86_400, tz=UTC)
    return moment.year * 12 + moment.month - 1


def cents(price: float) -> int:
    """A (non-negative) unit price in integer cents, rounded half up."""
    return int(price * 100 + 0.5)


def to_cents(price: float | None) -> int | None:
    """A unit price in integer cents, None kept."""
    return None if price is None else cents(price)


def from_cents(cents: int | None) -> float | None:
    """Integer cents back to a unit price."""
    return None if cents is None else cents / 100


def id_hash(event_id: str) -> int:
    """A stable 32-bit hash of an event id: the tie-break of equal timestamps in state."""
    digest = hashlib.sha1(event_id.encode("utf-8", "surrogatepass"), usedforsecurity=False)
    return int.from_bytes(digest.digest()[:_ID_HASH_BYTES], "big")


def spend_cents(event: Event) -> int:
    """Cents spent by an event: unit price in cents × quantity for purchases, else 0."""
    if event.type != PURCHASE or event.price is None:
        return 0
    return (to_cents(event.price) or 0) * event.quantity


class Reservation(NamedTuple):
    """A budget reservation: idempotent per id, one ledger per budget and event-time day."""

    id: str
    budget: str
    day: int
    amount: int
    limit: int
