"""The state layer on a real 3-node Redis Cluster: the same results, one call per node."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from memberpulse.models.fold import fold
from memberpulse.models.snapshot import DecisionState
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.store import (
    DecisionRecord,
    RedisState,
    Reservation,
    SourcedEvent,
    keys,
)
from tests.helpers import NOW_MS, make_event

pytestmark = pytest.mark.integration

MEMBERS = ["M0000001", "a}b", "{x}", "ü" * 300, "M 2", "M0000003", "M0000004"]


def events_for(member: str, count: int, topic: str, partition: int = 1) -> list[SourcedEvent]:
    return [
        SourcedEvent(make_event(member_id=member, event_id=f"{i}", ts=NOW_MS - i * 60_000),
                     topic, partition, i)
        for i in range(count)
    ]  # fmt: skip


def test_apply_record_idle_and_budget_on_a_cluster(cluster_settings: Settings) -> None:
    store = RedisState(cluster_settings)
    topic = cluster_settings.kafka.topic_purchases
    batch = [item for member in MEMBERS for item in events_for(member, 5, topic)]
    result = store.apply(batch, NOW_MS)
    assert result.applied == len(batch)
    again = store.apply(batch, NOW_MS)
    assert (again.applied, len(again.redelivered)) == (0, len(batch))
    slots = {key_slot(k.encode()) for m in MEMBERS for k in keys.member_keys("mp", m)}
    assert len(slots) > 1, "members spread over the cluster's nodes"
    for member in MEMBERS:
        mine = [item.event for item in batch if item.event.member_id == member]
        assert result.snapshots[member] == fold(mine, NOW_MS, cluster_settings.state.spec())

    decisions = [
        DecisionRecord(m, 1, DecisionState(last_risk=0.8, next_idle_check=NOW_MS + 10),
                       {f"{m}:churn:1": b"{}"})
        for m in MEMBERS
    ]  # fmt: skip
    asks = [Reservation(f"c{i}", "coupons", 20000, 300, 1000) for i in range(5)]
    recorded = store.record(decisions, asks)
    assert sum(recorded.granted.values()) == 3
    due = store.apply([], NOW_MS + 10, idle_partitions=[1])
    assert set(due.idle_due) == set(MEMBERS)
    assert all(state.last_risk == 0.8 for state in due.decision_states.values())
    delivered = {m: [f"{m}:churn:1"] for m in MEMBERS}
    touched = store.apply(events_for(MEMBERS[0], 1, topic, 1)[:0], NOW_MS + 11, delivered)
    assert touched.pending_outbox == {}
