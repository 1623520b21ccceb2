"""Member state in process memory: a `StateStore` for tests, built on the reference fold.

`MemoryState` keeps per member the events it admitted (in arrival order, as
`models.fold.admit` reads them), the highest offset applied per (topic, partition), the
decision state and the outbox; per (budget, day) a ledger; per partition the idle
schedule. A snapshot is `models.fold.fold` of the admitted events: the definition the
Redis layer is property-tested against, so a test on this store tests its caller, not a
second copy of the state rules. Every other rule mirrors `RedisState` and its scripts:
an event at or below its source's applied offset is a duplicate, then `admit` decides
between duplicate (an event id seen before), too late and applied; outbox entries stay
pending until confirmed in `delivered`; reservations are granted while the ledger stays
within `limit`, idempotent per id; idle-due members come by (next check, key tag), at
most `idle_fetch_limit` per partition. Nothing here reads a clock or does I/O.

Where it differs from `RedisState`, on purpose:
- nothing expires: Redis's TTL counts wall-clock time since a member's last write, which
  event time cannot stand for, and a test ends well inside `state.ttl_days`;
- it keeps every admitted event (Redis keeps L of them, then day and month buckets) and
  folds them all for each snapshot: sized for tests and small simulations;
- an event id counts as seen for as long as the member exists (`admit`); Redis compares
  (id hash, ts, item) with the events still among the member's last L only;
- no round trips (`BatchReport.round_trips` reads 0), no size limit on a decision state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from memberpulse.models.contract import Event
from memberpulse.models.fold import admit, fold
from memberpulse.models.snapshot import DecisionState, Reservation, StateSpec
from memberpulse.streams.state.keys import member_tag
from memberpulse.streams.state.types import (
    ApplyResult,
    DecisionRecord,
    RecordResult,
    SourcedEvent,
    StateStore,
    decode_decision,
    encode_decision,
)

if TYPE_CHECKING:
    from memberpulse.streams.settings import Settings

__all__ = ["MemoryState"]


@dataclass
class _Member:
    """What the store holds for one member."""

    admitted: list[Event] = field(default_factory=list)  # in arrival order
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # highest applied
    decision: bytes | None = None  # encoded as Redis stores it: the same round trip
    outbox: dict[str, bytes] = field(default_factory=dict)  # output id → payload


@dataclass
class _Ledger:
    """One budget's day: the total reserved, and each reservation's amount (0: none)."""

    spent: int = 0
    taken: dict[str, int] = field(default_factory=dict)


class MemoryState:
    """The in-memory implementation of `StateStore` (one process, no persistence)."""

    def __init__(self, spec: StateSpec, idle_fetch_limit: int) -> None:
        if idle_fetch_limit < 1:
            raise ValueError(f"idle_fetch_limit must be >= 1, got {idle_fetch_limit}")
        self._spec = spec
        self._idle_limit = idle_fetch_limit
        self._members: dict[str, _Member] = {}
        self._idle: dict[int, dict[str, int]] = {}  # partition → member → next check
        self._ledgers: dict[tuple[str, int], _Ledger] = {}
        self._clocks: dict[int, int] = {}  # partition → largest event ts recorded

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryState:
        """A store keeping what the settings ask the Redis store to keep."""
        return cls(settings.state.spec(), settings.state.idle_fetch_limit)

    # --- round trip 1 -------------------------------------------------------------------

    def apply(
        self,
        events: Sequence[SourcedEvent],
        now: int,
        delivered: Mapping[str, Sequence[str]] | None = None,
        idle_partitions: Sequence[int] = (),
        releases: Sequence[Reservation] = (),
        partition_now: Mapping[int, int] | None = None,
        budgets: Sequence[tuple[str, int]] = (),
    ) -> ApplyResult:
        """Apply a micro-batch; the same arguments and result as `RedisState.apply`."""
        delivered = delivered or {}
        partition_now = partition_now or {}
        by_member: dict[str, list[SourcedEvent]] = {}
        for item in events:
            by_member.setdefault(item.event.member_id, []).append(item)
        result = ApplyResult()
        for member_id, items in by_member.items():
            member_now = partition_now.get(items[0].partition, now)
            self._apply_member(result, member_id, items, member_now)
        for member_id in [*by_member, *(m for m in delivered if m not in by_member)]:
            self._collect_outbox(result, member_id, delivered.get(member_id, ()))
        for reservation in releases:
            self._release(reservation)
        for ledger in budgets:
            result.budget_spent[ledger] = self._ledgers.get(ledger, _Ledger()).spent
        for partition in idle_partitions:
            self._collect_idle(result, partition, partition_now.get(partition, now))
        return result

    def _apply_member(
        self, result: ApplyResult, member_id: str, items: Sequence[SourcedEvent], now: int
    ) -> None:
        """One member's events: offsets first, then `admit`, then the fold as of `now`."""
        member = self._members.setdefault(member_id, _Member())
        fresh: list[SourcedEvent] = []
        for item in items:
            source = (item.topic, item.partition)
            if source in member.offsets and item.offset <= member.offsets[source]:
                result.redelivered.append(item)  # applied (or refused) already
                continue
            member.offsets[source] = item.offset
            fresh.append(item)
        before = len(member.admitted)
        # What was admitted before is admitted again, unchanged: `admit` reads the events
        # in order, so its answer for a prefix never depends on what follows.
        admitted, late = admit(
            [*member.admitted, *(item.event for item in fresh)], self._spec.lateness_ms
        )
        member.admitted = admitted
        too_late = _sourced(fresh, late)
        result.applied += len(admitted) - before
        result.duplicates += len(fresh) - (len(admitted) - before) - len(too_late)
        result.too_late += too_late
        if len(admitted) > before:
            result.changed.add(member_id)
        result.snapshots[member_id] = fold(admitted, now, self._spec)
        result.now[member_id] = now
        result.partitions[member_id] = items[0].partition
        result.decision_states[member_id] = decode_decision(member.decision)

    def _collect_outbox(
        self, result: ApplyResult, member_id: str, delivered: Sequence[str]
    ) -> None:
        member = self._members.get(member_id)
        if member is None:
            return
        for ident in delivered:
            member.outbox.pop(ident, None)
        if member.outbox:
            result.pending_outbox[member_id] = dict(member.outbox)

    def _collect_idle(self, result: ApplyResult, partition: int, now: int) -> None:
        """Members of `partition` whose idle check is due by `now`, in Redis's order (score,
        then key tag); those without events still take a place within the limit."""
        schedule = self._idle.get(partition, {})
        due = sorted((at, member_tag(m), m) for m, at in schedule.items() if at <= now)
        for _at, _tag, member_id in due[: self._idle_limit]:
            member = self._members[member_id]
            if not member.admitted or member_id in result.snapshots:
                continue  # no state yet, or touched in this batch and scored with it
            result.idle_due[member_id] = fold(member.admitted, now, self._spec)
            result.now[member_id] = now
            result.partitions[member_id] = partition
            result.decision_states[member_id] = decode_decision(member.decision)

    def _release(self, reservation: Reservation) -> None:
        """Give back what a reservation took, once."""
        ledger = self._ledgers.get((reservation.budget, reservation.day))
        if ledger is None:
            return
        taken = ledger.taken.get(reservation.id, 0)
        if taken > 0:
            ledger.spent -= taken
            ledger.taken[reservation.id] = 0

    # --- round trip 2 -------------------------------------------------------------------

    def record(
        self,
        decisions: Sequence[DecisionRecord],
        reservations: Sequence[Reservation] = (),
        clocks: Mapping[int, int] | None = None,
    ) -> RecordResult:
        """Write reservations, decision states, outbox entries, idle schedule and the
        partitions' event times (the largest seen)."""
        for partition, ts in (clocks or {}).items():
            self._clocks[partition] = max(ts, self._clocks.get(partition, ts))
        result = RecordResult()
        for reservation in reservations:
            granted, spent = self._reserve(reservation)
            result.granted[reservation.id] = granted
            result.spent[reservation.id] = spent
        for decision in decisions:
            member = self._members.setdefault(decision.member_id, _Member())
            member.decision = encode_decision(decision.state)
            member.outbox.update(decision.outbox)
            schedule = self._idle.setdefault(decision.partition, {})
            if decision.state.next_idle_check is None:
                schedule.pop(decision.member_id, None)
            else:
                schedule[decision.member_id] = decision.state.next_idle_check
        return result

    def _reserve(self, reservation: Reservation) -> tuple[bool, int]:
        """(granted, spent after); asked again, a reservation gets its first answer."""
        ledger = self._ledgers.setdefault((reservation.budget, reservation.day), _Ledger())
        if reservation.amount == 0:  # nothing to take: granted every time (as budget.lua)
            return True, ledger.spent
        if reservation.id in ledger.taken:
            return ledger.taken[reservation.id] > 0, ledger.spent
        if ledger.spent + reservation.amount > reservation.limit:
            ledger.taken[reservation.id] = 0
            return False, ledger.spent
        ledger.spent += reservation.amount
        ledger.taken[reservation.id] = reservation.amount
        return True, ledger.spent

    def clocks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The event times `record` kept for `partitions` (those without one left out)."""
        return {p: self._clocks[p] for p in partitions if p in self._clocks}

    # --- reads outside the batch path ---------------------------------------------------

    def decisions(self, members: Iterable[str]) -> dict[str, DecisionState]:
        """Stored decision states (members without one are left out), as `RedisState`'s."""
        stored = ((m, self._members.get(m)) for m in members)
        return {
            m: decode_decision(member.decision)
            for m, member in stored
            if member is not None and member.decision is not None
        }


def _sourced(fresh: Sequence[SourcedEvent], late: Sequence[Event]) -> list[SourcedEvent]:
    """The items of `fresh` whose events `admit` found too late (an ordered subsequence)."""
    out: list[SourcedEvent] = []
    for item in fresh:
        if len(out) < len(late) and item.event is late[len(out)]:
            out.append(item)
    return out


def _conforms(store: MemoryState) -> StateStore:
    return store  # mypy proves MemoryState satisfies the StateStore protocol
