"""`memberpulse bench state`: events applied per second, round trips, bytes per member."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from memberpulse.models.contract import EVENT_TYPES, PURCHASE, Event
from memberpulse.models.snapshot import DecisionState
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.settings import Settings
from memberpulse.streams.state import keys
from memberpulse.streams.state.store import RedisState
from memberpulse.streams.state.types import DecisionRecord, SourcedEvent
from memberpulse.streams.worker.runtime import tune_gc

BATCH_SIZES = (1, 64, 512)
_PARTITIONS = 4
_FULL_MEMBER_DAYS = 395  # 13 months of purchases, every window populated
_DENSE_PER_DAY = 4
_DENSE_SAMPLE = 20


@dataclass(frozen=True)
class SizeResult:
    """Throughput of `apply` at one batch size, one batch after the other and overlapped."""

    batch_size: int
    events: int
    seconds: float
    events_per_s: float
    round_trips_per_batch: float
    overlapped_events_per_s: float


def simulated_events(settings: Settings, members: int, days: int, seed: int) -> list[SourcedEvent]:
    """Simulator events as a worker would read them (topic, partition, offset)."""
    from memberpulse.streams.simulate import SimConfig, Simulator

    offsets: dict[tuple[str, int], int] = {}
    out = []
    for event in Simulator(SimConfig(members=members, days=days, seed=seed)).iter_events():
        topic = settings.kafka.topic_for_type(event.type)
        partition = hash(event.member_id) % _PARTITIONS
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append(SourcedEvent(event, topic, partition, offset))
    return out


def run_size(
    store: RedisState, overlapped: RedisState, events: Sequence[SourcedEvent], size: int
) -> SizeResult:
    """Apply `events` in batches of `size` (`now` = the batch's latest ts): with `apply`,
    one batch after the other, then on a second store with `apply_stream`.
    """
    batches = [
        (events[start : start + size], max(item.event.ts for item in events[start : start + size]))
        for start in range(0, len(events), size)
    ]
    before = store.round_trips
    started = time.perf_counter()
    for batch, now in batches:
        store.apply(batch, now)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _result in overlapped.apply_stream(batches):
        pass
    overlapped_seconds = time.perf_counter() - started
    return SizeResult(
        batch_size=size,
        events=len(events),
        seconds=seconds,
        events_per_s=len(events) / seconds,
        round_trips_per_batch=(store.round_trips - before) / len(batches),
        overlapped_events_per_s=len(events) / overlapped_seconds,
    )


def full_member_events(
    member: str, end_ms: int, spec_length: int, count: int | None = None
) -> list[Event]:
    """A member with every field of the state present: a full sequence, every window, 13
    months of purchases, sessions and orders, recent purchases. `count` events (default
    4 L) spread evenly over 395 days: with the default the sequence spans ~99 days, so
    every event of the last 60 is still in it; with 4 a day (`_DENSE_PER_DAY`) it spans 16
    and the older days of the windows need a day bucket each."""
    events = []
    count = count or 4 * spec_length
    step = _FULL_MEMBER_DAYS * MS_PER_DAY // count
    for index in range(count):
        kind = EVENT_TYPES[index % len(EVENT_TYPES)]
        purchase = kind == PURCHASE
        events.append(
            Event(
                event_id=f"{member}-{index}",
                member_id=member,
                type=kind,
                item_id=f"I{(index * 37) % 5000:05d}",
                ts=end_ms - (count - index) * step,
                category=f"C{index % 40:02d}",
                price=round(5 + (index % 17) * 3.75, 2) if purchase else None,
                quantity=1 + index % 2 if purchase else 1,
                session_id=f"{member}-s{index // 3}",
            )
        )
    return events


def bytes_per_member(
    settings: Settings, sample: int = 200, count: int | None = None
) -> dict[str, float]:
    """MEMORY USAGE of every key of a full member with a decision state recorded, averaged:
    the state key (whose value holds the decision state too) and the other member keys
    (outbox, and the decision key of layouts 4 and older; both absent here unless
    something is pending). `count`: events per member (`full_member_events`)."""
    store = RedisState(settings)
    end = int(time.time() * 1000)
    members = [f"M{index:07d}" for index in range(sample)]
    offset = 0
    for member in members:
        items = []
        for event in full_member_events(member, end, settings.state.sequence_length, count):
            items.append(SourcedEvent(event, settings.kafka.topic_for_type(event.type), 0, offset))
            offset += 1
        store.apply(items, end)
    decision = DecisionState(
        last_risk=0.42,
        armed=True,
        episodes={"churn": 3, "coupon": 1},
        cooldown_until={"churn": end, "coupon": end},
        recommendation_fingerprint="a1b2c3d4e5f6",
        next_idle_check=end,
    )
    store.record([DecisionRecord(member, 0, decision, {}) for member in members])
    state_bytes = other_bytes = 0
    for member in members:
        state_key, *others = keys.member_keys(settings.redis.key_prefix, member)
        state_bytes += int(store.client.memory_usage(state_key, samples=0) or 0)
        for key in others:
            other_bytes += int(store.client.memory_usage(key, samples=0) or 0)
    return {
        "state_key": state_bytes / sample,
        "other_keys": other_bytes / sample,
        "total": (state_bytes + other_bytes) / sample,
    }


def bench_state(settings: Settings, members: int, days: int, seed: int) -> dict[str, object]:
    """The whole benchmark; each run uses its own key prefix and cleans up after itself."""
    events = simulated_events(settings, members, days, seed)
    tune_gc(
        settings.worker
    )  # the worker's process settings, applied at the same point: before batch 1
    results = []
    for size in BATCH_SIZES:
        stores = []
        for _ in range(2):
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            stores.append(RedisState(settings.model_copy(update={"redis_key_prefix": prefix})))
        subset = events if size > 1 else events[: min(len(events), 20_000)]
        results.append(asdict(run_size(stores[0], stores[1], subset, size)))
        for store in stores:
            _drop(store, store.prefix)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    scoped = settings.model_copy(update={"redis_key_prefix": prefix})
    memory = bytes_per_member(scoped)
    dense = bytes_per_member(
        scoped.model_copy(update={"redis_key_prefix": f"{prefix}-dense"}),
        sample=_DENSE_SAMPLE,
        count=_DENSE_PER_DAY * _FULL_MEMBER_DAYS,
    )
    probe = RedisState(scoped)
    version = probe.client.info("server").get("redis_version")
    _drop(probe, prefix)
    _drop(probe, f"{prefix}-dense")
    return {
        "results": results,
        "bytes_per_member": memory["total"],
        "bytes_per_member_detail": memory,
        "bytes_per_member_dense": dense["total"],
        "dense_events_per_day": _DENSE_PER_DAY,
        "sequence_length": settings.state.sequence_length,
        "redis_version": version,
        "events": len(events),
        "members": members,
        "days": days,
    }


def _drop(store: RedisState, prefix: str) -> None:
    batch = []
    for name in store.client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(name)
        if len(batch) == 1000:
            store.client.delete(*batch)
            batch = []
    if batch:
        store.client.delete(*batch)
