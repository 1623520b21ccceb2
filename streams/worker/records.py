"""The records that cross the worker's stages: what came off the broker (`InRecord`) and
what decoding made of it (`Decoded`). Their own module, so that delivery, alignment and
the batch path share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from memberpulse.models.contract import Event
from memberpulse.streams.worker.decode import DeadLetter

NO_TS: Final = -1  # what a dead letter aligns by: first, without moving any frontier


@dataclass(frozen=True, slots=True)
class InRecord:
    """One input record as it came off the broker (transport-neutral)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int  # the record's timestamp (producer CreateTime on our topics)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record and what validating it gave: an event or a dead letter."""

    record: InRecord
    result: Event | DeadLetter

    @property
    def ts(self) -> int:
        """The event's ts; NO_TS for a dead letter (it has none to order by, and a record
        timestamp — wall time — would drag its partition's event-time frontier forward).
        """
        result = self.result
        return result.ts if isinstance(result, Event) else NO_TS


class Refused(NamedTuple):
    """An output record the broker or the client refused for good: where it was going,
    its key and headers, its size, and why."""

    topic: str
    key: bytes | None
    size: int
    headers: list[tuple[str, bytes]]
    error: str
