"""Redis failing under a running worker: paused, restarted, killed, refusing writes, and a
Redis Cluster answering CLUSTERDOWN (issue #25).

Each fault is injected into a real redis-server of the test's own while a steady load
flows through a real worker process. The worker must stall (never dead-letter, never
crash), say it is not ready, retry, and recover with nothing lost or renamed
(`check_conservation`). Each test prints how long recovery took (RELIABILITY.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.state import keys
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
from tests.helpers import wait_until
from tests.redis_cluster import redis_cluster

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

_RATE = 400.0  # events/s: a steady live load, far below what the worker drains
_BAD = 5
# The client gives up after ~1 s (2 attempts of 0.5 s): a fault held for 4 s outlasts it,
# so the worker itself must retry the batch (the probe paused the demo's Redis
# for 20 s against the default 5 attempts of 5 s).
_QUICK_REDIS = {"redis_timeout_s": 0.5, "redis_retry_attempts": 2, "redis_retry_backoff_s": 0.05}
_HOLD_S = 4.0
_DOWN_S = 30.0  # Redis stopped for as long as the issue asks: the load queues up meanwhile
_UNUSED_PORT = 1  # a master nobody serves: the replica never syncs, keeps its data


def _failing(worker: WorkerProcess) -> str:
    """The failure /ready reports ("" while ready or not answering)."""
    return str(worker.readiness().get("failing") or "")


def _run_with_fault(
    settings: Settings,
    log: Path,
    inject: Callable[[], None],
    heal: Callable[[], None],
    failure: str,
    hold_s: float = _HOLD_S,
) -> float:
    """Steady load; inject the fault; wait for the worker to report `failure` (a substring
    of its /ready `failing`); hold it `hold_s`; heal; the seconds to ready again."""
    events = member_events(members=40, seed=31)
    with running_worker(settings, log) as worker:
        load = SteadyLoad(settings, events, _RATE, bad=_BAD).start()
        wait_until(lambda: load.progress > 0.3, timeout=60, interval=0.1, what="load flowing")
        inject()
        try:
            stalled = timed(lambda: failure in _failing(worker), f"not ready: {failure}")
            applied = worker.metrics().total("memberpulse_events_applied_total")
            time.sleep(max(0.0, hold_s - stalled))  # the fault's duration, not a sync
            assert worker.alive()
            assert worker.metrics().total("memberpulse_dlq_total") <= _BAD  # nothing blamed
        finally:
            heal()
        recovery = timed(worker.ready, "the worker ready again")
        sent = load.join()
        timed(lambda: committed_all(settings, sent), "every input committed")
        final = worker.metrics()
        assert final.total("memberpulse_events_applied_total") > applied
        assert final.accounted() == sent  # each input counted once, redeliveries apart
        assert worker.stop(60) == 0
    seen = check_conservation(settings, events, _BAD)
    print(f"outputs {seen}")
    return recovery


def test_redis_paused_past_the_clients_retries_stalls_the_worker_and_loses_nothing(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    settings = fault_settings(isolated, registry, own_redis, **_QUICK_REDIS)
    recovery = _run_with_fault(
        settings, tmp_path / "worker.log", own_redis.pause, own_redis.resume, "did not answer"
    )
    print(f"redis paused {_HOLD_S} s: ready again {recovery:.1f} s after resuming")


def test_redis_restarted_under_load_keeps_its_state_and_loses_nothing(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    settings = fault_settings(isolated, registry, own_redis, **_QUICK_REDIS)
    recovery = _run_with_fault(
        settings,
        tmp_path / "worker.log",
        own_redis.stop,
        own_redis.start_again,
        "did not answer",
        _DOWN_S,
    )
    print(f"redis stopped (SIGTERM) {_DOWN_S} s and started again: ready {recovery:.1f} s later")


def test_redis_killed_under_load_loses_no_acknowledged_write(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    # appendfsync everysec: Redis write()s the append-only file before it answers and
    # fsyncs once a second, so a killed process (not a power cut) keeps every write it
    # acknowledged; the conservation check would find a member with events missing.
    settings = fault_settings(isolated, registry, own_redis, **_QUICK_REDIS)
    recovery = _run_with_fault(
        settings, tmp_path / "worker.log", own_redis.kill, own_redis.start_again, "did not answer"
    )
    print(f"redis killed (SIGKILL) {_HOLD_S} s and started again: ready {recovery:.1f} s later")


@pytest.mark.parametrize(
    ("refusal", "inject", "heal"),
    [
        ("OOM", [("CONFIG", "SET", "maxmemory", "1")], [("CONFIG", "SET", "maxmemory", "0")]),
        ("READONLY", [("REPLICAOF", "127.0.0.1", str(_UNUSED_PORT))], [("REPLICAOF", "NO", "ONE")]),
    ],
)
def test_redis_refusing_writes_stalls_the_worker_and_dead_letters_nothing(
    isolated: Settings,
    registry: Path,
    own_redis: OwnRedis,
    tmp_path: Path,
    refusal: str,
    inject: list[tuple[str, ...]],
    heal: list[tuple[str, ...]],
) -> None:
    settings = fault_settings(isolated, registry, own_redis, **_QUICK_REDIS)
    admin = redis.Redis.from_url(own_redis.url())
    admin.config_set("maxmemory-policy", "noeviction")

    def run(commands: list[tuple[str, ...]]) -> Callable[[], None]:
        def send() -> None:
            for command in commands:
                admin.execute_command(*command)

        return send

    recovery = _run_with_fault(
        settings, tmp_path / "worker.log", run(inject), run(heal), "refused the batch"
    )
    print(f"redis refusing writes ({refusal}) {_HOLD_S} s: ready {recovery:.1f} s after")


_CLUSTER_NODE_TIMEOUT_MS = "1000"  # how long a node that lost a slot waits to rejoin
_SLOT = 0  # one of the first node's slots


def _node_ids(ports: list[int]) -> dict[int, str]:
    return {p: redis.Redis(port=p).execute_command("CLUSTER MYID").decode() for p in ports}


def _owner(ports: list[int], slot: int) -> int:
    for first, last, (_host, port, *_rest), *_replicas in redis.Redis(
        port=ports[0]
    ).execute_command("CLUSTER SLOTS"):
        if first <= slot <= last:
            return int(port)
    raise AssertionError(f"slot {slot} has no owner")


def _cluster_faults(
    fault: str, ports: list[int], settings: Settings
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(inject, heal) of a real cluster fault.

    CLUSTERDOWN: a master that serves a slot no more (as when a master fails with no
    replica to take over) sees the cluster down and answers CLUSTERDOWN for every slot it
    holds. TRYAGAIN: one member's slot is being migrated (resharding): a multi-key call on
    its keys, one of which the source does not hold (the decision key of old layouts), is
    redirected to the target (ASK), which holds none of them yet and answers TRYAGAIN until
    the migration ends; the cluster client gives up with "TTL exhausted".
    """
    node = redis.Redis(port=ports[0], socket_timeout=5)
    if fault == "CLUSTERDOWN":

        def down() -> None:
            node.execute_command("CLUSTER DELSLOTS", _SLOT)
            wait_until(
                lambda: node.cluster("INFO")["cluster_state"] == "fail",
                timeout=30,
                interval=0.05,
                what="cluster down",
            )

        return down, lambda: node.execute_command("CLUSTER ADDSLOTS", _SLOT)
    member = member_events(members=40, seed=31)[0].member_id
    state_key, old_decision_key, _outbox = keys.member_keys(settings.redis.key_prefix, member)
    slot = int(node.execute_command("CLUSTER KEYSLOT", state_key))
    source = _owner(ports, slot)
    target = next(p for p in ports if p != source)
    ids = _node_ids(ports)
    src, dst = redis.Redis(port=source), redis.Redis(port=target)

    def migrate() -> None:
        wait_until(lambda: src.exists(state_key), timeout=30, interval=0.05, what="member state")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
        # as the cluster itself answers: the source redirects (a key is missing there),
        # the target holds only some of the keys and says TRYAGAIN
        with pytest.raises(redis.exceptions.AskError):
            src.execute_command("EXISTS", state_key, old_decision_key)
        asking = redis.Redis(port=target, single_connection_client=True)
        asking.execute_command("ASKING")
        with pytest.raises(redis.exceptions.TryAgainError):
            asking.execute_command("EXISTS", state_key, old_decision_key)
        asking.close()

    def cancel() -> None:
        for client in (src, dst):
            client.execute_command("CLUSTER SETSLOT", slot, "STABLE")

    return migrate, cancel


@pytest.mark.parametrize(
    ("fault", "logged"), [("CLUSTERDOWN", "The cluster is down"), ("TRYAGAIN", "TTL exhausted")]
)
def test_a_redis_cluster_answering_an_error_reply_stalls_the_worker_and_dead_letters_nothing(
    isolated: Settings, registry: Path, tmp_path: Path, fault: str, logged: str
) -> None:
    extra = ("--cluster-node-timeout", _CLUSTER_NODE_TIMEOUT_MS)
    with redis_cluster(tmp_path / "cluster", extra=extra) as ports:
        url = f"redis://127.0.0.1:{ports[0]}/0"
        settings = fault_settings(isolated, registry, url, redis_cluster=True, **_QUICK_REDIS)
        inject, heal = _cluster_faults(fault, ports, settings)
        log = tmp_path / "worker.log"
        recovery = _run_with_fault(settings, log, inject, heal, "refused the batch")
        assert logged in log.read_text()  # the reply the worker met
    print(f"redis cluster {fault} {_HOLD_S} s: ready {recovery:.1f} s after it ended")
