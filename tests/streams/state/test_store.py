"""The Redis state layer against a real Redis: equal to the reference fold, idempotent,
bounded, safe with hostile ids, one round trip per batch."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.crc import key_slot

from memberpulse.models.contract import EVENT_TYPES, Event
from memberpulse.models.errors import StateUnavailable
from memberpulse.models.fold import admit, fold
from memberpulse.models.snapshot import DecisionState
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.codec import LAYOUT_VERSION, split_value, unpack_state
from memberpulse.streams.state.store import (
    DecisionRecord,
    RedisState,
    Reservation,
    SourcedEvent,
    keys,
)
from memberpulse.streams.state.types import encode_decision
from tests.helpers import NOW_MS, make_event

pytestmark = pytest.mark.integration
_prefixes = itertools.count()
RECORD_BYTES = 10  # per sequence event, in the current layout


@pytest.fixture(scope="module")
def base(servers: Settings) -> Settings:
    return servers.model_copy(update={"redis_key_prefix": f"t{uuid.uuid4().hex[:6]}"})


def fresh(base: Settings, **changes: object) -> RedisState:
    """A store with its own key prefix, so examples cannot see each other's keys."""
    prefix = f"{base.redis.key_prefix}-{next(_prefixes)}"
    return RedisState(base.model_copy(update={"redis_key_prefix": prefix, **changes}))


def sourced(events: list[Event], settings: Settings, partition: int = 0) -> list[SourcedEvent]:
    """Events as read from Kafka: offsets increase per topic in arrival order."""
    offsets: dict[str, Iterator[int]] = {}
    out = []
    for event in events:
        topic = settings.kafka.topic_for_type(event.type)
        offset = next(offsets.setdefault(topic, itertools.count(100)))
        out.append(SourcedEvent(event, topic, partition, offset))
    return out


# --- the property: Redis equals the reference fold ------------------------------------------

