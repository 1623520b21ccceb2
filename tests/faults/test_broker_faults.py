"""The broker failing under a running worker: paused past the clients' timeouts (issue #25).

The broker is a tansu of the test's own (stopping the session's broker would stall every
other test), frozen with SIGSTOP while a steady load flows: the worker's fetches,
heartbeats, commits and output deliveries all time out together, as they do when a
broker hangs on a full disk or a long GC pause. The worker must not crash or dead-letter,
and once the broker answers again everything is accounted for (`check_conservation`).

A broker killed and restarted is not shown here: tansu keeps its data in memory only, so
a restart loses the topics; that needs a persistent Kafka (RELIABILITY.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import ensure_topics
from tests.faults.harness import (
    OwnBroker,
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

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

_RATE = 400.0  # events/s, as the Redis faults
_BAD = 5
# Past the consumer's session timeout (10 s by default) and the commit interval: every
# client call of the worker times out at least once. (The group survives here: the
# coordinator's clock froze with it; a real broker may expire the member, a rebalance the
# rebalance test covers.)
_HOLD_S = 15.0


def test_the_broker_paused_under_load_stalls_the_worker_and_loses_nothing(
    isolated: Settings,
    registry: Path,
    own_redis: OwnRedis,
    own_broker: OwnBroker,
    tmp_path: Path,
) -> None:
    settings = fault_settings(isolated, registry, own_redis, kafka_bootstrap=own_broker.bootstrap)
    ensure_topics(settings.kafka)
    events = member_events(members=40, seed=37)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        load = SteadyLoad(settings, events, _RATE, bad=_BAD).start()
        wait_until(lambda: load.progress > 0.3, timeout=60, interval=0.1, what="load flowing")
        own_broker.pause()
        try:
            time.sleep(_HOLD_S)  # the fault's duration, not a synchronisation
            assert worker.alive()
            paused = worker.metrics()
            assert paused.total("memberpulse_dlq_total") <= _BAD  # nothing blamed on data
        finally:
            own_broker.resume()
        applied = paused.total("memberpulse_events_applied_total")
        recovery = timed(
            lambda: worker.metrics().total("memberpulse_events_applied_total") > applied,
            "events applied again after the broker resumed",
        )
        sent = load.join()
        timed(lambda: committed_all(settings, sent), "every input committed")
        final = worker.metrics()
        assert final.accounted() == sent  # each input counted once, redeliveries apart
        assert worker.stop(60) == 0
    seen = check_conservation(settings, events, _BAD)
    print(f"broker paused {_HOLD_S:.0f} s: applying again {recovery:.1f} s after; {seen}")
