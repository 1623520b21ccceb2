"""The batch path against the real broker, real Redis and a real ONNX model (no Faust)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from memberpulse.models import explain
from memberpulse.models.contract import Event, encode_event
from memberpulse.models.errors import OutputsNotConfirmed, PoisonLimit, StateUnavailable
from memberpulse.models.features import FeatureBatch, FeatureSpec, _encoder
from memberpulse.models.snapshot import day_of
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.decisions import (
    CHURN,
    COUPON,
    IDLE_CHECK,
    RECOMMENDATION,
    TIER,
    Policy,
)
from memberpulse.streams.decisions.coupons import load_rules
from memberpulse.streams.serving.registry import ModelHolder, Registry, check
from memberpulse.streams.serving.scorer import Scorer, Scores
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.state.client import make_redis
from memberpulse.streams.state.store import RedisState, keys
from memberpulse.streams.worker.kafka import read_from_start
from memberpulse.streams.worker.processor import BatchProcessor
from memberpulse.streams.worker.records import InRecord, Refused
from memberpulse.streams.worker.sink import KafkaSink
from tests.helpers import validate_record, wait_until

pytestmark = pytest.mark.integration

MEMBERS = 40
BATCH = 256


def _processor(settings: Settings, registry: Path, sink: object | None = None) -> BatchProcessor:
    policy = Policy.from_settings(settings.decisions, load_rules(settings.decisions.coupon_rules))
    return BatchProcessor(
        settings,
        RedisState(settings),
        ModelHolder(Registry(registry)),
        sink or KafkaSink(settings.kafka),  # type: ignore[arg-type]
        policy,
    )


class _Records:
    """Input records as a broker would hand them out: per-partition offsets, keyed."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._offsets: Counter[tuple[str, int]] = Counter()

    def make(self, events: Iterable[Event], received_ms: int) -> list[InRecord]:
        records = []
        for event in events:
            records.append(
                self.raw(
                    self._settings.kafka.topic_for_type(event.type),
                    event.member_id,
                    encode_event(event),
                    received_ms,
                )
            )
        return records

    def raw(self, topic: str, member: str, value: bytes, received_ms: int) -> InRecord:
        partition = zlib.crc32(member.encode()) % self._settings.kafka.input_partitions
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] += 1
        return InRecord(topic, partition, offset, member.encode(), value, received_ms)


def _events(members: int = MEMBERS, days: int = 60, seed: int = 9) -> list[Event]:
    return list(Simulator(SimConfig(members=members, days=days, seed=seed)).iter_events())


