"""Timestamp alignment of the co-partitioned input topics (what Kafka Streams calls task
idling): a member's clicks, browses and purchases arrive on three topics, and a consumer
reads those at different paces — catching up a backlog, one topic can run days of event
time ahead of another. Applied as they come, the lagging topic's events would all be
"too late" for the member's state.

So records wait here, per partition number, until every input topic has either delivered
a record with a timestamp at least as late (nothing earlier can follow from it: each topic
partition is in production order) or is caught up with its high watermark (nothing more
is there to wait for). What is released leaves in timestamp order. A record held longer
than `max_hold_ms` (wall time) is released anyway, so a stalled topic delays the others
by a bounded amount instead of stopping them; its late events then take the normal
`too_late` path. Timestamps are the events' own `ts` (decoded before alignment; records
that fail decoding carry their record timestamp and go straight through): a replay or a
compressed-time simulation puts hours of event time into one millisecond of record
timestamps, so aligning on record timestamps would not be enough.

Held records are not acknowledged, so offsets are never committed past them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from memberpulse.streams.processor import InRecord

H = TypeVar("H")

#: (topic, partition, offset of the last record seen or -1) → nothing more to read now
CaughtUp = Callable[[str, int, int], bool]


class TimeAligner(Generic[H]):
    """Holds input records until every co-partitioned topic has caught up in time.

    `H` is whatever the caller needs back with each record (e.g. the event to ack).
    """

    def __init__(
        self,
        topics: Sequence[str],
        max_hold_ms: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics = tuple(topics)
        self._max_hold_s = max_hold_ms / 1000.0
        self._clock = clock
        self._queues: dict[tuple[str, int], deque[tuple[InRecord, int, H, float]]] = {}
        self._max_ts: dict[tuple[str, int], int] = {}
        self._last_offset: dict[tuple[str, int], int] = {}

    @property
    def held(self) -> int:
        """Records waiting."""
        return sum(len(queue) for queue in self._queues.values())

    def add(self, items: Iterable[tuple[InRecord, int, H]]) -> None:
        """(record, event ts, handle) as read (each topic partition in offset order)."""
        now = self._clock()
        for record, ts, handle in items:
            tp = (record.topic, record.partition)
            self._queues.setdefault(tp, deque()).append((record, ts, handle, now))
            if ts > self._max_ts.get(tp, -1):
                self._max_ts[tp] = ts
            self._last_offset[tp] = record.offset

    def release(self, caught_up: CaughtUp) -> list[tuple[InRecord, int, H]]:
        """Every record no topic can still undercut, plus the overdue ones, by timestamp."""
        released: list[tuple[InRecord, int, H]] = []
        deadline = self._clock() - self._max_hold_s
        for partition in sorted({p for _t, p in self._queues}):
            frontier = self._frontier(partition, caught_up)
            for topic in self._topics:
                queue = self._queues.get((topic, partition))
                if not queue:
                    continue
                kept: deque[tuple[InRecord, int, H, float]] = deque()
                for record, ts, handle, arrived in queue:
                    if ts <= frontier or arrived <= deadline:
                        released.append((record, ts, handle))
                    else:
                        kept.append((record, ts, handle, arrived))
                self._queues[(topic, partition)] = kept
        released.sort(key=lambda item: item[1])  # stable: offset order on ties
        return released

    def drop(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Forget revoked topic partitions (their records were never acknowledged)."""
        dropped = 0
        for tp in partitions:
            dropped += len(self._queues.pop(tp, ()))
            self._max_ts.pop(tp, None)
            self._last_offset.pop(tp, None)
        return dropped

    def _frontier(self, partition: int, caught_up: CaughtUp) -> float:
        """The latest timestamp below which no topic of this partition can deliver more."""
        frontier = math.inf
        for topic in self._topics:
            tp = (topic, partition)
            if caught_up(topic, partition, self._last_offset.get(tp, -1)):
                continue  # nothing more to read there now
            frontier = min(frontier, self._max_ts.get(tp, -math.inf))
        return frontier
