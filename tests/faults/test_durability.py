"""The local stack's Redis keeps what the worker relies on across a restart (issue #25, 4).

The worker's guarantees rest on three things in Redis: the per-partition offsets that make
a redelivered event a duplicate, the outbox that re-sends a crashed batch's outputs under
their ids, and the budget ledger that never grants a coupon twice. With the local
profile's append-only file they survive a restart of redis-server; without it they do not
(the second test shows what is lost, so the first can fail).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from memberpulse.models.snapshot import DecisionState
from memberpulse.streams.local import launcher, stack
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.store import DecisionRecord, RedisState, Reservation, SourcedEvent
from tests.helpers import NOW_MS, make_event

pytestmark = [pytest.mark.integration, pytest.mark.faults]

_MEMBER = "M0000001"
_OUTBOX = {f"{_MEMBER}:churn:1": b'{"risk":0.9}'}
_ASK = Reservation("coupon:M0000001:1", "coupons", 20000, 500, 1000)


def _events(settings: Settings) -> list[SourcedEvent]:
    offsets = itertools.count(100)
    return [
        SourcedEvent(
            make_event(event_id=f"e{i}", ts=NOW_MS - 1000 * i),
            settings.kafka.topic_purchases,
            0,
            next(offsets),
        )
        for i in range(5)
    ]


def _write(store: RedisState, settings: Settings) -> None:
    assert store.apply(_events(settings), NOW_MS).applied == 5
    recorded = store.record([DecisionRecord(_MEMBER, 0, DecisionState(), _OUTBOX)], [_ASK])
    assert recorded.granted == {_ASK.id: True}


def _restart(home: Settings, port: int) -> Settings:
    """Stop the stack's redis-server (SIGTERM, as `stack down` does), start it again on the
    same port and directory."""
    assert launcher.down(home) == ["redis"]
    again = home.model_copy(update={"stack_redis_port": port})
    return launcher.up(again, components=["redis"]).apply_to(again)


def _own_redis(tmp_path: Path, appendonly: bool) -> tuple[Settings, Settings, int]:
    home = Settings(home=tmp_path / "stack", stack_redis_appendonly=appendonly)
    info = launcher.up(home, components=["redis"])
    return home, info.apply_to(home), info.records[stack.REDIS].port


def test_a_restart_of_the_local_redis_keeps_offsets_outbox_and_budgets(tmp_path: Path) -> None:
    home, live, port = _own_redis(tmp_path, appendonly=True)
    try:
        _write(RedisState(live), live)
        store = RedisState(_restart(home, port))
        replayed = store.apply(_events(live), NOW_MS)
        assert (replayed.applied, len(replayed.redelivered)) == (0, 5)  # offsets kept
        assert replayed.pending_outbox == {_MEMBER: _OUTBOX}  # outbox kept
        assert replayed.snapshots[_MEMBER].total_purchases == 5
        other = Reservation("coupon:M0000002:1", "coupons", 20000, 600, 1000)
        again = store.record([], [_ASK, other])
        assert again.granted == {_ASK.id: True, other.id: False}  # 500 kept as spent
    finally:
        launcher.down(home)


def test_without_the_append_only_file_a_restart_loses_everything(tmp_path: Path) -> None:
    home, live, port = _own_redis(tmp_path, appendonly=False)
    try:
        _write(RedisState(live), live)
        store = RedisState(_restart(home, port))
        replayed = store.apply(_events(live), NOW_MS)
        assert (replayed.applied, len(replayed.redelivered)) == (5, 0)
        assert replayed.pending_outbox == {}
    finally:
        launcher.down(home)
