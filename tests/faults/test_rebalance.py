"""A second worker joins the group while events flow, then dies (SIGKILL): partitions move
twice under load, and nothing is lost or renamed (issue #25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from tests.faults.harness import (
    EXIT_DEADLINE_S,
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

_RATE = 250.0  # slow enough that the load outlasts both rebalances
_BAD = 3


def _assigned(worker: WorkerProcess) -> int:
    return int(worker.readiness().get("assigned_partitions") or 0)


def test_a_worker_joining_then_killed_under_load_moves_partitions_and_loses_nothing(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    settings = fault_settings(isolated, registry, own_redis)
    events = member_events(members=120, seed=61)  # a load that outlasts both moves
    with running_worker(settings, tmp_path / "first.log") as first:
        load = SteadyLoad(settings, events, _RATE, bad=_BAD).start()
        wait_until(lambda: load.progress > 0.15, timeout=60, interval=0.1, what="load flowing")
        full = _assigned(first)  # every input partition (and Faust's own topic's)
        second = WorkerProcess(settings, tmp_path / "second.log")
        try:
            joined = timed(
                lambda: second.metrics().total("memberpulse_events_applied_total") > 0,
                "the second worker took partitions and applied events",
            )
            timed(lambda: 0 < _assigned(first) < full, "the partitions shared between the two")
            assert load.progress < 1, "the load ended before the second worker joined"
        finally:
            second.kill()  # SIGKILL: its partitions come back after the session timeout
        moved = timed(lambda: _assigned(first) >= full, "every partition back on the first")
        sent = load.join()
        timed(lambda: committed_all(settings, sent), "every input committed")
        assert first.stop(EXIT_DEADLINE_S) == 0
    print(f"second worker applying {joined:.1f} s after its start; all back {moved:.1f} s later")
    print(f"outputs {check_conservation(settings, events, _BAD)}")
