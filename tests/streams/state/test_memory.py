"""`MemoryState`: the state rules without Redis, the same answers as `RedisState` on the
same batches (integration), and the batch path (`BatchProcessor`) run on it with a list
sink: no broker, no Redis."""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from memberpulse.models.contract import EVENT_TYPES, Event, encode_event
from memberpulse.models.errors import OutputsNotConfirmed
from memberpulse.models.fold import admit, fold
from memberpulse.models.snapshot import DecisionState, Reservation, StateSpec, day_of
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.decisions import RECOMMENDATION, TIER, Policy
from memberpulse.streams.decisions.coupons import load_rules
from memberpulse.streams.serving.registry import ModelHolder, Registry
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.state.memory import MemoryState
from memberpulse.streams.state.store import RedisState
from memberpulse.streams.state.types import ApplyResult, DecisionRecord, SourcedEvent
from memberpulse.streams.worker.processor import HEADER_ID, HEADER_KIND, BatchProcessor
from memberpulse.streams.worker.records import InRecord, Refused
from tests.helpers import NOW_MS, make_event, validate_record

SPEC = StateSpec()
LATENESS = SPEC.lateness_ms
TOPIC = "member.purchases"
HOUR_MS = 3_600_000


def sourced(
    events: Iterable[Event], partition: int = 0, start: int = 0, topic: str = TOPIC
) -> list[SourcedEvent]:
    """Events as read from one topic partition, at offsets from `start` on."""
    return [SourcedEvent(e, topic, partition, start + i) for i, e in enumerate(events)]


def decision(member: str, partition: int = 0, **fields: Any) -> DecisionRecord:
    """A record of a decision state alone (no outbox entry)."""
    return DecisionRecord(member, partition, DecisionState(**fields), {})


# --- idempotence and lateness ------------------------------------------------------------------


def test_a_redelivered_batch_is_all_redelivered_and_changes_no_snapshot() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    events = [make_event(event_id=f"a{i}", ts=NOW_MS - (20 - i) * 60_000) for i in range(10)]
    once = state.apply(sourced(events), NOW_MS)
    again = state.apply(sourced(events), NOW_MS)
    assert (once.applied, once.duplicates, once.changed) == (10, 0, {"M0000001"})
    assert (again.applied, len(again.redelivered), again.duplicates, again.changed) == (
        0,
        10,
        0,
        set(),
    )
    assert again.snapshots == once.snapshots == {"M0000001": fold(events, NOW_MS, SPEC)}


def test_an_event_id_seen_before_is_a_duplicate_at_a_new_offset_even_off_the_sequence() -> None:
    state = MemoryState(replace(SPEC, sequence_length=3), idle_fetch_limit=8)
    events = [make_event(event_id=f"e{i}", ts=NOW_MS - 100_000 + i * 1_000) for i in range(6)]
    state.apply(sourced(events), NOW_MS)
    resent = state.apply(sourced([events[0]], start=10), NOW_MS)  # long out of the last 3
    moved = state.apply(sourced([events[5]._replace(ts=events[5].ts + 1)], start=11), NOW_MS)
    assert (resent.applied, resent.duplicates) == (0, 1)
    assert (moved.applied, moved.duplicates) == (0, 1)
    assert moved.snapshots["M0000001"].total_purchases == 6


def test_offsets_are_kept_per_topic_and_partition() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    first, second, third = (make_event(event_id=f"o{i}", ts=NOW_MS - i) for i in range(3))
    state.apply(sourced([first], partition=0, start=5), NOW_MS)
    other_partition = state.apply(sourced([second], partition=1, start=5), NOW_MS)
    other_topic = state.apply(sourced([third], partition=0, start=5, topic="t2"), NOW_MS)
    below = state.apply(sourced([make_event(event_id="o9")], partition=0, start=4), NOW_MS)
    assert (other_partition.applied, other_topic.applied) == (1, 1)
    assert (below.applied, len(below.redelivered)) == (0, 1)  # at or below the applied offset