GAPS_MS = st.one_of(
    st.integers(0, 1_700_000),  # within a session (the gap that ends one is 30 min)
    st.integers(1_800_001, 6 * 3_600_000),  # a new session the same day
    st.integers(MS_PER_DAY // 2, 3 * MS_PER_DAY),  # day buckets fill up
    st.integers(20 * MS_PER_DAY, 70 * MS_PER_DAY),  # a lull: windows and months roll
)
LATENESS_MS = Settings().state.lateness_ms


@st.composite
def member_streams(draw: st.DrawFn) -> tuple[list[Event], list[list[int]], int]:
    """Events of 1–3 members in arrival order, a batch plan with redeliveries, and a `now`."""
    members = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True))
    events: list[Event] = []
    ts = NOW_MS - 400 * MS_PER_DAY
    for index in range(draw(st.integers(1, 120))):
        ts += draw(GAPS_MS)
        events.append(
            Event(
                event_id=f"e{index}",
                member_id=draw(st.sampled_from(members)),
                type=draw(st.sampled_from(EVENT_TYPES)),
                item_id=f"I{draw(st.integers(0, 12))}",
                ts=ts,
                category=draw(st.sampled_from([None, "C1", "C2"])),
                price=draw(st.sampled_from([None, 0.0, 0.99, 19.99, 250.0])),
                quantity=draw(st.integers(1, 3)),
            )
        )
    # Out-of-order arrival: each event may be held back by up to the lateness bound, which
    # puts it behind later events but never more than the bound behind the newest one.
    delays = [draw(st.one_of(st.just(0), st.integers(0, LATENESS_MS))) for _ in range(len(events))]
    arrival = [e for _, e in sorted(zip(delays, events, strict=True), key=lambda p: p[1].ts + p[0])]
    # batches: random cut points; then a delivery plan where earlier batches are replayed
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=10)))
    bounds = [0, *cuts, len(arrival)]
    batches = [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]
    plan: list[list[int]] = []
    for number, batch in enumerate(batches):
        plan.append(batch)
        if number and draw(st.booleans()):
            plan.append(batches[draw(st.integers(0, number))])  # redelivery after a "crash"
    later = draw(st.sampled_from([0, 1, MS_PER_DAY // 3, 9 * MS_PER_DAY, 45 * MS_PER_DAY]))
    return arrival, plan, max(e.ts for e in arrival) + later


@given(member_streams())
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_snapshot_from_redis_equals_fold_of_distinct_events(
    base: Settings, case: tuple[list[Event], list[list[int]], int]
) -> None:
    arrival, plan, now = case
    store = fresh(base)
    delivery = sourced(arrival, base)
    applied = duplicates = 0
    for batch in plan:
        result = store.apply([delivery[i] for i in batch], now)
        applied += result.applied
        duplicates += result.duplicates + len(result.redelivered)
        assert result.too_late == []
    distinct, late = admit(arrival, base.state.lateness_ms)
    assert late == []
    assert applied == len(distinct)
    assert applied + duplicates == sum(len(batch) for batch in plan)
    snapshots = store.read({e.member_id for e in arrival}, now)
    for member, snapshot in snapshots.items():
        mine = [e for e in distinct if e.member_id == member]
        assert snapshot == fold(mine, now, base.state.spec())
    assert set(snapshots) == {e.member_id for e in arrival}


@given(member_streams())
@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_events_leaving_a_short_sequence_still_count_in_every_window(
    base: Settings, case: tuple[list[Event], list[list[int]], int]
) -> None:
    """Layout 4 counts an event in the sequence or, once it has left, in its day bucket:
    with L = 5 most events take the second path, late ones straight from the insert."""
    arrival, plan, now = case
    short = base.model_copy(update={"state_sequence_length": 5})
    store = fresh(short)
    delivery = sourced(arrival, short)
    for batch in plan:
        store.apply([delivery[i] for i in batch], now)
    distinct, _late = admit(arrival, short.state.lateness_ms)
    snapshots = store.read({e.member_id for e in arrival}, now)
    for member, snapshot in snapshots.items():
        mine = [e for e in distinct if e.member_id == member]
        assert snapshot == fold(mine, now, short.state.spec())
    assert set(snapshots) == {e.member_id for e in arrival}


def test_lowering_the_sequence_length_keeps_every_count(base: Settings) -> None:
    events = [
        make_event(event_id=f"s{i}", ts=NOW_MS - (40 - i) * 3 * 3_600_000,
                   type=EVENT_TYPES[i % len(EVENT_TYPES)], price=None)
        for i in range(40)
    ]  # fmt: skip
    delivery = sourced(events, base)
    wide = fresh(base)
    wide.apply(delivery[:30], NOW_MS)
    narrow_settings = base.model_copy(update={"redis_key_prefix": wide.prefix,
                                              "state_sequence_length": 8})  # fmt: skip
    narrow = RedisState(narrow_settings)
    spec = narrow_settings.state.spec()
    assert narrow.read(["M0000001"], NOW_MS)["M0000001"] == fold(events[:30], NOW_MS, spec)
    result = narrow.apply(delivery[30:], NOW_MS)
    assert result.snapshots["M0000001"] == fold(events, NOW_MS, spec)
    stored = stored_state(narrow, "M0000001")
    assert len(stored[4]) == 8 * RECORD_BYTES  # trimmed to the new L, the rest in day buckets


def stored_state(store: RedisState, member: str) -> list[Any]:
    """The member's state array as stored (its key's value holds the decision state too)."""
    blob = split_value(store.client.get(keys.member_keys(store.prefix, member)[0]))[0]
    assert blob is not None
    return unpack_state(blob)


# --- stored values of layouts 3 and 4 (before 2026-11-27 / -28), and of the current one
# (5) written by an earlier commit, are read and rewritten -------------------------------

FIXTURES = Path(__file__).parent / "fixtures"
OLD_LAYOUTS = {
    layout: json.loads((FIXTURES / f"state_v{layout}.json").read_text()) for layout in (3, 4, 5)
}


def old_layout_members(
    base: Settings, layout: int
) -> tuple[RedisState, dict[str, list[Event]], int]:
    """A store holding the fixture's values of `layout`, each under the state key as that
    layout wrote it, with its decision state (layouts 3 and 4: under a key of its own; 5:
    in the value already); and each member's events."""
    store = fresh(base)
    events = {}
    for member, entry in OLD_LAYOUTS[layout]["members"].items():
        state_key, decision_key, _outbox = keys.member_keys(store.prefix, member)
        store.client.set(state_key, bytes.fromhex(entry["blob"]))
        if layout < 5:
            store.client.set(decision_key, encode_decision(old_decision(member)))
        assert stored_state(store, member)[0] == layout
        events[member] = [Event(*fields) for fields in entry["events"]]
    return store, events, int(OLD_LAYOUTS[layout]["now"])


def old_decision(member: str) -> DecisionState:
    return DecisionState(last_risk=0.25, episodes={"churn": len(member)}, armed=False)


@pytest.mark.parametrize("layout", [3, 4, 5])
def test_old_layout_state_reads_as_the_fold_of_its_events(base: Settings, layout: int) -> None:
    store, events, now = old_layout_members(base, layout)
    snapshots = store.read(events, now)
    assert set(snapshots) == set(events)
    for member, snapshot in snapshots.items():
        assert snapshot == fold(events[member], now, base.state.spec())
    assert store.decisions(events) == {member: old_decision(member) for member in events}


@pytest.mark.parametrize("layout", [3, 4, 5])
def test_old_layout_state_is_rewritten_on_the_next_apply(base: Settings, layout: int) -> None:
    store, events, now = old_layout_members(base, layout)
    redelivered, fresh_events = [], []
    for number, (member, entry) in enumerate(OLD_LAYOUTS[layout]["members"].items()):
        topic, partition, offset = entry["offsets"][-1]
        redelivered.append(SourcedEvent(events[member][-1], topic, partition, offset))
        # the same event at a new offset: only its id hash, ts and item tell it apart
        redelivered.append(SourcedEvent(events[member][-1], topic, partition, 900_000 + number))
        for index in range(3):
            event = make_event(event_id=f"{member}-new{index}", member_id=member,
                               ts=now + (index + 1) * 3_600_000, item_id=f"N{index}")  # fmt: skip
            fresh_events.append(
                SourcedEvent(event, base.kafka.topic_purchases, 0, 1_000_000 + len(fresh_events))
            )
    old = OLD_LAYOUTS[layout]["members"]
    sizes = {m: len(bytes.fromhex(entry["blob"])) for m, entry in old.items()}
    later = now + 4 * 3_600_000
    result = store.apply(redelivered + fresh_events, later)
    # the first of each pair at its own offset, the second at a new one (by its id)
    assert (len(result.redelivered), result.duplicates) == (len(redelivered) // 2,) * 2
    assert result.applied == len(fresh_events)
    for member in events:
        added = [item.event for item in fresh_events if item.event.member_id == member]
        assert result.snapshots[member] == fold(events[member] + added, later, base.state.spec())
        stored = stored_state(store, member)
        assert stored[0] == LAYOUT_VERSION
        in_sequence = min(len(events[member]) + len(added), base.state.sequence_length)
        assert len(stored[4]) == in_sequence * RECORD_BYTES
        if layout < 5:  # 3 events more and the decision state, but at least 40 records
            # 7 or 9 bytes shorter each
            value = store.client.get(keys.member_keys(store.prefix, member)[0])
            assert len(value) < sizes[member]
        # the decision state moved into the state key's value, its own key is gone
        assert result.decision_states[member] == old_decision(member)
        assert member_key_names(store, member) == [
            keys.member_keys(store.prefix, member)[0].encode()
        ]
    assert store.decisions(events) == {member: old_decision(member) for member in events}
    # and the rewritten state goes on folding
    result = store.apply(fresh_events, later)
    assert (len(result.redelivered), result.applied) == (len(fresh_events), 0)


def test_record_on_an_old_layout_value_keeps_its_state_and_moves_the_decision(
    base: Settings,
) -> None:
    store, events, now = old_layout_members(base, 4)
    member = "M-a"
    newer = DecisionState(last_risk=0.75, next_idle_check=now)
    store.record([DecisionRecord(member, 0, newer, {})])
    assert member_key_names(store, member) == [keys.member_keys(store.prefix, member)[0].encode()]
    assert store.decisions([member]) == {member: newer}
    assert stored_state(store, member)[0] == 4  # the state itself is rewritten by apply
    assert store.read([member], now)[member] == fold(events[member], now, base.state.spec())
    due = store.apply([], now, idle_partitions=[0])
    assert due.decision_states[member] == newer
    assert due.idle_due[member] == fold(events[member], now, base.state.spec())


def test_a_decision_recorded_before_any_event_is_kept(base: Settings) -> None:
    store = fresh(base)
    early = DecisionState(last_risk=0.5, armed=False)
    store.record([DecisionRecord("M0000001", 0, early, {})])
    assert store.read(["M0000001"], NOW_MS) == {}
    assert store.decisions(["M0000001"]) == {"M0000001": early}
    event = make_event()
    result = store.apply(sourced([event], base), NOW_MS)
    assert result.decision_states["M0000001"] == early
    assert result.snapshots["M0000001"] == fold([event], NOW_MS, base.state.spec())


def test_a_decision_state_too_large_for_its_frame_is_refused(base: Settings) -> None:
    store = fresh(base)
    store.apply(sourced([make_event()], base), NOW_MS)
    huge = DecisionState(recommendation_fingerprint="x" * 70_000)
    with pytest.raises(redis.exceptions.ResponseError, match="at most 65535 fit"):
        store.record([DecisionRecord("M0000001", 0, huge, {})])
    assert store.decisions(["M0000001"]) == {}
    assert store.read(["M0000001"], NOW_MS)["M0000001"] == fold(
        [make_event()], NOW_MS, base.state.spec()
    )


# --- idempotence, explicitly ------------------------------------------------------------------


def test_apply_again_and_interleaved_changes_nothing(base: Settings) -> None:
    store = fresh(base)
    first = [make_event(event_id=f"a{i}", ts=NOW_MS - (50 - i) * 600_000) for i in range(20)]
    second = [make_event(event_id=f"b{i}", ts=NOW_MS - (20 - i) * 60_000) for i in range(15)]
    delivery = sourced(first + second, base)
    once = store.apply(delivery[:20], NOW_MS)
    again = store.apply(delivery[:20], NOW_MS)
    assert (once.applied, again.applied, len(again.redelivered)) == (20, 0, 20)
    assert again.snapshots == once.snapshots
    third = store.apply(delivery[10:20] + delivery[20:] + delivery[:5], NOW_MS)
    assert (third.applied, len(third.redelivered)) == (15, 15)
    assert third.snapshots["M0000001"] == fold(first + second, NOW_MS, base.state.spec())


def test_same_event_id_at_a_new_offset_is_a_duplicate(base: Settings) -> None:
    store = fresh(base)
    event = make_event()
    store.apply([SourcedEvent(event, base.kafka.topic_purchases, 0, 1)], NOW_MS)
    result = store.apply([SourcedEvent(event, base.kafka.topic_purchases, 0, 2)], NOW_MS)
    assert (result.applied, result.duplicates) == (0, 1)
    assert result.snapshots["M0000001"].total_purchases == 1


def test_too_late_events_are_returned_and_change_nothing(base: Settings) -> None:
    store = fresh(base)
    recent = make_event(event_id="new", ts=NOW_MS)
    late = make_event(event_id="old", ts=NOW_MS - base.state.lateness_ms - 1)
    edge = make_event(event_id="edge", ts=NOW_MS - base.state.lateness_ms)
    delivery = sourced([recent, late, edge], base)
    result = store.apply(delivery, NOW_MS)
    assert [item.event.event_id for item in result.too_late] == ["old"]
    assert result.applied == 2
    assert result.snapshots["M0000001"] == fold([recent, edge], NOW_MS, base.state.spec())


def test_recent_sequence_is_bounded_and_ordered(base: Settings) -> None:
    store = fresh(base, state_sequence_length=8)
    events = [make_event(event_id=f"x{i}", ts=NOW_MS - i * 1000) for i in range(30)]
    result = store.apply(sourced(events, base), NOW_MS)
    sequence = result.snapshots["M0000001"].events
    assert len(sequence) == 8
    assert list(sequence.ts) == sorted(e.ts for e in events)[-8:]


# --- keys, TTLs, hostile ids ------------------------------------------------------------------


def member_key_names(store: RedisState, member: str) -> list[bytes]:
    tag = keys.member_tag(member)
    return sorted(store.client.scan_iter(match=f"{base_prefix(store)}:{{{tag}}}:*"))


def base_prefix(store: RedisState) -> str:
    return store.prefix


def record_for(member: str, partition: int = 0, next_check: int | None = NOW_MS) -> DecisionRecord:
    return DecisionRecord(
        member, partition, DecisionState(last_risk=0.4, next_idle_check=next_check),
        {f"{member}:churn:1": b'{"risk":0.9}'},
    )  # fmt: skip


def test_every_key_has_a_ttl_and_one_hash_slot(base: Settings) -> None:
    store = fresh(base)
    store.apply(sourced([make_event()], base), NOW_MS)
    store.record([record_for("M0000001")], [Reservation("r1", "coupons", 20000, 500, 10_000)])
    names = list(store.client.scan_iter(match=f"{base_prefix(store)}:*"))
    assert len(names) == 4  # state (with the decision state), outbox, idle set, budget ledger
    for name in names:
        ttl = store.client.pttl(name)
        assert 0 < ttl <= base.state.ttl_ms, name
    member_keys = member_key_names(store, "M0000001")
    assert len(member_keys) == 2
    assert len({key_slot(name) for name in member_keys}) == 1


HOSTILE_IDS = [
    "a}b", "{", "}", "}x", "{x}", "a:b:s", "*", "mp:*", "M 1", "M\n1", "~plain", "A" * 65,
    "ü" * 1024, "M0000001}:s", "",
]  # fmt: skip


@pytest.mark.parametrize("member", [m for m in HOSTILE_IDS if m])
def test_hostile_member_ids_stay_in_their_key_space(base: Settings, member: str) -> None:
    store = fresh(base)
    plain = make_event(member_id="M0000001", event_id="p")
    odd = make_event(member_id=member, event_id="o", price=5.0)
    result = store.apply(sourced([plain, odd], base), NOW_MS)
    assert result.snapshots[member].member_id == member
    assert result.snapshots[member].total_spend_cents == 1000
    assert result.snapshots["M0000001"].total_spend_cents == 3998
    names = member_key_names(store, member)
    assert len(names) == 1
    assert len({key_slot(name) for name in names}) == 1
    all_keys = list(store.client.scan_iter(match=f"{base_prefix(store)}:*"))
    assert len(all_keys) == 2


def test_distinct_hostile_ids_never_share_keys() -> None:
    tags = {keys.member_tag(member) for member in HOSTILE_IDS if member}
    assert len(tags) == len([m for m in HOSTILE_IDS if m])
    for tag in tags:
        assert "{" not in tag
        assert "}" not in tag


# --- round trip 2: decisions, outbox, idle checks, budgets -----------------------------------


def test_record_then_apply_returns_decisions_pending_outbox_and_idle(base: Settings) -> None:
    store = fresh(base)
    store.apply(sourced([make_event()], base), NOW_MS)
    store.record([record_for("M0000001", partition=2, next_check=NOW_MS + MS_PER_DAY)])
    quiet = store.apply([], NOW_MS + 1000, idle_partitions=[2])
    assert quiet.idle_due == {}
    due = store.apply([], NOW_MS + MS_PER_DAY, idle_partitions=[2])
    assert list(due.idle_due) == ["M0000001"]
    assert due.decision_states["M0000001"].last_risk == 0.4
    assert due.idle_due["M0000001"].now == NOW_MS + MS_PER_DAY
    touched = store.apply(sourced([make_event(event_id="n")], base), NOW_MS + 5)
    assert touched.pending_outbox == {"M0000001": {"M0000001:churn:1": b'{"risk":0.9}'}}
    cleared = store.apply([], NOW_MS + 6, delivered={"M0000001": ["M0000001:churn:1"]})
    assert cleared.pending_outbox == {}


def test_budget_reservation_is_idempotent_and_never_exceeds_the_limit(base: Settings) -> None:
    store = fresh(base)
    asks = [Reservation(f"r{i}", "coupons", 20000, 400, 1000) for i in range(4)]
    result = store.record([], asks)
    assert [result.granted[r.id] for r in asks] == [True, True, False, False]
    assert max(result.spent.values()) == 800
    again = store.record([], asks)
    assert again.granted == result.granted
    store.apply([], NOW_MS, releases=[asks[0], asks[0]])
    later = store.record([], [Reservation("r9", "coupons", 20000, 600, 1000)])
    assert later.granted["r9"]
    assert later.spent["r9"] == 1000


def test_a_reservation_of_nothing_is_granted_every_time_it_is_asked(base: Settings) -> None:
    store = fresh(base)
    free = Reservation("r-free", "coupons", 20000, 0, 1000)
    full = Reservation("r-full", "coupons", 20000, 1000, 1000)
    assert store.record([], [full, free]).granted == {"r-full": True, "r-free": True}
    again = store.record([], [free])  # a crashed batch's outbox asks again
    assert (again.granted, again.spent) == ({"r-free": True}, {"r-free": 1000})


def test_partition_clocks_keep_the_largest_event_time_recorded(base: Settings) -> None:
    store = fresh(base)
    store.record([], clocks={0: NOW_MS, 1: NOW_MS - 5})
    store.record([], clocks={0: NOW_MS - 1_000})  # an earlier time never moves a clock back
    assert store.clocks([0, 1, 2]) == {0: NOW_MS, 1: NOW_MS - 5}
    assert store.clocks([]) == {}


# --- transport: one round trip, scripts reloaded, failures surfaced ---------------------------


@pytest.mark.parametrize("size", [1, 64, 512])
def test_apply_is_one_round_trip_whatever_the_batch_size(base: Settings, size: int) -> None:
    store = fresh(base)
    events = [make_event(event_id=f"r{i}", member_id=f"M{i % 97}") for i in range(size)]
    before = store.round_trips
    store.apply(sourced(events, base), NOW_MS, idle_partitions=[0, 1])
    assert store.round_trips - before == 1


def test_scripts_are_reloaded_after_a_flush(base: Settings) -> None:
    store = fresh(base)
    store.client.script_flush()
    result = store.apply(sourced([make_event()], base), NOW_MS)
    assert result.applied == 1


def test_unreachable_redis_raises_after_bounded_retries(base: Settings) -> None:
    settings = base.model_copy(
        update={"redis_retry_attempts": 3, "redis_retry_backoff_s": 0.01, "redis_timeout_s": 0.2}
    )
    from pydantic import SecretStr

    from memberpulse.streams.local.stack import free_port

    dead = settings.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}")})
    with pytest.raises(StateUnavailable, match="after 3 attempts"):
        RedisState(dead)


def test_a_member_key_holding_another_member_is_refused(base: Settings) -> None:
    store = fresh(base)
    store.apply(sourced([make_event(member_id="M1")], base), NOW_MS)
    state_key = keys.member_keys(base_prefix(store), "M1")[0]
    other = keys.member_keys(base_prefix(store), "M2")[0]
    store.client.copy(state_key, other)
    with pytest.raises(redis.ResponseError, match="another member"):
        store.apply(sourced([make_event(member_id="M2", event_id="z")], base), NOW_MS)


def test_late_event_rejoins_a_session_closed_by_the_batch_before(base: Settings) -> None:
    """An interval stays open while an admissible event could still reach it (gap + lateness)."""
    store = fresh(base)
    gap, lateness = base.state.session_gap_ms, base.state.lateness_ms
    start = NOW_MS - MS_PER_DAY
    first = make_event(event_id="y", ts=start)
    newest = make_event(event_id="w", ts=start + lateness + gap // 3)
    late = make_event(event_id="z", ts=start + 2 * gap // 3)  # same session as y
    delivery = sourced([first, newest, late], base)
    store.apply(delivery[:2], NOW_MS)
    result = store.apply(delivery[2:], NOW_MS)
    assert result.applied == 1
    expected = fold([first, newest, late], NOW_MS, base.state.spec())
    assert expected.sessions.n == 2
    assert result.snapshots["M0000001"] == expected


def test_apply_stream_gives_what_apply_gives_batch_by_batch(base: Settings) -> None:
    events = [
        make_event(event_id=f"s{i}", member_id=f"M{i % 7}", ts=NOW_MS - (300 - i) * 60_000)
        for i in range(300)
    ]
    delivery = sourced(events, base)
    batches = [
        (delivery[start : start + 37], delivery[min(start + 36, 299)].event.ts)
        for start in range(0, 300, 37)
    ]
    one_by_one = fresh(base)
    expected = [one_by_one.apply(batch, now) for batch, now in batches]
    overlapped = fresh(base)
    streamed = list(overlapped.apply_stream(batches))
    assert len(streamed) == len(expected)
    for got, want in zip(streamed, expected, strict=True):
        assert got.snapshots == want.snapshots
        assert (got.applied, got.duplicates) == (want.applied, want.duplicates)
    assert overlapped.round_trips == one_by_one.round_trips


def _many_members(count: int, members: int) -> list[Event]:
    """`count` events over `members` members, every type, some with no price or quantity 1."""
    return [
        make_event(
            event_id=f"c{i}",
            member_id=f"M{i % members}",
            type=EVENT_TYPES[i % len(EVENT_TYPES)],
            price=None if i % 3 else 5.0 + i,
            quantity=1 + i % 2,
            ts=NOW_MS - (count - i) * 3_600_000,
        )
        for i in range(count)
    ]


def test_apply_over_several_script_calls_gives_each_member_its_fold(base: Settings) -> None:
    """Snapshots are derived call by call while Redis runs the next: each must still be its
    own member's, in its own batch's order."""
    events = _many_members(200, 23)
    delivery = sourced(events, base)
    store = fresh(base, state_members_per_call=3)
    result = store.apply(delivery, NOW_MS)
    assert (result.applied, result.duplicates, store.round_trips) == (200, 0, 1)
    assert set(result.snapshots) == {f"M{i}" for i in range(23)}
    for member, snapshot in result.snapshots.items():
        mine = [e for e in events if e.member_id == member]
        assert snapshot == fold(mine, NOW_MS, base.state.spec())
    whole = fresh(base, state_members_per_call=1000)  # one call for the whole batch
    assert whole.apply(delivery, NOW_MS).snapshots == result.snapshots
    again = store.apply(delivery, NOW_MS)
    assert (again.applied, len(again.redelivered)) == (0, 200)


def test_a_reply_that_fails_to_decode_leaves_no_unread_replies_behind(
    base: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoding error part-way through a batch raises and drops the connection, whose
    later replies are unread: the next round trip gets its own replies, not those. (Calls
    Redis had not run yet when the connection closed are dropped with it: the re-sent
    batch applies those and finds the rest duplicates.)"""
    events = _many_members(60, 12)
    delivery = sourced(events, base)
    store = fresh(base, state_members_per_call=2)
    derive = store._snapshot
    calls = itertools.count()

    def failing_once(*args: Any) -> Any:
        if next(calls) == 1:
            raise StateUnavailable("cannot read this member")
        return derive(*args)

    monkeypatch.setattr(store, "_snapshot", failing_once)
    with pytest.raises(StateUnavailable, match="cannot read"):
        store.apply(delivery, NOW_MS)
    redelivered = store.apply(delivery, NOW_MS)
    assert redelivered.applied + len(redelivered.redelivered) == 60
    assert (
        len(redelivered.redelivered) >= 2 * 5
    )  # at least the first call's members' (5 events each)
    assert set(redelivered.snapshots) == {f"M{i}" for i in range(12)}
    for member, snapshot in redelivered.snapshots.items():
        mine = [e for e in events if e.member_id == member]
        assert snapshot == fold(mine, NOW_MS, base.state.spec())
    assert store.client.ping()


def test_redis_going_away_mid_stream_raises_and_reports_nothing_applied(tmp_path: Path) -> None:
    from memberpulse.streams.local import launcher

    home = Settings(home=tmp_path / "own-redis", redis_retry_attempts=2,
                    redis_retry_backoff_s=0.01, redis_timeout_s=0.5)  # fmt: skip
    info = launcher.up(home, components=["redis"])
    try:
        store = RedisState(info.apply_to(home))
        first = store.apply(sourced([make_event(event_id="a")], home), NOW_MS)
        assert first.applied == 1
    finally:
        launcher.down(home)
    with pytest.raises(StateUnavailable, match="after 2 attempts"):
        store.apply(sourced([make_event(event_id="b")], home), NOW_MS)
