"""Timestamp alignment of the co-partitioned input topics (what Kafka Streams calls task
idling). A member's clicks, browses and purchases arrive on three topics that a consumer
reads at different paces: catching up a backlog, one topic can run days of event time
ahead of another, and applied as they come the lagging topic's events would be "too
late" for the member's state.

So records wait here, per partition number, until every input topic partition has either
delivered a record at least as late (each topic partition is in production order) or is
*idle*: caught up with its high watermark *and* silent for `idle_ms` of the consumer's
free time (wall time minus time spent processing). Each condition alone fails on a
backlog or on tansu's under-counting watermarks; together, a partition behind on a
backlog is never idle and a live quiet one costs the others at most `idle_ms`. Released
records leave merged by event time across topic partitions, each topic partition's own
records in offset order (Kafka Streams picks its next record the same way, by the head
timestamps of its partition queues): the state layer takes a record at or below the
highest offset it applied from a topic partition for a redelivery, so a late event — a
higher offset with an earlier ts — sorted ahead of the records before it would make them
look redelivered and lose them. Dead letters (no event time, ts < 0) go out with the
records before them and never move a frontier.

Alignment need not be exact: the state layer puts an event up to the lateness bound L
behind the member's latest one in its place. So a record goes once it is at most
`slack_ms` (default L/2) ahead of the frontier, which holds while S + D ≤ L (S the slack,
D how far out of event-time order one topic partition delivers); beyond it events are
dead-lettered as too late. Live, nothing waits for a quiet purchases partition.

Two bounds keep one partition from holding the rest: one that has delivered nothing
since the aligner last held nothing (since assignment, with eager rebalances) stops
holding the others after `stall_s` of free time, and past `max_held` records the
earliest go anyway (counted in `forced`). Held records are not acknowledged, so offsets
are never committed past them.

(measurements: BENCHMARKS.md, "Time alignment: what was measured")
"""

from __future__ import annotations

import heapq
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
        """What may go now: records at most the slack ahead of every topic's frontier, plus
        any forced out by the `max_held` bound; merged by event time, each topic partition
        in offset order."""
        runs: dict[tuple[str, int], list[tuple[InRecord, int, H]]] = {}
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
                run = runs.setdefault((topic, partition), [])
                while queue and (queue[0][1] <= frontier or queue[0][1] < 0):
                    run.append(queue.popleft())  # ts < 0: a dead letter, no event time
        over = self.held - self._max_held if self._max_held is not None else 0
        if over > 0:
            self._force(over, runs)
        # Each run is one topic partition's prefix in offset order; the merge only ever
        # takes a run's head, so that order survives whatever the timestamps inside it.
        return list(heapq.merge(*runs.values(), key=lambda item: item[1]))

    def _force(
        self, count: int, runs: dict[tuple[str, int], list[tuple[InRecord, int, H]]]
    ) -> None:
        """Move the `count` earliest held heads into `runs`, whatever the frontier."""
        for _ in range(count):
            tp = min(
                (tp for tp, queue in self._queues.items() if queue),
                key=lambda tp: self._queues[tp][0][1],
            )
            runs.setdefault(tp, []).append(self._queues[tp].popleft())
        self.forced += count

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
