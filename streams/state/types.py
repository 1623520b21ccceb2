"""What the state layer takes and returns: typed values between the app and `StateStore`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple, Protocol

import msgpack

from memberpulse.models.contract import Event
from memberpulse.models.errors import StateCorrupt
from memberpulse.models.snapshot import DecisionState, MemberSnapshot, Reservation


class SourcedEvent(NamedTuple):
    """An event with the Kafka position it was read from (the key of idempotency)."""

    event: Event
    topic: str
    partition: int
    offset: int


class DecisionRecord(NamedTuple):
    """What round trip 2 writes for one member."""

    member_id: str
    partition: int
    state: DecisionState
    outbox: Mapping[str, bytes]


@dataclass
class ApplyResult:
    """What round trip 1 returns for a batch."""

    snapshots: dict[str, MemberSnapshot] = field(default_factory=dict)
    decision_states: dict[str, DecisionState] = field(default_factory=dict)
    pending_outbox: dict[str, dict[str, bytes]] = field(default_factory=dict)
    idle_due: dict[str, MemberSnapshot] = field(default_factory=dict)
    applied: int = 0
    duplicates: int = 0  # events whose id was in the member's state, at a new offset
    too_late: list[SourcedEvent] = field(default_factory=list)
    # at or below the highest offset applied from their topic partition: applied already
    redelivered: list[SourcedEvent] = field(default_factory=list)
    now: dict[str, int] = field(default_factory=dict)  # the event time of each snapshot
    partitions: dict[str, int] = field(default_factory=dict)  # each snapshot's partition
    budget_spent: dict[tuple[str, int], int] = field(default_factory=dict)  # (budget, day)
    changed: set[str] = field(default_factory=set)  # members with an event applied just now


@dataclass
class RecordResult:
    """What round trip 2 returns: the outcome and ledger total of each reservation."""

    granted: dict[str, bool] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)


class StateStore(Protocol):
    """Member state behind an interface, so the app can be tested against any store.

    `apply` takes each topic partition's events in offset order (whatever the order
    across partitions): a record at or below the highest offset applied from its topic
    partition is a redelivery, so one that overtook an earlier record would make that
    record look redelivered (the worker's time aligner keeps that order).
    """

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
        """Round trip 1."""

    def record(
        self,
        decisions: Sequence[DecisionRecord],
        reservations: Sequence[Reservation] = (),
        clocks: Mapping[int, int] | None = None,
    ) -> RecordResult:
        """Round trip 2. `clocks`: partition → event time, kept as the largest seen."""

    def clocks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The event times `record` kept for `partitions` (those without one left out)."""


def encode_decision(state: DecisionState) -> bytes:
    """DecisionState as stored: a msgpack array in field order (about half JSON's size)."""
    packed: bytes = msgpack.packb([getattr(state, name) for name in _DECISION_FIELDS])
    return packed


def decode_decision(blob: bytes | None) -> DecisionState:
    """Stored bytes back to a DecisionState (defaults when nothing was stored)."""
    if blob is None:
        return DecisionState()
    try:
        values = msgpack.unpackb(blob, strict_map_key=False)
    except (ValueError, TypeError) as exc:  # msgpack's errors derive from ValueError
        raise StateCorrupt(f"decision state does not decode ({type(exc).__name__}: {exc})") from exc
    # Fields are only ever appended: a blob written before a field existed lacks its tail,
    # which keeps the field's default.
    return DecisionState(**dict(zip(_DECISION_FIELDS, values, strict=False)))


_DECISION_FIELDS = tuple(field.name for field in fields(DecisionState))
