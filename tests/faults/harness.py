"""What every fault test shares: its own Redis, a steady load, and the conservation check.

A fault test runs a real `memberpulse worker` subprocess against the session's broker
(fresh topics) and a Redis of its own (so pausing, killing or filling it touches no other
test), streams simulated members at a steady rate while the fault is injected, lets the
worker recover, and then checks what `RELIABILITY.md` promises:

- every input event is in its member's state, which equals the fold of the member's
  events, or in the DLQ with its reason (only the injected bad records are there);
- the group committed every input record;
- no output id carries two different payloads, and every decision the state counted has
  its record (episodes 1..n, no gaps): nothing lost, nothing renamed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from memberpulse.models.contract import Event, encode_event
from memberpulse.models.fold import fold
from memberpulse.models.snapshot import DecisionState
from memberpulse.streams.decisions import COUPON
from memberpulse.streams.local import launcher, stack
from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.state.store import RedisState
from memberpulse.streams.worker.kafka import (
    client_config,
    make_producer,
    partition_counts,
    read_from_start,
)
from tests.helpers import wait_until

#: How long recovery may take before a test fails (generous: two shared cores in CI).
RECOVERY_DEADLINE_S = 120.0
EXIT_DEADLINE_S = 60.0
BAD_RECORD = b'{"event_id": "bad-%d"'  # truncated JSON: malformed_json in the DLQ


class _Signalled:
    """Pausing and resuming a server process of the test's own (`pid`)."""

    pid: int

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@dataclass
class OwnRedis(_Signalled):
    """A redis-server of the test's own, started by the project's launcher."""

    home: Settings
    port: int
    pid: int

    @classmethod
    def start(cls, home: Settings) -> OwnRedis:
        info = launcher.up(home, components=["redis"])
        record = info.records[stack.REDIS]
        return cls(home, record.port, record.pid)

    def url(self) -> str:
        return f"redis://{stack.LOOPBACK}:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last flush of the append-only file."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(  # no start time: gone, or a zombie
            lambda: stack.process_start_ticks(self.pid) is None,
            timeout=10,
            interval=0.05,
            what="redis gone",
        )

    def stop(self) -> None:
        """SIGTERM, as `stack down` does (the append-only file is flushed)."""
        self.resume()  # a stopped process would not see SIGTERM until resumed
        launcher.down(self.home)

    def start_again(self) -> None:
        """Start it again on the same port and directory (what it kept is reloaded)."""
        again = self.home.model_copy(update={"stack_redis_port": self.port})
        info = launcher.up(again, components=["redis"])
        self.pid = info.records[stack.REDIS].pid


@dataclass
class OwnBroker(_Signalled):
    """A tansu broker of the test's own (memory storage), started by the launcher."""

    home: Settings
    bootstrap: str
    pid: int

    @classmethod
    def start(cls, home: Settings) -> OwnBroker:
        info = launcher.up(home, components=["kafka"])
        record = info.records[stack.KAFKA]
        return cls(home, stack.kafka_bootstrap(record), record.pid)

    def stop(self) -> None:
        self.resume()
        launcher.down(self.home)


def member_events(members: int, seed: int, days: int = 30) -> list[Event]:
    """Simulated members' events in time order, with some late ones: for one in every
    `_LATE_EVERY` pairs of a member's consecutive same-topic events less than the lateness
    bound apart, the later event is produced first, so the earlier ts arrives at the
    higher offset (what the time aligner must keep in offset order)."""
    events = sorted(
        Simulator(SimConfig(members=members, days=days, seed=seed)).iter_events(),
        key=lambda e: e.ts,
    )
    last: dict[tuple[str, str], int] = {}
    swaps = 0
    for index, event in enumerate(events):
        key = (event.member_id, event.type)
        before = last.get(key)
        last[key] = index
        if before is None or event.ts - events[before].ts > _LATE_SPAN_MS:
            continue
        swaps += 1
        if swaps % _LATE_EVERY == 0:
            events[before], events[index] = events[index], events[before]
            last[key] = before
    return events


_LATE_EVERY = 5
_LATE_SPAN_MS = 30 * 60_000  # under the default lateness bound (1 h)


