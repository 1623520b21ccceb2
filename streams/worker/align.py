"""Timestamp alignment of the co-partitioned input topics (what Kafka Streams calls task
idling): a member's clicks, browses and purchases arrive on three topics, and a consumer
reads those at different paces — catching up a backlog, one topic can run days of event
time ahead of another. Applied as they come, the lagging topic's events would all be
"too late" for the member's state (measured: 1,174 of ~15k events of a backlog).

So records wait here, per partition number, until every input topic partition either has
delivered a record at least as late (nothing earlier follows from it: each topic
partition is in production order, event time within the lateness bound) or is *idle*.
What is released leaves in event-time order (the events' own `ts`, decoded before
alignment; dead letters have no event time (ts < 0): they go out as soon as the records
before them do and never move a frontier — one corrupt record stamped with wall time did,
and put ~2% of a compressed-time demo's events past the lateness bound).

Idle means: caught up with its high watermark (nothing more to read there now) *and*
silent for `idle_ms` of the consumer's free time (wall time minus the time it spent
processing: a busy consumer receives nothing, whatever the partitions hold). Each alone
fails. A wall-clock hold alone releases out of order whenever the worker is behind on a
backlog (a partition then waits long between deliveries while the consumer serves the
others: measured 23k of 41k events too late; counting deliveries instead failed the same
way, as Faust hands over a partition's buffer in runs). Watermarks alone are off by a few
records on tansu, whose high watermarks under-count (measured: 3,580 reported for 3,601
records), and are reported only per fetch. Together: a partition behind on a backlog is
never idle, and a live quiet one costs the others at most `idle_ms` of latency.

Alignment need not be exact: the state layer applies an event up to the lateness bound
behind the member's latest one in its right place (and dead-letters it beyond). So a
record goes out once it is at most `slack_ms` (default: half the lateness bound) ahead of
the frontier. That holds while S + D ≤ L (S the slack, D how far out of event-time order
records within one topic partition arrive, L the lateness bound); beyond it events are
dead-lettered as too late. On a backlog, where topics drift days apart, the slack changes
little; live, where they are seconds apart, nothing waits for a quiet purchases partition.

A partition that has delivered nothing since the aligner last held nothing (with eager
rebalances, since assignment: a revoke drops everything) for `stall_s` of the consumer's
free time (a minute by default) stops holding the others back even when it is not caught
up: seen once in a benchmark, a purchases partition that Faust never fetched while 16k
records of the others waited, for minutes. Shorter caps were measured wrong: at start-up
some partitions deliver seconds after others, and a backlog's partitions can wait long
between deliveries. A wall-clock cap per record put 27k of 100k events past the lateness
bound, a 5-second silence cap 18k, the same cap on never-delivered partitions 30k. Past
`max_held` records the earliest are released anyway, counted in `forced`. In both cases the
state layer's lateness bound decides what is too late (dead-lettered with the reason).

Held records are not acknowledged, so offsets are never committed past them.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from memberpulse.streams.worker.records import InRecord

H = TypeVar("H")

#: (topic, partition, offset of the last record delivered or -1) → nothing more to read now
CaughtUp = Callable[[str, int, int], bool]


class TimeAligner(Generic[H]):
    """Holds input records until every co-partitioned topic has caught up in time.

    `H` is whatever the caller needs back with each record (e.g. the event to ack).
    """

    def __init__(
        self,
        topics: Sequence[str],
        idle_ms: float,
        clock: Callable[[], float] = time.monotonic,
        max_held: int | None = None,
        stall_s: float | None = None,
        slack_ms: int = 0,
    ) -> None:
        self._topics = tuple(topics)
        self._slack = slack_ms
        self._max_held = max_held
        self._stall_s = math.inf if stall_s is None else stall_s
        self.forced = 0  # records released over the bound before their turn
        self._idle_s = idle_ms / 1000.0
        self._clock = clock
        self._queues: dict[tuple[str, int], deque[tuple[InRecord, int, H]]] = {}
        self._max_ts: dict[tuple[str, int], int] = {}
        self._last_offset: dict[tuple[str, int], int] = {}
        self._last_arrival: dict[tuple[str, int], float] = {}
        self._busy_at_arrival: dict[tuple[str, int], float] = {}
        self._busy_s = 0.0  # wall time the consumer spent processing, not receiving
        self._started = clock()  # reset by the first `add`
        self._busy_at_start = 0.0
        self.idle_skips: Counter[str] = Counter()  # topics found idle (observability)

    @property
    def held(self) -> int:
        """Records waiting."""
        return sum(len(queue) for queue in self._queues.values())

    def add(self, items: Iterable[tuple[InRecord, int, H]]) -> None:
        """One delivery: (record, event ts, handle), each topic partition in offset order."""
        now = self._clock()
        if not self._last_arrival:
            self._started = now  # partitions that have not delivered yet idle from here
            self._busy_at_start = self._busy_s
        for record, ts, handle in items:
            tp = (record.topic, record.partition)
            self._queues.setdefault(tp, deque()).append((record, ts, handle))
            if ts > self._max_ts.get(tp, -1):
                self._max_ts[tp] = ts
            self._last_offset[tp] = record.offset
            self._last_arrival[tp] = now
            self._busy_at_arrival[tp] = self._busy_s

    def last_offset(self, topic: str, partition: int) -> int:
        """The offset of the last record delivered from a topic partition (-1: none)."""
        return self._last_offset.get((topic, partition), -1)

    def note_busy(self, seconds: float) -> None:
        """The consumer spent `seconds` processing: no partition could deliver meanwhile,
        so that time does not count as a partition's silence.
        """
        self._busy_s += seconds

    def release(self, caught_up: CaughtUp) -> list[tuple[InRecord, int, H]]:
        """What may go now, in event-time order: records at most the slack ahead of every
        topic's frontier, plus any forced out by the `max_held` bound."""
        released: list[tuple[InRecord, int, H]] = []
        now = self._clock()
        for partition in sorted({p for _t, p in self._queues}):
            frontier = self._frontier(partition, now, caught_up)
            for topic in self._topics:
                queue = self._queues.get((topic, partition))
                if not queue:
                    continue
                # From the head only: a topic partition is in production order, so the
                # first record past the frontier ends the scan (a later one that is not
                # past it waits for the next release). Each call costs what it releases,
                # not what is held (a full rescan took 0.2–0.4 s with 16k records held).
                while queue and (queue[0][1] <= frontier or queue[0][1] < 0):
                    released.append(queue.popleft())  # ts < 0: a dead letter, no event time
        over = self.held - self._max_held if self._max_held is not None else 0
        if over > 0:
            released += self._force(over)
        released.sort(key=lambda item: item[1])  # stable: offset order on ties
        return released

    def _force(self, count: int) -> list[tuple[InRecord, int, H]]:
        """The `count` earliest held records, whatever the frontier (queues stay in order)."""
        forced: list[tuple[InRecord, int, H]] = []
        while len(forced) < count:
            tp = min(
                (tp for tp, queue in self._queues.items() if queue),
                key=lambda tp: self._queues[tp][0][1],
            )
            forced.append(self._queues[tp].popleft())
        self.forced += len(forced)
        return forced

    def drop(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Forget revoked topic partitions (their records were never acknowledged)."""
        dropped = 0
        for tp in partitions:
            dropped += len(self._queues.pop(tp, ()))
            self._max_ts.pop(tp, None)
            self._last_offset.pop(tp, None)
            self._last_arrival.pop(tp, None)
            self._busy_at_arrival.pop(tp, None)
        return dropped

    def _frontier(self, partition: int, now: float, caught_up: CaughtUp) -> float:
        """The latest ts below which no topic of this partition can deliver more."""
        frontier = math.inf
        for topic in self._topics:
            tp = (topic, partition)
            busy_since = self._busy_s - self._busy_at_arrival.get(tp, self._busy_at_start)
            quiet_s = now - self._last_arrival.get(tp, self._started) - busy_since
            last_offset = self._last_offset.get(tp, -1)
            never = last_offset < 0 and quiet_s >= self._stall_s  # never delivered: stalled
            if never or (quiet_s >= self._idle_s and caught_up(topic, partition, last_offset)):
                self.idle_skips[topic] += 1
                continue  # idle (or stalled): it no longer holds the others back
            frontier = min(frontier, self._max_ts.get(tp, -math.inf))
        return frontier + self._slack
