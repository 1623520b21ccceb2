"""Redis with AUTH and an ACL user restricted to MemberPulse's key prefix and the commands
it uses, on a real redis-server (issue #25, 3): the worker works with that user, and the
user cannot touch anything else."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from memberpulse.models.errors import ConfigError
from memberpulse.models.snapshot import DecisionState
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.store import DecisionRecord, RedisState, Reservation, SourcedEvent
from tests.faults.harness import (
    OwnRedis,
    SteadyLoad,
    check_conservation,
    committed_all,
    fault_settings,
    member_events,
    running_worker,
    timed,
)
from tests.helpers import NOW_MS, make_event

pytestmark = pytest.mark.integration

_USER, _PASSWORD, _ADMIN_PASSWORD = "mpworker", "w0rker-s3cret-7f2a", "adm1n-s3cret-91c4"
#: Every command the state layer, the registry and the client send (scripts included:
#: Redis checks what a script calls against the user's rules too).
_COMMANDS = (
    "evalsha script|load get set del hget hset hdel hgetall hlen hincrby pexpire zadd zrem "
    "zrangebyscore zmscore ping"
)


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[OwnRedis, str]]:
    """A redis-server whose default user needs a password, with a MemberPulse user that
    may use only its prefix and its commands; (server, prefix)."""
    server = OwnRedis.start(Settings(home=tmp_path / "redis-home", stack_stop_grace_s=1.0))
    prefix = "mpacl"
    admin = redis.Redis.from_url(server.url())
    admin.execute_command(
        "ACL", "SETUSER", _USER, "on", f">{_PASSWORD}", "resetkeys", f"~{prefix}:*",
        "resetchannels", "-@all", *(f"+{c}" for c in _COMMANDS.split()),
    )  # fmt: skip
    admin.config_set("requirepass", _ADMIN_PASSWORD)
    admin.close()
    try:
        yield server, prefix
    finally:
        redis.Redis.from_url(server.url(), password=_ADMIN_PASSWORD).execute_command(
            "CONFIG", "SET", "requirepass", ""
        )
        server.stop()


def _user_settings(server: OwnRedis, prefix: str, **extra: object) -> Settings:
    return Settings(
        redis_url=SecretStr(server.url()),
        redis_username=_USER,
        redis_password=SecretStr(_PASSWORD),
        redis_key_prefix=prefix,
        **extra,  # type: ignore[arg-type]
    )


def test_the_acl_user_runs_the_state_layer_and_can_touch_nothing_else(
    locked: tuple[OwnRedis, str],
) -> None:
    server, prefix = locked
    settings = _user_settings(server, prefix)
    store = RedisState(settings)
    offsets = itertools.count(1)
    events = [
        SourcedEvent(make_event(event_id=f"e{i}"), settings.kafka.topic_purchases, 0, next(offsets))
        for i in range(3)
    ]
    assert store.apply(events, NOW_MS, idle_partitions=[0]).applied == 3
    recorded = store.record(
        [DecisionRecord("M0000001", 0, DecisionState(next_idle_check=NOW_MS), {"x:M:1": b"{}"})],
        [Reservation("coupon:M0000001:1", "coupons", 20000, 500, 1000)],
    )
    assert recorded.granted == {"coupon:M0000001:1": True}
    assert store.read(["M0000001"], NOW_MS)["M0000001"].total_purchases == 3

    client = store.client
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("other:key")  # another prefix
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(f"not-{prefix}:x", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_get("requirepass")
    with pytest.raises(redis.exceptions.NoPermissionError):  # a script outside the prefix
        client.eval("return redis.call('GET', KEYS[1])", 1, "other:key")
    anonymous = redis.Redis.from_url(server.url())
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(ConfigError, match="refused the credentials of user 'mpworker'") as refused:
        RedisState(settings.model_copy(update={"redis_password": SecretStr("not-it")}))
    assert "not-it" not in str(refused.value)


def test_a_worker_with_the_acl_user_scores_the_stream_and_never_logs_the_password(
    isolated: Settings, registry: Path, locked: tuple[OwnRedis, str], tmp_path: Path
) -> None:
    server, prefix = locked
    settings = fault_settings(
        isolated, registry, server, redis_username=_USER,
        redis_password=SecretStr(_PASSWORD), redis_key_prefix=prefix,
    )  # fmt: skip
    events = member_events(members=15, seed=51)
    log = tmp_path / "worker.log"
    with running_worker(settings, log) as worker:
        sent = SteadyLoad(settings, events, 1000.0, bad=2).start().join()
        timed(lambda: committed_all(settings, sent), "every input committed")
        assert worker.metrics().accounted() == sent
        assert _PASSWORD not in repr(worker.metrics())  # no label, no value
        assert _PASSWORD not in repr(worker.readiness())
        assert worker.stop(60) == 0
    check_conservation(settings, events, 2)
    assert _PASSWORD not in log.read_text()