def test_events_more_than_the_lateness_behind_are_too_late_and_change_nothing() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    recent = make_event(event_id="new", ts=NOW_MS)
    late = make_event(event_id="old", ts=NOW_MS - LATENESS - 1)
    edge = make_event(event_id="edge", ts=NOW_MS - LATENESS)
    other = make_event(event_id="x", member_id="M2", ts=NOW_MS - 10 * LATENESS)
    delivery = sourced([recent, late, edge, other])
    result = state.apply(delivery, NOW_MS)
    assert result.too_late == [delivery[1]]  # with its position, for the dead letter
    assert (result.applied, result.duplicates) == (3, 0)
    assert result.snapshots["M0000001"] == fold([recent, edge], NOW_MS, SPEC)
    # refused at that offset once: a redelivery of it is redelivered, not late again
    again = state.apply(delivery[1:2], NOW_MS)
    assert (again.too_late, len(again.redelivered)) == ([], 1)


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[Event], list[list[int]]]:
    """Two members' events, some held back past the lateness; batches with redeliveries."""
    events, ts = [], NOW_MS - 30 * MS_PER_DAY
    for index in range(draw(st.integers(1, 60))):
        ts += draw(st.integers(0, 6 * HOUR_MS))
        events.append(
            make_event(
                event_id=f"e{index}",
                member_id=draw(st.sampled_from(["A", "B"])),
                type=draw(st.sampled_from(EVENT_TYPES)),
                item_id=f"I{draw(st.integers(0, 5))}",
                ts=ts,
            )
        )
    delays = [draw(st.sampled_from([0, 0, LATENESS // 2, 2 * LATENESS])) for _ in events]
    order = sorted(range(len(events)), key=lambda i: events[i].ts + delays[i])
    arrival = [events[i] for i in order]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=6)))
    bounds = [0, *cuts, len(arrival)]
    batches = [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]
    plan: list[list[int]] = []
    for number, batch in enumerate(batches):
        plan.append(batch)
        if draw(st.booleans()):
            plan.append(batches[draw(st.integers(0, number))])
    return arrival, plan


@given(arrivals())
@hsettings(max_examples=60, derandomize=True, deadline=None)
def test_any_batching_with_redeliveries_gives_the_fold_of_the_admitted_events(
    case: tuple[list[Event], list[list[int]]],
) -> None:
    arrival, plan = case
    state = MemoryState(SPEC, idle_fetch_limit=8)
    delivery = sourced(arrival)
    now = max(e.ts for e in arrival)
    results = [state.apply([delivery[i] for i in batch], now) for batch in plan]
    distinct, late = admit(arrival, LATENESS)
    assert sum(r.applied for r in results) == len(distinct)
    refused = [item.event for r in results for item in r.too_late]  # grouped by member
    assert sorted(refused, key=lambda e: e.event_id) == sorted(late, key=lambda e: e.event_id)
    counted = sum(r.applied + r.duplicates + len(r.redelivered) + len(r.too_late) for r in results)
    assert counted == sum(map(len, plan))
    final = state.apply(delivery, now)
    for member, snapshot in final.snapshots.items():
        assert snapshot == fold([e for e in distinct if e.member_id == member], now, SPEC)


# --- decision states and the outbox ------------------------------------------------------------


def test_outbox_entries_stay_pending_until_delivered() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    state.apply(sourced([make_event()]), NOW_MS)
    outbox = {"M0000001:churn:1": b"1", "M0000001:tier:1": b"2"}
    state.record([DecisionRecord("M0000001", 0, DecisionState(), outbox)])
    touched = state.apply(sourced([make_event(event_id="e-2")], start=1), NOW_MS)
    assert touched.pending_outbox == {"M0000001": outbox}
    untouched = state.apply([], NOW_MS)
    assert untouched.pending_outbox == {}  # read for members touched or confirmed only
    confirmed = state.apply([], NOW_MS, delivered={"M0000001": ["M0000001:churn:1"]})
    assert confirmed.pending_outbox == {"M0000001": {"M0000001:tier:1": b"2"}}
    assert confirmed.snapshots == {}
    cleared = state.apply([], NOW_MS, delivered={"M0000001": ["M0000001:tier:1"], "M9": ["x"]})
    assert cleared.pending_outbox == {}


def test_a_recorded_decision_state_comes_back_with_the_members_next_snapshot() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    early = DecisionState(last_risk=0.25, armed=False, episodes={"churn": 2}, decided_at=NOW_MS)
    state.record([DecisionRecord("M0000001", 0, early, {})])  # before any event: kept
    assert state.decisions(["M0000001", "M2"]) == {"M0000001": early}
    result = state.apply(sourced([make_event()]), NOW_MS)
    assert result.decision_states == {"M0000001": early}
    fresh = state.apply(sourced([make_event(member_id="M2", event_id="n")]), NOW_MS)
    assert fresh.decision_states == {"M2": DecisionState()}


# --- budgets ---------------------------------------------------------------------------------


def test_reservations_are_granted_up_to_the_limit_and_answered_again_the_same() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    asks = [Reservation(f"r{i}", "coupons", 20_000, 400, 1_000) for i in range(4)]
    result = state.record([], asks)
    assert [result.granted[r.id] for r in asks] == [True, True, False, False]
    assert [result.spent[r.id] for r in asks] == [400, 800, 800, 800]
    again = state.record([], asks)  # idempotent per id: nothing is reserved twice
    assert again.granted == result.granted
    assert set(again.spent.values()) == {800}  # the ledger's total now, as Redis answers
    other_day = state.record([], [Reservation("r0", "coupons", 20_001, 1_000, 1_000)])
    assert other_day.granted == {"r0": True}  # a ledger per budget and day


def test_a_release_gives_back_once_and_apply_reads_what_is_spent() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    asks = [Reservation(f"r{i}", "coupons", 20_000, 400, 1_000) for i in range(2)]
    state.record([], asks)
    ledgers = [("coupons", 20_000), ("coupons", 20_001)]
    read = state.apply([], NOW_MS, releases=[asks[0], asks[0]], budgets=ledgers)
    assert read.budget_spent == {("coupons", 20_000): 400, ("coupons", 20_001): 0}
    later = state.record([], [Reservation("r9", "coupons", 20_000, 600, 1_000)])
    assert (later.granted["r9"], later.spent["r9"]) == (True, 1_000)
    assert state.record([], asks[:1]).granted == {"r0": False}  # released stays given back


# --- idle checks --------------------------------------------------------------------------------


def test_a_member_is_idle_due_from_its_check_time_on_its_partition() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=8)
    a, b = make_event(member_id="A", event_id="a"), make_event(member_id="B", event_id="b")
    state.apply(sourced([a, b], partition=2), NOW_MS)
    state.record(
        [
            decision("A", 2, last_risk=0.4, next_idle_check=NOW_MS + MS_PER_DAY),
            decision("B", 2, next_idle_check=NOW_MS + 2 * MS_PER_DAY),
        ]
    )
    assert state.apply([], NOW_MS + 1_000, idle_partitions=[2]).idle_due == {}
    due = state.apply([], NOW_MS + MS_PER_DAY, idle_partitions=[1, 2])
    assert due.idle_due == {"A": fold([a], NOW_MS + MS_PER_DAY, SPEC)}
    assert (due.now["A"], due.partitions["A"]) == (NOW_MS + MS_PER_DAY, 2)
    assert due.decision_states["A"].last_risk == 0.4
    ahead = state.apply([], NOW_MS, idle_partitions=[2], partition_now={2: NOW_MS + MS_PER_DAY})
    assert set(ahead.idle_due) == {"A"}  # the partition's event time, not the batch's
    touched = state.apply(
        sourced([make_event(member_id="A", event_id="a2")], 2, 1),
        NOW_MS + 2 * MS_PER_DAY,
        None,
        [2],
    )
    assert set(touched.snapshots) == {"A"}
    assert set(touched.idle_due) == {"B"}  # A is scored once, with its fresh snapshot
    state.record([decision("A", 2, next_idle_check=None)])
    assert set(state.apply([], NOW_MS + 9 * MS_PER_DAY, idle_partitions=[2]).idle_due) == {"B"}


