"""The worker killed (SIGKILL) at each stage boundary of a batch, and several times in a
row, under a steady load: a restarted worker loses nothing and renames nothing.

The failpoints (`failpoint_kill_at`, `failpoint_kill_batch`) kill the process from
inside the batch path right after a stage: after round trip 1 applied the batch's events
("state"), after scoring ("score"), after round trip 2 recorded its decisions and outbox
("record"), and with half of its new outputs confirmed by the broker and the rest never
sent ("produce"). Nothing of that batch was acknowledged, so the restarted worker reads
it again: its events are redelivered, its outbox goes out under the same ids.
"""

from __future__ import annotations

import signal
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

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

_RATE = 600.0
_BAD = 4
_BATCH = 64  # small batches: the kill lands mid-stream, with batches before and after it


def _doomed(settings: Settings, log: Path, stage: str, batch: int) -> None:
    """A worker killed by its failpoint after `stage` of its `batch`-th batch."""
    doomed = settings.model_copy(update={"failpoint_kill_at": stage, "failpoint_kill_batch": batch})
    worker = WorkerProcess(doomed, log)  # it may die before /ready is ever asked
    try:
        timed(lambda: not worker.alive(), f"killed after {stage} of batch {batch}")
        assert worker.proc.returncode == -signal.SIGKILL
    finally:
        worker.kill()


def _finish(settings: Settings, log: Path, load: SteadyLoad) -> tuple[float, float]:
    """A clean worker drains the rest: (seconds from its start until all is committed,
    outbox entries it produced again)."""
    with running_worker(settings, log) as worker:
        sent = load.join()
        took = timed(lambda: committed_all(settings, sent), "every input committed")
        resent = worker.metrics().total("memberpulse_outputs_resent_total")
        assert worker.stop(EXIT_DEADLINE_S) == 0
    return took, resent


@pytest.mark.parametrize("stage", ["state", "score", "record", "produce"])
def test_a_worker_killed_after_each_stage_loses_nothing_once_restarted(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path, stage: str
) -> None:
    settings = fault_settings(isolated, registry, own_redis, batch_max_size=_BATCH)
    events = member_events(members=30, seed=41)
    log = tmp_path / "worker.log"
    load = SteadyLoad(settings, events, _RATE, bad=_BAD).start()
    _doomed(settings, log, stage, batch=4)
    took, resent = _finish(settings, log, load)
    print(f"killed after {stage}: restarted worker committed everything in {took:.1f} s")
    if stage in ("record", "produce"):  # the killed batch's outbox went out again
        assert resent > 0
    print(f"outputs {check_conservation(settings, events, _BAD)}")


def test_three_crashes_in_a_row_lose_nothing(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    settings = fault_settings(isolated, registry, own_redis, batch_max_size=_BATCH)
    events = member_events(members=30, seed=42)
    log = tmp_path / "worker.log"
    load = SteadyLoad(settings, events, _RATE, bad=_BAD).start()
    for stage in ("record", "produce", "state"):  # each restart dies in its second batch
        _doomed(settings, log, stage, batch=2)
    _finish(settings, log, load)
    print(f"outputs {check_conservation(settings, events, _BAD)}")