@dataclass
class SteadyLoad:
    """Events produced to the input topics at a fixed rate by a thread, keyed by member,
    `bad` malformed clicks spread among them."""

    settings: Settings
    events: list[Event]
    rate: float
    bad: int = 0
    sent: int = 0
    _thread: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    def start(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            producer = make_producer(self.settings.kafka)
            kafka = self.settings.kafka
            every = max(1, len(self.events) // (self.bad + 1)) if self.bad else 0
            started = time.monotonic()
            bad = 0
            for index, event in enumerate(self.events):
                due = started + index / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the load, not synchronising the test
                producer.produce(
                    kafka.topic_for_type(event.type), encode_event(event), event.member_id.encode()
                )
                self.sent += 1
                if every and bad < self.bad and index % every == every - 1:
                    producer.produce(kafka.topic_clicks, BAD_RECORD % bad, b"M-bad")
                    bad += 1
                    self.sent += 1
                producer.poll(0)
            if producer.flush(60):
                raise AssertionError("the broker did not confirm the load")
        except BaseException as exc:  # surfaced by `join`
            self._error.append(exc)

    @property
    def progress(self) -> float:
        """The share of the load sent so far."""
        return self.sent / (len(self.events) + self.bad)

    def join(self, timeout: float = RECOVERY_DEADLINE_S) -> int:
        """Wait for the whole load to be confirmed; the number of records sent."""
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not finish"
        if self._error:
            raise self._error[0]
        return self.sent


def fault_settings(
    settings: Settings, registry: Path, redis: OwnRedis | str, **extra: object
) -> Settings:
    """The worker's settings: the test's registry, group, Redis (a handle or a URL) and
    quick retries."""
    fields: dict[str, object] = {
        "model_registry": registry,
        "worker_group_id": f"g-{settings.redis.key_prefix}",
        "worker_log_level": "info",
        "worker_web_port": 0,
        "redis_url": SecretStr(redis if isinstance(redis, str) else redis.url()),
        "worker_retry_backoff_max_s": 2.0,
    }
    return settings.model_copy(update=fields | extra)


@contextmanager
def running_worker(settings: Settings, log: Path) -> Iterator[WorkerProcess]:
    """A worker child process, ready; killed at the end whatever happened."""
    worker = WorkerProcess(settings, log)
    try:
        wait_until(worker.ready, timeout=RECOVERY_DEADLINE_S, interval=0.2, what="worker ready")
        yield worker
    finally:
        worker.kill()


def timed(condition: Callable[[], bool], what: str) -> float:
    """Seconds until `condition` holds (fails past the recovery deadline)."""
    started = time.monotonic()
    wait_until(condition, timeout=RECOVERY_DEADLINE_S, interval=0.1, what=what)
    return time.monotonic() - started


def committed_all(settings: Settings, sent: int) -> bool:
    """Every input record is read back (tansu's watermarks can under-count) and below the
    worker group's committed offsets."""
    ends: Counter[tuple[str, int]] = Counter()
    seen = 0
    for message in read_from_start(settings.kafka, settings.kafka.input_topics, idle_timeout_s=0.5):
        ends[(message.topic(), message.partition())] = message.offset() + 1
        seen += 1
    if seen < sent:
        return False
    counts = partition_counts(settings.kafka, settings.kafka.input_topics)
    consumer = Consumer(
        client_config(settings.kafka)
        | {"group.id": settings.worker.group_id, "enable.auto.commit": False}
    )
    try:
        wanted = [
            TopicPartition(t, p) for t in settings.kafka.input_topics for p in range(counts[t])
        ]
        committed = consumer.committed(wanted, timeout=10)
    finally:
        consumer.close()
    return all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed)


def check_conservation(
    settings: Settings, events: list[Event], bad: int, refused_coupons: int = 0
) -> dict[str, int]:
    """Everything `RELIABILITY.md` promises of a run, checked on the broker and in Redis;
    what was seen: output records, distinct ids, and byte-identical repeats among them."""
    kafka = settings.kafka
    letters = [orjson.loads(m.value()) for m in read_from_start(kafka, [kafka.topic_dlq])]
    origins = {(d["topic"], d["partition"], d["offset"]) for d in letters}
    assert len(origins) == bad, Counter(d["reason"] for d in letters)
    assert {d["reason"] for d in letters} <= {"malformed_json"}

    by_id: dict[str, set[bytes]] = defaultdict(set)
    records = 0
    for message in read_from_start(kafka, kafka.output_topics):
        by_id[orjson.loads(message.value())["id"]].add(message.value())
        records += 1
    renamed = {ident: len(v) for ident, v in by_id.items() if len(v) > 1}
    assert not renamed, renamed  # a repeat is byte-identical
    episodes: dict[tuple[str, str], list[int]] = defaultdict(list)
    for ident in by_id:
        kind, rest = ident.split(":", 1)
        member, episode = rest.rsplit(":", 1)
        episodes[(member, kind)].append(int(episode))

    store = RedisState(settings)
    members = sorted({e.member_id for e in events})
    decisions = store.decisions(members)
    unsent = 0
    for member in members:
        for kind, count in decisions.get(member, DecisionState()).episodes.items():
            got = sorted(episodes[(member, kind)])
            if kind == COUPON:  # a coupon refused at reservation keeps its episode, unsent
                assert set(got) <= set(range(1, count + 1)), (member, kind, got, count)
                unsent += count - len(got)
            else:
                assert got == list(range(1, count + 1)), (member, kind, got, count)
    assert unsent == refused_coupons, f"{unsent} coupon episodes unsent, {refused_coupons} refused"
    now = max(e.ts for e in events)
    snapshots = store.read(members, now)
    spec = settings.state.spec()
    lost = [
        m
        for m in members
        if snapshots.get(m) != fold([e for e in events if e.member_id == m], now, spec)
    ]
    assert not lost, f"{len(lost)} of {len(members)} members' state is not the fold of their events"
    return {"outputs": records, "ids": len(by_id), "repeated": records - len(by_id)}