def _batches(records: Sequence[InRecord], size: int = BATCH) -> list[Sequence[InRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def _outputs(settings: Settings) -> list[dict[str, object]]:
    messages = read_from_start(settings.kafka, settings.kafka.output_topics)
    return [orjson.loads(m.value()) for m in messages]


def _dead_letters(settings: Settings) -> list[dict[str, object]]:
    return [
        orjson.loads(m.value()) for m in read_from_start(settings.kafka, [settings.kafka.topic_dlq])
    ]


def test_batches_flow_to_outputs_and_every_event_is_accounted_for(
    isolated: Settings, served_registry: Path
) -> None:
    events = _events()
    maker = _Records(isolated)
    received = events[-1].ts + 1
    records = maker.make(events, received)
    records.insert(100, maker.raw(isolated.kafka.topic_clicks, "M-bad", b"{not json", received))
    records.insert(
        300, maker.raw(isolated.kafka.topic_purchases, "M-bad", b'{"event_id":1}', received)
    )
    processor = _processor(isolated, served_registry)
    reports = [processor.process(batch) for batch in _batches(records)]

    applied = sum(r.applied for r in reports)
    duplicates = sum(r.duplicates for r in reports)
    dead = sum(sum(r.dead_letters.values()) for r in reports)
    assert applied + duplicates + dead == len(records)  # conservation
    assert dead >= 2
    assert all(r.round_trips == 2 for r in reports)  # apply + record, whatever the batch

    outputs = _outputs(isolated)
    ids = [o["id"] for o in outputs]
    assert len(ids) == len(set(ids))  # one record per decision
    assert sum(sum(r.outputs.values()) for r in reports) == len(outputs)
    kinds = Counter(o["kind"] for o in outputs)
    assert kinds[TIER] >= MEMBERS  # every member's first projection
    assert kinds[RECOMMENDATION] >= MEMBERS
    version = Registry(served_registry).current()
    assert {o["model_version"] for o in outputs} == {version}

    # a recommendation never holds an item the member bought within the exclusion span:
    # the last `exclusion_days` calendar days (UTC), today included, as the state keeps it
    # (a rolling 30 × 24 h window would also count part of the day before the first)
    span = isolated.state.exclusion_days
    for rec in (o for o in outputs if o["kind"] == RECOMMENDATION):
        now = rec["event_time"]
        bought = {
            e.item_id
            for e in events
            if e.member_id == rec["member_id"]
            and e.type == "purchase"
            and day_of(now) - span < day_of(e.ts)
            and e.ts <= now
        }
        listed = {item["item_id"] for item in rec["items"]}  # type: ignore[attr-defined]
        assert not listed & bought, (rec["member_id"], listed & bought)

    for record in outputs:
        validate_record(record)
    letters = _dead_letters(isolated)
    for letter in letters:
        validate_record(letter, "dlq")
    assert Counter(d["reason"] for d in letters) == Counter(
        {"malformed_json": 1, "missing_field": 1}
    )


def test_a_redelivered_batch_changes_nothing_and_emits_no_new_decision(
    isolated: Settings, served_registry: Path
) -> None:
    events = _events(members=10, seed=4)
    records = _Records(isolated).make(events, events[-1].ts + 1)
    first = _processor(isolated, served_registry)
    for batch in _batches(records):
        first.process(batch)
    before = _outputs(isolated)
    again = _processor(isolated, served_registry)  # a restarted worker gets it all again
    reports = [again.process(batch) for batch in _batches(records)]
    assert sum(r.applied for r in reports) == 0
    assert sum(r.redelivered for r in reports) == len(records)
    assert sum(sum(r.outputs.values()) for r in reports) == 0
    after = _outputs(isolated)
    # The last batch's outbox was never cleared (that rides on the next round trip 1,
    # which the first worker never made): it is produced again, same ids, and counted.
    assert {o["id"] for o in after} == {o["id"] for o in before}
    assert len(after) - len(before) == sum(r.resent for r in reports)


class _CrashAfterRecord:
    """A real sink whose first flush dies as a crashed worker would: records were queued
    (some may reach the broker), nothing was confirmed, nothing may be acknowledged.
    """

    def __init__(self, settings: Settings) -> None:
        self.inner = KafkaSink(settings.kafka)
        self.crashed = False

    def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.inner.produce(topic, key, value, headers)

    def flush(self) -> Sequence[Refused]:
        if not self.crashed:
            self.crashed = True
            raise OutputsNotConfirmed("killed before the delivery reports came back")
        return self.inner.flush()


def test_a_crash_between_record_and_confirm_loses_no_decision_and_keeps_its_id(
    isolated: Settings, served_registry: Path
) -> None:
    events = _events(members=12, seed=6)
    records = _Records(isolated).make(events, events[-1].ts + 1)
    batch = records[:BATCH]
    crashing = _processor(isolated, served_registry, _CrashAfterRecord(isolated))
    with pytest.raises(OutputsNotConfirmed):
        crashing.process(batch)
    store = RedisState(isolated)
    members = {r.key.decode() for r in batch if r.key}
    decided = {
        ident.decode()
        for m in members
        for ident in store.client.hkeys(keys.member_keys(isolated.redis.key_prefix, m)[2])
    }
    assert decided  # the decisions are in the outbox, written with the state

    restarted = _processor(isolated, served_registry)
    report = restarted.process(batch)  # the unacknowledged batch comes again
    assert report.applied == 0
    assert report.resent == len(decided)
    assert sum(report.outputs.values()) == 0  # nothing decided twice under a new id
    for later in _batches(records[BATCH:]):
        restarted.process(later)
    ids = Counter(o["id"] for o in _outputs(isolated))
    assert decided <= set(ids)
    # repeats carry the same id; no decision exists under two ids
    assert all(n <= 2 for n in ids.values())


def test_a_member_who_goes_silent_gets_one_churn_alert_from_the_idle_check(
    isolated: Settings, served_registry: Path
) -> None:
    # The session's small model squeezes risks into a narrow band (measured with feature
    # schema v2: the loyal member ends at 0.10, the silent one at 0.18 after 60 quiet
    # days), so the thresholds sit inside that band here.
    settings = isolated.model_copy(
        update={"churn_alert_threshold": 0.15, "churn_rearm_threshold": 0.12}
    )
    events = _events(members=30, days=90, seed=12)
    last_ts = events[-1].ts
    quiet_from = last_ts - 60 * MS_PER_DAY
    before = Counter(e.member_id for e in events if e.type == "purchase" and e.ts < quiet_from)
    silent = before.most_common(1)[0][0]  # a regular buyer who then stops completely
    recent = Counter(
        e.member_id for e in events if e.type == "purchase" and e.ts >= last_ts - 7 * MS_PER_DAY
    )
    live_buys = Counter(e.member_id for e in events if e.type == "purchase" and e.ts >= quiet_from)
    loyal = max(  # buys most often through the live span and bought in its last week
        (m for m in live_buys if recent[m] and m != silent), key=lambda m: live_buys[m]
    )
    kept = [e for e in events if e.member_id != silent or e.ts < quiet_from]
    records = _Records(settings).make(kept, last_ts + 1)
    # History first, without churn alerts (a small model flags every new member), then
    # the last 60 days with them: what a worker going live on an existing base does.
    history = [r for r, e in zip(records, kept, strict=True) if e.ts < quiet_from]
    live = records[len(history) :]
    quiet = settings.model_copy(
        update={"churn_alert_threshold": 0.999, "churn_rearm_threshold": 0.99}
    )
    warm_up = _processor(quiet, served_registry)
    for batch in _batches(history):
        warm_up.process(batch)
    processor = _processor(settings, served_registry)
    reports = [processor.process(batch) for batch in _batches(live)]
    for _ in range(3):  # more idle passes at the same event time change nothing
        reports.append(processor.tick(range(settings.kafka.input_partitions)))
    outputs = _outputs(settings)
    alerts = [o for o in outputs if o["kind"] == CHURN and o["member_id"] == silent]
    assert sum(r.idle_checked for r in reports) >= 1
    assert len(alerts) == 1, alerts
    assert alerts[0]["trigger"] == IDLE_CHECK
    assert alerts[0]["event_time"] > quiet_from
    every_alert = [o for o in outputs if o["kind"] == CHURN]
    for alert in every_alert:  # each carries the model's own reasons, never none
        assert alert["reasons"]
        assert set(alert["reasons"]) <= set(explain.CODES)
        assert list(alert["reason_effects"]) == alert["reasons"]
    loyal_alerts = [o for o in outputs if o["kind"] == CHURN and o["member_id"] == loyal]
    # The idle check never fires for a member who keeps buying; whether an event of theirs
    # crosses the threshold is the tiny model's call (its threshold is a quantile of its
    # own held-out risks), but never above the silent member's risk.
    assert not [a for a in loyal_alerts if a["trigger"] == IDLE_CHECK], loyal_alerts
    assert all(a["risk"] < alerts[0]["risk"] for a in loyal_alerts), (loyal_alerts, alerts)


def test_recommendations_change_after_purchases_and_leave_out_what_was_bought(
    isolated: Settings, served_registry: Path
) -> None:
    events = _events(members=12, seed=15)
    maker = _Records(isolated)
    processor = _processor(isolated, served_registry)
    for batch in _batches(maker.make(events, events[-1].ts + 1)):
        processor.process(batch)
    latest: dict[str, dict[str, object]] = {}
    for rec in (o for o in _outputs(isolated) if o["kind"] == RECOMMENDATION):
        member = str(rec["member_id"])
        if member not in latest or rec["event_time"] > latest[member]["event_time"]:  # type: ignore[operator]
            latest[member] = rec
    member, before = max(latest.items(), key=lambda kv: kv[1]["event_time"])  # type: ignore[arg-type, return-value]
    head = [item["item_id"] for item in before["items"][: isolated.decisions.rec_material_top]]  # type: ignore[index]

    # The member buys the head of their list, past the rate limit's interval.
    later = events[-1].ts + round(2 * isolated.decisions.rec_min_interval_minutes * 60_000)
    buys = [
        Event(f"buy-{k}", member, "purchase", str(item), later + k * 1_000, price=10.0)
        for k, item in enumerate(head)
    ]
    processor.process(maker.make(buys, later + 10_000))
    after = [
        o
        for o in _outputs(isolated)
        if o["kind"] == RECOMMENDATION and o["member_id"] == member and o["event_time"] >= later
    ]
    assert len(after) == 1, after  # one update for the batch, not one per purchase
    listed = [item["item_id"] for item in after[0]["items"]]  # type: ignore[attr-defined]
    assert not set(listed) & set(head)  # just bought: left out of the list
    assert listed[: len(head)] != head
    assert after[0]["excluded_recent_purchases"] >= len(head)


_COUPON_RULES = """
cooldown_days = 3
holdout_share = 0.25
holdout_salt = "test-salt"
[budget]
name = "coupons"
daily_limit = 30.0
[[value_tiers]]
name = "flat"
min_expected_spend = 0
value = 10.0
[[rules]]
name = "everyone"
when = [{ signal = "expected_spend", op = ">=", value = 0 }]
"""


def test_coupons_respect_the_daily_budget_the_cooldown_and_the_holdout(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(_COUPON_RULES)  # every member wants one: budget and cooldown bind
    settings = isolated.model_copy(update={"coupon_rules": rules_file})
    rules = load_rules(rules_file)
    events = _events(members=30, days=30, seed=21)
    processor = _processor(settings, served_registry)
    for batch in _batches(_Records(settings).make(events, events[-1].ts + 1)):
        processor.process(batch)
    coupons = [o for o in _outputs(settings) if o["kind"] == COUPON]
    assert coupons

    spent: Counter[object] = Counter()
    by_member: dict[str, list[int]] = {}
    for coupon in coupons:
        holdout = rules.in_holdout(str(coupon["member_id"]))
        assert coupon["holdout"] is holdout
        if holdout:
            assert coupon["value"] is None  # a holdout record: no coupon, no budget
        else:
            spent[coupon["budget_day"]] += round(float(coupon["value"]) * 100)  # type: ignore[arg-type]
        by_member.setdefault(str(coupon["member_id"]), []).append(int(coupon["event_time"]))  # type: ignore[call-overload]
    limit = round(rules.budget.daily_limit * 100)
    assert max(spent.values()) == limit  # the budget binds and is never exceeded
    assert all(cents <= limit for cents in spent.values())
    assert any(c["holdout"] for c in coupons)
    cooldown = rules.cooldown_days * MS_PER_DAY
    for times in by_member.values():
        times.sort()
        assert all(b - a >= cooldown for a, b in itertools.pairwise(times)), times


def test_a_tier_forecast_is_emitted_when_spend_crosses_a_floor_and_only_then(
    isolated: Settings, served_registry: Path
) -> None:
    member, start = "M-tier", 1_780_000_000_000
    top = isolated.decisions.tier_names[-1]
    floor = isolated.decisions.tier_min_spend[-1]
    maker = _Records(isolated)
    processor = _processor(isolated, served_registry)
    small = [Event("t-1", member, "purchase", "I-1", start, price=1.0)]
    processor.process(maker.make(small, start + 1))
    big = [Event("t-2", member, "purchase", "I-2", start + MS_PER_DAY, price=floor + 1.0)]
    processor.process(maker.make(big, start + MS_PER_DAY + 1))
    browse = [Event("t-3", member, "browse", "I-3", start + 2 * MS_PER_DAY)]
    processor.process(maker.make(browse, start + 2 * MS_PER_DAY + 1))

    tiers = sorted(
        (o for o in _outputs(isolated) if o["kind"] == TIER),
        key=lambda o: o["event_time"],  # type: ignore[arg-type, return-value]
    )
    assert [t["event_time"] for t in tiers][-1] == start + MS_PER_DAY  # none for the browse
    first, crossed = tiers[0], tiers[-1]
    assert first["projected_tier"] != top  # a one-unit purchase is no top-tier member
    assert crossed["current_tier"] == top
    assert crossed["projected_tier"] == top
    assert len(tiers) == 2  # the first projection, then the crossing
    assert crossed["previous_projected_tier"] == first["projected_tier"]
    assert crossed["trailing_12m_spend"] == floor + 2.0
    assert crossed["partial_history"] is True  # two days of tenure
    for record in tiers:
        validate_record(record)


class _RivalSpendsTheBudget:
    """The real state store, with another worker spending every day's budget between
    this worker's two round trips: every coupon decided here is refused at reservation.
    """

    def __init__(self, settings: Settings, budget: str, limit_cents: int) -> None:
        self.inner = RedisState(settings)
        self._settings, self._budget, self._limit = settings, budget, limit_cents

    @property
    def round_trips(self) -> int:
        return self.inner.round_trips

    def apply(self, events: Sequence[Event], now: int, **kwargs: object) -> object:
        result = self.inner.apply(events, now, **kwargs)  # type: ignore[arg-type]
        for day in {day_of(ts) for ts in result.now.values()}:
            ledger = keys.budget_key(self._settings.redis.key_prefix, self._budget, day)
            self.inner.client.hset(ledger, "spent", self._limit)
        return result

    def record(self, *args: object) -> object:
        return self.inner.record(*args)  # type: ignore[arg-type]


def test_a_coupon_refused_at_reservation_is_never_sent_even_after_a_crash(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(_COUPON_RULES.replace("daily_limit = 30.0", "daily_limit = 1000.0"))
    settings = isolated.model_copy(update={"coupon_rules": rules_file})
    rules = load_rules(rules_file)
    limit = round(rules.budget.daily_limit * 100)
    events = _events(members=12, seed=8)
    batch = _Records(settings).make(events, events[-1].ts + 1)[:BATCH]
    policy = Policy.from_settings(settings.decisions, rules)
    rival = _RivalSpendsTheBudget(settings, rules.budget.name, limit)
    crashing = BatchProcessor(
        settings, rival, ModelHolder(Registry(served_registry)), _CrashAfterRecord(settings), policy
    )  # type: ignore[arg-type]
    with pytest.raises(OutputsNotConfirmed):
        crashing.process(batch)
    store = RedisState(settings)
    members = {r.key.decode() for r in batch if r.key}
    pending = [
        orjson.loads(value)
        for m in members
        for value in store.client.hvals(keys.member_keys(settings.redis.key_prefix, m)[2])
    ]
    refused = [p for p in pending if p["kind"] == COUPON and not p["holdout"]]
    assert refused  # coupons were decided, then refused at reservation, and left pending

    restarted = _processor(settings, served_registry)
    report = restarted.process(batch)
    assert report.coupons_refused == len(refused)
    sent = [o for o in _outputs(settings) if o["kind"] == COUPON and not o["holdout"]]
    assert {o["id"] for o in sent}.isdisjoint(p["id"] for p in refused)
    for day in {p["budget_day"] for p in refused}:
        ledger = keys.budget_key(settings.redis.key_prefix, rules.budget.name, day)
        assert int(store.client.hget(ledger, "spent")) == limit  # the rival's, not exceeded


# --- poison: failures specific to some members -------------------------------------------------


def _corrupt(settings: Settings, members: Iterable[str]) -> None:
    """Overwrite members' stored state with bytes no layout reads (what a bad migration or
    a foreign writer under our prefix would leave)."""
    client = RedisState(settings).client
    for member in members:
        client.set(keys.member_keys(settings.redis.key_prefix, member)[0], b"\xc1not msgpack")


def test_a_member_whose_state_does_not_decode_is_dead_lettered_and_the_rest_processed(
    isolated: Settings, served_registry: Path
) -> None:
    events = _events(members=12, days=30, seed=13)
    members = sorted({e.member_id for e in events})
    poisoned = members[5]
    _corrupt(isolated, [poisoned])
    records = _Records(isolated).make(events, events[-1].ts + 1)
    report = _processor(isolated, served_registry).process(records)
    mine = sum(e.member_id == poisoned for e in events)
    assert report.dead_letters == Counter({"processing_failed": mine})
    assert report.applied == len(events) - mine  # every other member's events, once
    letters = _dead_letters(isolated)
    assert {(d["reason"], d["key"]) for d in letters} == {("processing_failed", poisoned)}
    assert "StateCorrupt: decision state does not decode" in str(letters[0]["message"])
    for letter in letters:
        validate_record(letter, "dlq")
    outputs = _outputs(isolated)
    assert poisoned not in {o["member_id"] for o in outputs}
    assert {o["member_id"] for o in outputs} >= set(members) - {poisoned}


_MEGABYTE = 1_000_000  # librdkafka's default message.max.bytes, the DLQ producer's limit


def test_megabyte_inputs_are_dead_lettered_with_their_head_and_the_batch_moves_on(
    isolated: Settings, served_registry: Path
) -> None:
    # What a broker with Kafka's default 1 MiB record limit can deliver: a 1 MB member id,
    # and a 1 MB key of control characters (JSON writes each as six bytes). Carried whole,
    # either dead letter is over the DLQ producer's limit, is refused, and the batch is
    # retried for ever: the partition would never move again.
    events = _events(members=8, days=20, seed=21)
    maker = _Records(isolated)
    received = events[-1].ts + 1
    records = maker.make(events, received)
    huge_id = "M" * _MEGABYTE
    wire = events[0].to_wire() | {"member_id": huge_id}
    records.insert(3, maker.raw(isolated.kafka.topic_clicks, huge_id, orjson.dumps(wire), received))
    control_key = b"\x01" * _MEGABYTE
    small = encode_event(events[1]._replace(event_id="keyed-badly"))
    records.insert(7, InRecord(isolated.kafka.topic_clicks, 0, 10**6, control_key, small, received))
    report = _processor(isolated, served_registry).process(records)
    assert report.dead_letters == Counter({"oversize": 1, "key_mismatch": 1})
    assert report.applied == len(events)
    letters = list(read_from_start(isolated.kafka, [isolated.kafka.topic_dlq]))
    assert len(letters) == 2
    cap = isolated.worker.dead_letter_max_bytes
    by_reason: dict[str, dict[str, object]] = {}
    for message in letters:
        assert len(message.value()) + len(message.key() or b"") < _MEGABYTE
        letter = orjson.loads(message.value())
        validate_record(letter, "dlq")
        by_reason[letter["reason"]] = letter
    oversize = by_reason["oversize"]
    assert oversize["raw_truncated"] is True
    assert oversize["raw_bytes"] == len(orjson.dumps(wire))
    assert orjson.dumps(wire).decode().startswith(oversize["raw"])
    assert len(oversize["raw"].encode()) == cap
    assert (oversize["key_bytes"], oversize["key"]) == (_MEGABYTE, "M" * cap)
    mismatch = by_reason["key_mismatch"]
    assert "raw_truncated" not in mismatch  # a small payload is carried whole
    assert orjson.loads(mismatch["raw"])["event_id"] == "keyed-badly"
    assert (mismatch["key_bytes"], mismatch["key"]) == (_MEGABYTE, "\x01" * cap)


class _PoisonedScorer:
    """A real scorer that fails on the rows holding one item: raises, or answers NaN churn
    or NaN recommendation scores (what a numerically broken model or a faulty kernel does
    to some inputs)."""

    def __init__(self, scorer: Scorer, token: int, mode: str) -> None:
        self._scorer, self._token, self._mode = scorer, token, mode
        self.poisoned_calls = 0

    def score(self, batch: FeatureBatch, exclude: object = None) -> Scores:
        hit = (batch.items == self._token).any(axis=1)
        out = self._scorer.score(batch, exclude)  # type: ignore[arg-type]
        if not hit.any():
            return out
        self.poisoned_calls += 1
        if self._mode == "raise":
            raise RuntimeError(f"scorer fault on {int(hit.sum())} rows")
        field = "churn" if self._mode == "nan" else "top_scores"
        values = getattr(out, field).copy()
        values[hit] = np.nan
        return dataclasses.replace(out, **{field: values})

    def __getattr__(self, name: str) -> object:
        return getattr(self._scorer, name)


@pytest.mark.parametrize("fault", ["raise", "nan", "nan_top_scores"])
def test_a_member_the_scorer_fails_on_is_dead_lettered_and_the_rest_processed(
    isolated: Settings, served_registry: Path, fault: str
) -> None:
    events = _events(members=12, days=30, seed=13)
    members = sorted({e.member_id for e in events})
    poisoned = members[7]
    registry = Registry(served_registry)
    _path, spec, _card = check(registry, str(registry.current()))
    marker, other = spec.items[0], spec.items[1]

    # The poisoned member's events all name `marker`; nobody else's do.
    def relabel(e: Event) -> Event:
        if e.member_id == poisoned:
            return e._replace(item_id=marker)
        return e._replace(item_id=other) if e.item_id == marker else e

    events = [relabel(e) for e in events]
    token = _encoder(spec).item_id(marker)
    scorers: list[_PoisonedScorer] = []

    def make(path: Path, model_spec: FeatureSpec) -> Scorer:
        scorers.append(_PoisonedScorer(Scorer(path, model_spec), token, fault))
        return scorers[-1]  # type: ignore[return-value]

    policy = Policy.from_settings(isolated.decisions, load_rules(isolated.decisions.coupon_rules))
    processor = BatchProcessor(
        isolated,
        RedisState(isolated),
        ModelHolder(Registry(served_registry), make_scorer=make),
        KafkaSink(isolated.kafka),
        policy,
    )
    records = _Records(isolated).make(events, events[-1].ts + 1)
    report = processor.process(records)
    assert scorers
    assert scorers[-1].poisoned_calls >= 2  # the whole batch, then the member alone
    mine = sum(e.member_id == poisoned for e in events)
    assert report.dead_letters == Counter({"processing_failed": mine})
    assert report.applied == len(events) - mine
    letters = _dead_letters(isolated)
    assert {(d["reason"], d["key"]) for d in letters} == {("processing_failed", poisoned)}
    expected = "RuntimeError: scorer fault" if fault == "raise" else "non-finite scores"
    assert expected in str(letters[0]["message"])
    outputs = _outputs(isolated)
    assert poisoned not in {o["member_id"] for o in outputs}
    assert {o["member_id"] for o in outputs} >= set(members) - {poisoned}
    for output in outputs:  # no NaN reached a consumer
        assert all(math.isfinite(v) for v in output.values() if isinstance(v, float))


_PAUSE_MS = 2_000  # CLIENT PAUSE: past the processor's 2 × 0.3 s Redis attempts


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def test_a_poison_batch_retried_after_a_redis_stall_counts_each_event_once(
    isolated: Settings, served_registry: Path
) -> None:
    # The batch is split to find the member the scorer fails on; after the first half went
    # through, Redis stops answering (CLIENT PAUSE, for real), the next half's apply fails
    # transiently and the whole batch is retried. The first half's counts must not be
    # published twice (they were before: applied, outputs, DLQ counted on both attempts).
    settings = isolated.model_copy(
        update={"redis_timeout_s": 0.3, "redis_retry_attempts": 2, "redis_retry_backoff_s": 0.05}
    )
    events = _events(members=12, days=30, seed=13)
    members = sorted({e.member_id for e in events})
    poisoned = members[9]  # in the second half: the first one is processed before the stall
    registry = Registry(served_registry)
    _path, spec, _card = check(registry, str(registry.current()))
    marker, other = spec.items[0], spec.items[1]

    def relabel(e: Event) -> Event:
        if e.member_id == poisoned:
            return e._replace(item_id=marker)
        return e._replace(item_id=other) if e.item_id == marker else e

    events = [relabel(e) for e in events]
    token = _encoder(spec).item_id(marker)
    admin = make_redis(settings.redis)
    paused: list[bool] = []

    class _StallingScorer(_PoisonedScorer):
        def score(self, batch: FeatureBatch, exclude: object = None) -> Scores:
            if (batch.items == token).any() and self.poisoned_calls == 1 and not paused:
                admin.execute_command("CLIENT PAUSE", _PAUSE_MS, "ALL")  # the second half
                paused.append(True)
            return super().score(batch, exclude)

    def make(path: Path, model_spec: FeatureSpec) -> Scorer:
        return _StallingScorer(Scorer(path, model_spec), token, "raise")  # type: ignore[return-value]

    policy = Policy.from_settings(settings.decisions, load_rules(settings.decisions.coupon_rules))
    processor = BatchProcessor(
        settings,
        RedisState(settings),
        ModelHolder(Registry(served_registry), make_scorer=make),
        KafkaSink(settings.kafka),
        policy,
    )
    records = _Records(settings).make(events, events[-1].ts + 1)
    names = ("memberpulse_events_applied_total", "memberpulse_duplicates_total")
    before = {n: _sample(n) for n in names}
    dlq_before = _sample("memberpulse_dlq_total", reason="processing_failed")
    with pytest.raises(StateUnavailable):
        processor.process(records)
    assert paused  # the stall came while the batch was being split

    def answering() -> bool:
        try:
            return bool(admin.ping())
        except redis.RedisError:
            return False

    wait_until(answering, timeout=30, interval=0.1, what="redis answering again")
    report = processor.process(records)  # the retry
    mine = sum(e.member_id == poisoned for e in events)
    assert report.applied == len(events) - mine
    assert _sample(names[0]) - before[names[0]] == len(events) - mine
    assert _sample(names[1]) - before[names[1]] == 0
    dlq = _sample("memberpulse_dlq_total", reason="processing_failed") - dlq_before
    assert dlq == mine
    assert len(_dead_letters(settings)) == mine


def test_more_members_failing_than_a_data_fault_explains_stops_the_batch(
    isolated: Settings, served_registry: Path
) -> None:
    events = _events(members=12, days=30, seed=13)
    _corrupt(isolated, sorted({e.member_id for e in events})[:2])  # 1% of 12: one may fail
    records = _Records(isolated).make(events, events[-1].ts + 1)
    with pytest.raises(PoisonLimit, match="2 of 12 members of a batch failed one by one"):
        _processor(isolated, served_registry).process(records)
    assert _dead_letters(isolated) == []  # nothing blamed on the data