def test_the_idle_fetch_takes_the_limit_in_redis_order_and_stateless_members_count() -> None:
    state = MemoryState(SPEC, idle_fetch_limit=2)
    members = ["M0", "b", "a b"]  # "a b" is no plain key tag: its tag is "~" + a digest
    state.apply(sourced(make_event(member_id=m, event_id=m) for m in members), NOW_MS)
    checks = {"M0": 2, "b": 1, "a b": 1, "no-events": 0}
    state.record([decision(m, 0, next_idle_check=NOW_MS + at) for m, at in checks.items()])
    due = state.apply([], NOW_MS + 10, idle_partitions=[0])
    # by check time, then key tag ("b" < "~…"), as Redis's ZRANGEBYSCORE orders them; the
    # member without events took the first of the 2 places
    assert list(due.idle_due) == ["b"]


# --- the same answers as RedisState ------------------------------------------------------------


class _Positions:
    """Offsets as a broker hands them out: per topic partition, in arrival order."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._next: Counter[tuple[str, int]] = Counter()

    def take(self, topic: str, member: str) -> tuple[int, int]:
        """(partition, offset) of the next record keyed by `member` on `topic`."""
        partition = zlib.crc32(member.encode()) % self._settings.kafka.input_partitions
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] += 1
        return partition, offset

    def place(self, event: Event) -> SourcedEvent:
        topic = self._settings.kafka.topic_for_type(event.type)
        return SourcedEvent(event, topic, *self.take(topic, event.member_id))


def _parity_plan(settings: Settings) -> list[list[SourcedEvent]]:
    """Simulated batches, then a redelivered batch, a producer retry and a late event."""
    events = list(Simulator(SimConfig(members=12, days=40, seed=3)).iter_events())
    positions = _Positions(settings)
    placed = [positions.place(e) for e in events]
    batches = [placed[i : i + 64] for i in range(0, len(placed), 64)]
    plan: list[list[SourcedEvent]] = []
    for number, batch in enumerate(batches):
        plan.append(batch)
        if number == 2:
            plan.append(batches[1])  # redelivered after a crash: same positions
        if number == 3:
            plan.append([positions.place(batch[-1].event)])  # same event, a new offset
        if number == 4:
            newest = batch[-1].event
            late = newest._replace(event_id="late-1", ts=newest.ts - LATENESS - 1)
            plan.append([positions.place(late), *batches[number][:3]])
    return plan


def _decide(result: ApplyResult, number: int) -> tuple[list[DecisionRecord], list[Reservation]]:
    """Deterministic decisions from what round trip 1 returned (for both stores alike)."""
    records, reservations = [], []
    for member in sorted({*result.snapshots, *result.idle_due}):
        snapshot = result.snapshots.get(member) or result.idle_due[member]
        at, seen = result.now[member], result.decision_states[member].episodes.get("seen", 0)
        state = DecisionState(
            last_risk=snapshot.total_purchases / 10,
            episodes={"seen": seen + 1},
            next_idle_check=at + 6 * HOUR_MS if len(snapshot.events) % 2 else None,
            decided_at=at,
        )
        outbox = {f"{member}:out:{number}": str(snapshot.last_seen).encode()}
        records.append(DecisionRecord(member, result.partitions[member], state, outbox))
        reservations.append(Reservation(f"{member}:r:{number}", "coupons", day_of(at), 700, 2_000))
    return records, reservations


@pytest.mark.integration
def test_memory_and_redis_answer_the_same_on_the_same_batches(isolated: Settings) -> None:
    settings = isolated.model_copy(update={"state_idle_fetch_limit": 3})
    stores = (RedisState(settings), MemoryState.from_settings(settings))
    partitions = range(settings.kafka.input_partitions)
    clock: dict[int, int] = {}
    delivered: dict[str, list[str]] = {}
    releases: list[Reservation] = []
    seen: Counter[str] = Counter()
    for number, batch in enumerate(_parity_plan(settings)):
        for item in batch:
            clock[item.partition] = max(clock.get(item.partition, 0), item.event.ts)
        now = max(clock.values())
        ledgers = [("coupons", day_of(now) - 1), ("coupons", day_of(now))]
        on_redis, in_memory = (
            store.apply(batch, now, delivered, partitions, releases, clock, ledgers)
            for store in stores
        )
        assert in_memory == on_redis, f"apply of batch {number}"
        records, reservations = _decide(on_redis, number)
        recorded_redis, recorded_memory = (s.record(records, reservations) for s in stores)
        assert recorded_memory == recorded_redis, f"record of batch {number}"
        # confirm every other member's outputs; give back one granted reservation, twice
        delivered = {r.member_id: list(r.outbox) for r in records[::2]}
        granted = [r for r in reservations if recorded_redis.granted[r.id]]
        releases = granted[:1] * 2
        seen.update(
            duplicates=on_redis.duplicates + len(on_redis.redelivered),
            too_late=len(on_redis.too_late),
            idle_due=len(on_redis.idle_due),
            pending=len(on_redis.pending_outbox),
            refused=sum(not ok for ok in recorded_redis.granted.values()),
            spent=sum(on_redis.budget_spent.values()),
        )
    # every rule was exercised, not only the happy path
    exercised = ("duplicates", "too_late", "idle_due", "pending", "refused", "spent")
    assert all(seen[what] > 0 for what in exercised), seen


# --- the batch path on MemoryState --------------------------------------------------------------


class ListSink:
    """An `OutputSink` in memory: what was produced, as (topic, key, value, headers)."""

    def __init__(self, refuse_topic: str | None = None) -> None:
        self.queued: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.confirmed: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self._refuse_topic = refuse_topic  # a broker that takes nothing on this topic

    def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.queued.append((topic, key, value, headers))

    def flush(self) -> list[Refused]:
        refused = [
            Refused(t, k, len(v), h, "Broker: Message size too large")
            for t, k, v, h in self.queued
            if t == self._refuse_topic
        ]
        self.confirmed += [r for r in self.queued if r[0] != self._refuse_topic]
        self.queued = []
        return refused

    def on(self, topics: Iterable[str]) -> list[tuple[dict[str, bytes], dict[str, object]]]:
        """(headers, decoded value) of each confirmed record on `topics`."""
        wanted = set(topics)
        return [(dict(h), orjson.loads(v)) for t, _k, v, h in self.confirmed if t in wanted]


class _Records:
    """Input records as a broker hands them out: per topic partition offsets, keyed."""

    def __init__(self, settings: Settings, received_ms: int) -> None:
        self._positions = _Positions(settings)
        self._settings = settings
        self._received = received_ms

    def make(self, events: Iterable[Event]) -> list[InRecord]:
        return [
            self.raw(self._settings.kafka.topic_for_type(e.type), e.member_id, e) for e in events
        ]

    def raw(self, topic: str, member: str, value: Event | bytes) -> InRecord:
        partition, offset = self._positions.take(topic, member)
        body = encode_event(value) if isinstance(value, Event) else value
        return InRecord(topic, partition, offset, member.encode(), body, self._received)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def _processor(
    settings: Settings, store: MemoryState, registry: Path, sink: ListSink, clock_ms: int
) -> BatchProcessor:
    policy = Policy.from_settings(settings.decisions, load_rules(settings.decisions.coupon_rules))
    models = ModelHolder(Registry(registry))
    return BatchProcessor(settings, store, models, sink, policy, wall_clock_ms=lambda: clock_ms)


def _simulated(members: int, seed: int) -> list[Event]:
    return list(Simulator(SimConfig(members=members, days=30, seed=seed)).iter_events())


def _batches(records: Sequence[InRecord], size: int = 128) -> list[Sequence[InRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_the_processor_applies_each_batch_and_records_its_decisions(
    settings: Settings, served_registry: Path
) -> None:
    events = _simulated(members=10, seed=9)
    received = events[-1].ts + 1
    store, sink = MemoryState.from_settings(settings), ListSink()
    processor = _processor(settings, store, served_registry, sink, received)
    reports = [processor.process(b) for b in _batches(_Records(settings, received).make(events))]
    assert sum(r.applied for r in reports) == len(events)
    assert sum(r.duplicates for r in reports) == 0
    outputs = sink.on(settings.kafka.output_topics)
    assert len(outputs) == sum(sum(r.outputs.values()) for r in reports) > 0
    members = {e.member_id for e in events}
    assert Counter(h[HEADER_KIND].decode() for h, _ in outputs)[TIER] >= len(members)
    assert {o["model_version"] for _, o in outputs} == {Registry(served_registry).current()}
    for _, record in outputs:
        validate_record(record)
    decided = store.decisions(members)
    assert set(decided) == members  # round trip 2 wrote every member's decision state
    assert all(state.decided_at is not None for state in decided.values())


def test_a_redelivered_stream_emits_no_new_output_id(
    settings: Settings, served_registry: Path
) -> None:
    events = _simulated(members=8, seed=4)
    received = events[-1].ts + 1
    records = _Records(settings, received).make(events)
    store, first_sink, again_sink = MemoryState.from_settings(settings), ListSink(), ListSink()
    first = _processor(settings, store, served_registry, first_sink, received)
    first_reports = [first.process(b) for b in _batches(records)]
    again = _processor(settings, store, served_registry, again_sink, received)  # restarted
    reports = [again.process(b) for b in _batches(records)]
    assert sum(r.applied for r in reports) == 0
    assert sum(r.redelivered for r in reports) == len(records)
    assert sum(sum(r.outputs.values()) for r in reports) == 0  # nothing decided again
    # The last batch's outbox was never cleared (that rides on the next round trip 1):
    # it goes out again under the same ids, and only it.
    last = {out.id for out in first_reports[-1].produced}
    resent = [h[HEADER_ID].decode() for h, _ in again_sink.on(settings.kafka.output_topics)]
    assert last
    assert sorted(resent) == sorted(last)
    assert sum(r.resent for r in reports) == len(last)


class _FailingOnce(ListSink):
    """A sink whose first flush fails: the batch's state was applied, its outputs not."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def flush(self) -> list[Refused]:
        if not self.failed:
            self.failed = True
            self.queued = []
            raise OutputsNotConfirmed("the broker did not confirm (injected)")
        return super().flush()


