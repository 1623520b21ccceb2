"""Producing simulated events into Kafka in (compressed) real time.

Simulated time runs `speed` times faster than the wall clock and ends at the present:
over a run of `seconds`, the events of the last `seconds × speed` of simulated time are
sent in event-time order, each when the simulated clock reaches it, and never faster
than `rate` events/s. When the cap binds the stream falls behind its clock and the run
ends at its deadline with the rest unsent; the summary says so (`cut_short`, `max_lag_s`)
instead of silently stretching time.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain

import numpy as np
from confluent_kafka import KafkaException, Producer

from memberpulse.models.contract import Event, Reason, encode_event
from memberpulse.models.errors import KafkaUnavailable
from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_SECOND
from memberpulse.streams.local.console import ProgressSink
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate.bad import corrupt
from memberpulse.streams.worker.kafka import make_producer

_REPORT_EVERY_S = 1.0


@dataclass(frozen=True)
class LivePlan:
    """When a live run starts and ends on both clocks."""

    wall_start_s: float
    seconds: float
    speed: float
    rate: float
    sim_end_ms: int  # simulated time at the end of the run: the wall-clock present then

    @property
    def sim_start_ms(self) -> int:
        """Simulated time at the start of the run."""
        return self.sim_end_ms - int(self.seconds * self.speed * MS_PER_SECOND)

    def due_wall_s(self, ts_ms: int) -> float:
        """Wall-clock moment the simulated clock reaches `ts_ms`."""
        return (
            self.wall_start_s
            + self.seconds
            - (self.sim_end_ms - ts_ms) / MS_PER_SECOND / self.speed
        )


@dataclass
class LiveSummary:
    """What a live run produced."""

    sent: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    failed: int = 0
    cut_short: bool = False
    max_lag_s: float = 0.0
    elapsed_s: float = 0.0


def plan_live(*, seconds: float, speed: float, rate: float, now_s: float | None = None) -> LivePlan:
    """A plan starting now; validates the arguments with clear messages."""
    if seconds <= 0 or speed <= 0 or rate <= 0:
        raise ValueError(f"seconds, speed and rate must be > 0, got {seconds}, {speed}, {rate}")
    start = time.time() if now_s is None else now_s
    return LivePlan(start, seconds, speed, rate, int((start + seconds) * MS_PER_SECOND))


def primed(plan: LivePlan, events: Iterable[Event]) -> tuple[LivePlan, Iterator[Event]]:
    """Generate the first event now, then restart the wall clock of the plan.

    Simulators build their members before yielding anything (seconds for thousands of
    members); without this the stream would start with a burst of overdue events. The
    simulated window stays as planned, so it ends that long before the present.
    """
    iterator = iter(events)
    first = next(iterator, None)
    restarted = replace(plan, wall_start_s=time.time())
    return restarted, iterator if first is None else chain([first], iterator)


def produce_live(
    settings: Settings,
    plan: LivePlan,
    events: Iterable[Event],
    *,
    bad_fraction: float = 0.0,
    seed: int = 0,
    progress: ProgressSink | None = None,
    producer: Producer | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> LiveSummary:
    """Send `events` (in ts order, inside the plan's window) keyed by member_id."""
    producer = producer or make_producer(settings.kafka)
    rng = np.random.default_rng([seed, 0xBAD])
    summary = LiveSummary()

    def on_delivery(error: object, _message: object) -> None:
        if error is None:
            summary.delivered += 1
        else:
            summary.failed += 1

    deadline = plan.wall_start_s + plan.seconds
    reported, last_report = 0, plan.wall_start_s
    for event in events:
        not_before = max(plan.due_wall_s(event.ts), plan.wall_start_s + summary.sent / plan.rate)
        now = _wait_until(not_before, producer)
        if now >= deadline or should_stop():
            summary.cut_short = True
            break
        summary.max_lag_s = max(summary.max_lag_s, now - plan.due_wall_s(event.ts))
        value, reason = _payload(event, rng, bad_fraction, settings.worker.max_event_bytes)
        if reason is not None:
            summary.bad[reason.value] += 1
        topic = settings.kafka.topic_for_type(event.type)
        _produce(producer, topic, event.member_id.encode(), value, on_delivery)
        summary.per_topic[topic] += 1
        summary.sent += 1
        if progress is not None and now - last_report >= _REPORT_EVERY_S:
            progress.advance(summary.sent - reported, f"lag {summary.max_lag_s:.2f}s")
            reported, last_report = summary.sent, now
    _flush(producer, settings)
    if progress is not None and summary.sent > reported:
        progress.advance(summary.sent - reported)
    summary.elapsed_s = time.time() - plan.wall_start_s
    return summary


def _payload(
    event: Event, rng: np.random.Generator, bad_fraction: float, max_bytes: int
) -> tuple[bytes, Reason | None]:
    if bad_fraction > 0 and rng.random() < bad_fraction:
        return corrupt(event, rng, max_bytes)
    return encode_event(event), None


def _wait_until(moment_s: float, producer: Producer) -> float:
    """Serve delivery callbacks while waiting for `moment_s`; return the time then."""
    now = time.time()
    while now < moment_s:
        producer.poll(min(moment_s - now, 0.05))
        now = time.time()
    return now


def _produce(
    producer: Producer,
    topic: str,
    key: bytes,
    value: bytes,
    on_delivery: Callable[[object, object], None],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            producer.poll(0)
            return
        except BufferError:  # local queue full: let librdkafka drain it
            producer.poll(0.05)


def _flush(producer: Producer, settings: Settings) -> None:
    try:
        remaining = producer.flush(settings.kafka.connect_timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(settings.kafka.bootstrap, str(exc)) from exc
    if remaining:
        raise KafkaUnavailable(
            settings.kafka.bootstrap, f"{remaining} records still undelivered after flush"
        )


def stream_members(
    settings: Settings,
    plan: LivePlan,
    members: int,
    seed: int,
    purchase_only: bool,
    bad_fraction: float,
    progress: ProgressSink | None,
) -> LiveSummary:
    """Simulate `members` over the plan's window and produce them live (also the demo's)."""
    from memberpulse.streams.simulate import SimConfig, Simulator

    days = max(1, math.ceil((plan.sim_end_ms - plan.sim_start_ms) / MS_PER_DAY))
    config = SimConfig(
        members=members, days=days, seed=seed, end_ms=plan.sim_end_ms, purchase_only=purchase_only
    )
    events = Simulator(config).iter_events(plan.sim_start_ms, plan.sim_end_ms)
    plan, ready = primed(plan, events)
    return produce_live(
        settings, plan, ready, bad_fraction=bad_fraction, seed=seed, progress=progress
    )
