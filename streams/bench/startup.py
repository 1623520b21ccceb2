"""`memberpulse bench startup`: how fast a worker gets going and how fast it stops.

Each round starts `memberpulse worker` as a child process in a fresh consumer group (so
each start includes a group join), then produces an event every 50 ms, and measures the
seconds from the process start to (a) /ready answering ready (partitions assigned) and
(b) the first event applied; then sends SIGTERM and measures the seconds until the process exited.
Measured, never asserted: the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Final

from memberpulse.models.contract import encode_event
from memberpulse.models.errors import BenchmarkFailed
from memberpulse.models.timeutil import MS_PER_SECOND
from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import make_producer

_POLL_S: Final = 0.05
_DEADLINE_S: Final = 120.0


@dataclass(frozen=True)
class Round:
    """One start/stop of a worker."""

    ready_s: float
    first_event_s: float
    exit_after_sigterm_s: float
    exit_code: int


def _wait(condition: Any, what: str, worker: WorkerProcess) -> float:
    started = time.monotonic()
    while not condition():
        if not worker.alive():
            raise BenchmarkFailed(f"the worker exited before {what}; see its log")
        if time.monotonic() - started > _DEADLINE_S:
            raise BenchmarkFailed(f"no {what} within {_DEADLINE_S:.0f} s")
        time.sleep(_POLL_S)  # polling a child process's endpoint
    return time.monotonic()


def one_round(settings: Settings, index: int) -> Round:
    """Start a worker in a fresh group, feed it one event, stop it."""
    from memberpulse.models.contract import Event

    group = f"{settings.worker.group_id}-bench-{uuid.uuid4().hex[:8]}"
    log = settings.home / "logs" / "bench-startup.log"
    begun = time.monotonic()
    worker = WorkerProcess(
        settings, log, worker_web_port=0, worker_group_id=group, worker_offset_reset="latest"
    )
    try:
        ready = _wait(worker.ready, "ready answer", worker)
        member = f"bench-startup-{index}-{uuid.uuid4().hex[:6]}"
        producer = make_producer(settings.kafka)
        sent = 0

        def applied() -> bool:
            # An event every poll until one is applied: a fresh group starting at "latest"
            # may resolve that position only after the first event was written.
            nonlocal sent
            event = Event(
                f"{member}-{sent}", member, "browse", "I00001", int(time.time() * MS_PER_SECOND)
            )
            producer.produce(settings.kafka.topic_browses, encode_event(event), member.encode())
            producer.flush(10)
            sent += 1
            return worker.metrics().total("memberpulse_events_applied_total") >= 1

        first = _wait(applied, "event applied", worker)
        stopping = time.monotonic()
        code = worker.stop(_DEADLINE_S)
        stopped = time.monotonic()
    finally:
        worker.kill()
    return Round(ready - begun, first - begun, stopped - stopping, code)


def bench_startup(settings: Settings, rounds: int) -> dict[str, Any]:
    """`rounds` start/stop cycles; medians and every round."""
    results = [one_round(settings, i) for i in range(rounds)]
    return {
        "rounds": [asdict(r) for r in results],
        "ready_s": statistics.median(r.ready_s for r in results),
        "first_event_s": statistics.median(r.first_event_s for r in results),
        "exit_after_sigterm_s": statistics.median(r.exit_after_sigterm_s for r in results),
        "exit_codes": sorted({r.exit_code for r in results}),
        "kafka_profile": settings.kafka.profile,
    }