def test_a_batch_retried_after_its_state_was_applied_counts_each_input_once(
    settings: Settings, served_registry: Path
) -> None:
    events = _simulated(members=6, seed=3)
    received = events[-1].ts + 1
    maker = _Records(settings, received)
    records = [*maker.make(events), maker.raw(settings.kafka.topic_clicks, "M-bad", b"{bad")]
    sink = _FailingOnce()
    processor = _processor(
        settings, MemoryState.from_settings(settings), served_registry, sink, received
    )
    with pytest.raises(OutputsNotConfirmed):
        processor.process(records)
    retried = processor.process(records)  # the worker retries the same batch
    assert (retried.applied, retried.redelivered) == (len(events), 0)
    assert sum(retried.dead_letters.values()) == 1
    # the first attempt recorded its decisions: they go out from the outbox, same ids, once
    assert retried.resent > 0
    assert sum(retried.outputs.values()) == 0
    ids = [h[HEADER_ID] for h, _ in sink.on(settings.kafka.output_topics)]
    assert len(ids) == len(set(ids)) == retried.resent
    again = processor.process(records)  # a true redelivery: the batch returned before
    assert (again.applied, again.redelivered, sum(again.dead_letters.values())) == (
        0,
        len(records),
        0,
    )


def test_an_output_the_broker_refuses_for_good_is_dead_lettered_and_the_rest_goes_on(
    settings: Settings, served_registry: Path
) -> None:
    events = _simulated(members=6, seed=5)
    received = events[-1].ts + 1
    batches = _batches(_Records(settings, received).make(events))
    recommendations = settings.kafka.topic_recommendations
    sink = ListSink(refuse_topic=recommendations)
    processor = _processor(
        settings, MemoryState.from_settings(settings), served_registry, sink, received
    )
    reports = [processor.process(batch) for batch in batches]
    refused = sum(r.outputs_refused[RECOMMENDATION] for r in reports)
    assert refused == sum(r.outputs[RECOMMENDATION] for r in reports) > 0
    letters = [letter for _, letter in sink.on([settings.kafka.topic_dlq])]
    assert len(letters) == refused
    assert {letter["reason"] for letter in letters} == {"output_refused"}
    assert {letter["topic"] for letter in letters} == {recommendations}
    for letter in letters:
        validate_record(letter, "dlq")
        assert str(letter["raw"]).startswith("recommendation:")  # the output's id
    assert sink.on(settings.kafka.output_topics)  # the other kinds went out
    assert sum(r.applied for r in reports) == len(events)
    # cleared from the outbox like a delivered output: nothing is sent again
    again = processor.process([])
    assert again.resent == 0


