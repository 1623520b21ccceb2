"""`memberpulse bench bounds`: what one member, one huge id or a million members cost.

Three measurements (issue #25, resource bounds), on the Redis and broker of a private
local stack:

1. **many members**: `members` distinct members applied through the state layer (the
   worker's `apply`, batches of `batch_max_size`), Redis' `used_memory` before and after,
   and every key under the run's prefix checked for a TTL: a member key without one
   would grow Redis for ever. The per-partition idle sets and the partition clock are
   the only keys without a TTL; their size is reported (an idle entry is removed when its
   member's state is gone);
2. **one member flooding**: `flood_events` events of one member, the size of its state
   key after each step (the state keeps `state_sequence_length` events and fixed windows,
   whatever comes in) and the time per batch;
3. **other members' latency under a flood**: a worker at a fixed offered load of ordinary
   members, then the same load with one member sending as many events again; the p50/p99
   of the ordinary members' outputs in both (the flooder's own are not timed), and the
   ids the decoder takes at its limits (`max_id_chars`; longer ones are dead-lettered).

Measured, never asserted: the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from memberpulse.models.contract import BROWSE, CLICK, Event
from memberpulse.streams.bench.e2e import _namespace, _quantile, fixed_load, simulated_events
from memberpulse.streams.bench.state import _drop
from memberpulse.streams.settings import Settings
from memberpulse.streams.state import keys
from memberpulse.streams.state.store import RedisState
from memberpulse.streams.state.types import SourcedEvent

_EVENTS_PER_MEMBER: Final = 2  # a browse and a click: a member seen once
_FLOOD_MEMBER: Final = "FLOOD-0001"
_FLOOD_STEPS: Final = (64, 1_000, 10_000, 100_000, 1_000_000)
_SCAN_COUNT: Final = 10_000
_MB: Final = 1024 * 1024


def _member_events(member: str, start_ms: int, count: int, kind: str = CLICK) -> list[Event]:
    return [
        Event(
            event_id=f"{member}-{index}",
            member_id=member,
            type=kind,
            item_id=f"I{index % 5000:05d}",
            ts=start_ms + index,
            category=f"C{index % 40:02d}",
            session_id=f"{member}-s",
        )
        for index in range(count)
    ]


def _apply(store: RedisState, settings: Settings, events: Sequence[Event], size: int) -> float:
    """Apply `events` in batches of `size` (per-partition offsets as a broker gives them);
    the seconds taken."""
    partitions = settings.kafka.input_partitions
    offsets: dict[tuple[str, int], int] = {}
    started = time.perf_counter()
    for start in range(0, len(events), size):
        batch = []
        for event in events[start : start + size]:
            topic = settings.kafka.topic_for_type(event.type)
            partition = hash(event.member_id) % partitions
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            batch.append(SourcedEvent(event, topic, partition, offset))
        store.apply(batch, max(item.event.ts for item in batch))
    return time.perf_counter() - started


def many_members(settings: Settings, members: int, say: Callable[[str], None]) -> dict[str, Any]:
    """`members` distinct members through `apply`: memory per member, keys without a TTL."""
    scoped = settings.model_copy(update={"redis_key_prefix": f"bounds{uuid.uuid4().hex[:8]}"})
    store = RedisState(scoped)
    client = store.client
    now = int(time.time() * 1000)
    before = int(client.info("memory")["used_memory"])
    seconds = 0.0
    chunk = 100_000  # members generated at a time: the run's own memory stays small
    for first in range(0, members, chunk):
        events = []
        for index in range(first, min(members, first + chunk)):
            member = f"M{index:08d}"
            events.append(_member_events(member, now - 1_000, 1, BROWSE)[0])
            events.append(_member_events(member, now, 1)[0])
        seconds += _apply(store, scoped, events, scoped.worker.batch_max_size)
        say(f"  {min(members, first + chunk):,} members applied")
    after = int(client.info("memory")["used_memory"])
    member_keys = without_ttl = 0
    shared: dict[str, int] = {}
    names: list[bytes] = []

    def check(batch: list[bytes]) -> tuple[int, int]:
        pipe = client.pipeline(transaction=False)
        for name in batch:
            pipe.pttl(name)
        counted = missing = 0
        for name, ttl in zip(batch, pipe.execute(), strict=True):
            text = name.decode()
            if ":{" in text and not text.split(":", 2)[1].startswith(("idle", "budget")):
                counted += 1
                missing += ttl < 0
            elif ttl < 0:
                shared[text] = int(client.memory_usage(name, samples=0) or 0)
        return counted, missing

    for name in client.scan_iter(match=f"{store.prefix}:*", count=_SCAN_COUNT):
        names.append(name)
        if len(names) == _SCAN_COUNT:
            counted, missing = check(names)
            member_keys, without_ttl = member_keys + counted, without_ttl + missing
            names = []
    if names:
        counted, missing = check(names)
        member_keys, without_ttl = member_keys + counted, without_ttl + missing
    idle_entries = sum(
        int(client.zcard(keys.idle_key(store.prefix, p)))
        for p in range(scoped.kafka.input_partitions)
    )
    _drop(store, store.prefix)
    return {
        "members": members,
        "events": members * _EVENTS_PER_MEMBER,
        "apply_events_per_s": members * _EVENTS_PER_MEMBER / seconds if seconds else 0.0,
        "used_memory_mb": after / _MB,
        "bytes_per_member": (after - before) / members,
        "member_keys": member_keys,
        "member_keys_without_ttl": without_ttl,
        "ttl_days": scoped.state.ttl_days,
        "shared_keys_without_ttl": shared,  # name → bytes: the idle sets and the clock
        "idle_entries": idle_entries,
    }


def one_member_flood(settings: Settings, events: int, say: Callable[[str], None]) -> dict[str, Any]:
    """One member's state key size and apply time per batch as its events pile up."""
    scoped = settings.model_copy(update={"redis_key_prefix": f"flood{uuid.uuid4().hex[:8]}"})
    store = RedisState(scoped)
    state_key = keys.member_keys(store.prefix, _FLOOD_MEMBER)[0]
    size = scoped.worker.batch_max_size
    start = int(time.time() * 1000) - events  # one event a millisecond, ending now
    flood = _member_events(_FLOOD_MEMBER, start, events)
    steps, done, seconds = [], 0, 0.0
    for step in (s for s in _FLOOD_STEPS if s < events):
        seconds += _apply(store, scoped, flood[done:step], size)
        done = step
        steps.append({"events": step, "state_key_bytes": store.client.memory_usage(state_key)})
    seconds += _apply(store, scoped, flood[done:], size)
    steps.append({"events": events, "state_key_bytes": store.client.memory_usage(state_key)})
    say(f"  one member, {events:,} events: state key {steps[-1]['state_key_bytes']:,} bytes")
    long_id = "L" * scoped.worker.max_id_chars  # the longest id the decoder lets through
    _apply(store, scoped, _member_events(long_id, start, scoped.state.sequence_length), size)
    long_keys = keys.member_keys(store.prefix, long_id)
    long_bytes = store.client.memory_usage(long_keys[0])
    _drop(store, store.prefix)
    batches = -(-events // size)
    return {
        "events": events,
        "state_key_bytes_by_events": steps,
        "ms_per_batch": seconds / batches * 1000,
        "events_per_s": events / seconds if seconds else 0.0,
        "sequence_length": scoped.state.sequence_length,
        "longest_id_chars": len(long_id),
        "longest_id_key_chars": len(long_keys[0]),
        "longest_id_state_key_bytes": long_bytes,
    }


def flood_latency(
    settings: Settings, rate: float, seconds: float, out_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Ordinary members' output latency at `rate` events/s, then with one member adding as
    many events again (every other event sent is the flooder's)."""
    ordinary = simulated_events(int(rate * seconds) + 1, seed=3)
    flooder = _member_events(_FLOOD_MEMBER, 0, len(ordinary))
    mixed = [e for pair in zip(ordinary, flooder, strict=True) for e in pair]
    results = {}
    tag = uuid.uuid4().hex[:6]
    for phase, events, offered in (("alone", ordinary, rate), ("flooded", mixed, 2 * rate)):
        scoped = _namespace(settings, tag, phase, fresh_inputs=True)
        log = out_dir / f"bench-bounds-{phase}.log"
        run = fixed_load(
            scoped, events, offered, seconds, log, timed=lambda e: e.member_id != _FLOOD_MEMBER
        )
        lat = run.latencies_ms
        results[phase] = {
            "offered_eps": offered,
            "sent": run.sent,
            "outputs_timed": len(lat),
            "p50_ms": _quantile(lat, 0.5),
            "p99_ms": _quantile(lat, 0.99),
        }
        say(f"  {phase}: {offered:g} events/s, others' p50 {_quantile(lat, 0.5)} ms, "
            f"p99 {_quantile(lat, 0.99)} ms")  # fmt: skip
    return results


def bench_bounds(
    settings: Settings,
    members: int,
    flood_events: int,
    rate: float,
    latency_seconds: float,
    out_dir: Path,
    say: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """The three measurements, in that order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    say(f"many members: {members:,}")
    report: dict[str, Any] = {"many_members": many_members(settings, members, say)}
    say(f"one member flooding: {flood_events:,} events")
    report["one_member_flood"] = one_member_flood(settings, flood_events, say)
    say(f"others' latency under a flood: {rate:g} events/s, {latency_seconds:g} s a phase")
    report["flood_latency"] = flood_latency(settings, rate, latency_seconds, out_dir, say)
    return report
