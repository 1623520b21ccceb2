"""Redis failing under a running worker: paused, restarted, refusing writes (issue #25).

Each fault is injected into a real redis-server while a steady load flows through a real
worker process; the worker must stall, say it is not ready, retry, and recover with
nothing lost or renamed (`check_conservation`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
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

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

_RATE = 400.0  # events/s: a steady live load, far below what the worker drains
_BAD = 5
# The client gives up after ~1 s (2 attempts of 0.5 s): a pause of 4 s outlasts it, so the
# worker itself must retry the batch (the probe paused the demo's Redis for 20 s
# against the default 5 attempts of 5 s).
_QUICK_REDIS = {"redis_timeout_s": 0.5, "redis_retry_attempts": 2, "redis_retry_backoff_s": 0.05}
_PAUSE_S = 4.0


def _not_ready(worker: WorkerProcess) -> bool:
    return worker.alive() and not worker.ready()


def test_redis_paused_past_the_clients_retries_stalls_the_worker_and_loses_nothing(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    settings = fault_settings(isolated, registry, own_redis, **_QUICK_REDIS)
    events = member_events(members=40, seed=31)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        load = SteadyLoad(settings, events, _RATE, bad=_BAD).start()
        wait_until(lambda: load.progress > 0.3, timeout=60, interval=0.1, what="load flowing")
        own_redis.pause()
        try:
            stalled = timed(lambda: _not_ready(worker), "the worker reports not ready")
            applied = worker.metrics().total("memberpulse_events_applied_total")
            time.sleep(max(0.0, _PAUSE_S - stalled))  # the fault's duration, not a sync
            assert worker.alive()
        finally:
            own_redis.resume()
        recovery = timed(worker.ready, "the worker ready again")
        sent = load.join()
        timed(lambda: committed_all(settings, sent), "every input committed")
        final = worker.metrics()
        assert final.total("memberpulse_events_applied_total") > applied
        assert final.accounted() == sent  # each input counted once, redeliveries apart
        assert worker.stop(60) == 0
    print(f"redis paused {_PAUSE_S} s: ready again {recovery:.1f} s after resuming")
    check_conservation(settings, events, _BAD)