def test_a_worker_taking_a_partition_over_resumes_its_idle_checks_at_once(
    settings: Settings, served_registry: Path
) -> None:
    few = settings.model_copy(update={"state_idle_fetch_limit": 1})  # one check per pass
    events = _simulated(members=30, seed=6)
    received = events[-1].ts + 1
    store = MemoryState.from_settings(few)
    records = _Records(few, received).make(events)
    # Everyone's first half, then one member's second half: that member's partition runs
    # on in event time, and its quiet members fall due, more than one pass checks.
    cut = (events[0].ts + events[-1].ts) // 2
    busiest = Counter(e.member_id for e in events if e.ts >= cut).most_common(1)[0][0]
    first = [r for r, e in zip(records, events, strict=True) if e.ts < cut]
    then = [
        r for r, e in zip(records, events, strict=True) if e.ts >= cut and e.member_id == busiest
    ]
    previous = _processor(few, store, served_registry, ListSink(), received)
    previous.process(first)
    previous.process(then)
    assert store.clocks(sorted(previous.event_time)) == previous.event_time  # recorded
    # The previous owner dies (or loses the partition) before its next idle pass.
    taking_over = _processor(few, store, served_registry, ListSink(), received)  # no events
    report = taking_over.tick([then[0].partition])
    assert report.idle_checked == 1  # at once, from the recorded event time
    assert taking_over.event_time[then[0].partition] == previous.event_time[then[0].partition]


def test_bad_records_and_late_events_go_to_the_dlq_and_the_rest_is_applied(
    settings: Settings, served_registry: Path
) -> None:
    events = _simulated(members=6, seed=2)
    received = events[-1].ts + 1
    maker = _Records(settings, received)
    records = maker.make(events)
    clicks, purchases = settings.kafka.topic_clicks, settings.kafka.topic_purchases
    records.insert(10, maker.raw(clicks, "M-bad", b"{not json"))
    records.insert(20, maker.raw(purchases, "M-bad", b'{"event_id": "x1"}'))
    newest = events[-1]
    late = newest._replace(event_id="late-1", ts=newest.ts - settings.state.lateness_ms - 1)
    records += maker.make([late])
    sink = ListSink()
    processor = _processor(
        settings, MemoryState.from_settings(settings), served_registry, sink, received
    )
    reports = [processor.process(b) for b in _batches(records)]
    letters = sink.on([settings.kafka.topic_dlq])
    reasons = Counter(str(letter["reason"]) for _, letter in letters)
    assert reasons == Counter({"malformed_json": 1, "missing_field": 1, "too_late": 1})
    assert [h["reason"].decode() for h, _ in letters] == [str(o["reason"]) for _, o in letters]
    for _, letter in letters:
        validate_record(letter, "dlq")
    assert sum(r.applied for r in reports) == len(events)
    dead = sum(sum(r.dead_letters.values()) for r in reports)
    assert sum(r.applied + r.duplicates for r in reports) + dead == len(records)
