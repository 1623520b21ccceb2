"""Micro-benchmarks run from the CLI (`memberpulse bench …`); figures go to BENCHMARKS.md."""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from memberpulse.models.contract import EVENT_TYPES, PURCHASE, Event, encode_event
from memberpulse.streams.bench.machine import describe_machine
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.decode import DeadLetter, EventDecoder


@dataclass(frozen=True)
class DecodeResult:
    """Decoder throughput on one core."""

    events: int
    mean_bytes: float
    seconds: float
    events_per_s: float
    repeats: int
    python: str
    machine: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def sample_payloads(count: int, now_ms: int, seed: int = 0) -> list[bytes]:
    """Valid, small, varied events like the simulator's (about 100–170 bytes each)."""
    rng = np.random.default_rng(seed)
    payloads = []
    for index in range(count):
        event_type = EVENT_TYPES[int(rng.integers(3))]
        purchase = event_type == PURCHASE
        event = Event(
            event_id=f"e{index}",
            member_id=f"M{int(rng.integers(1_000_000)):07d}",
            type=event_type,
            item_id=f"I{int(rng.integers(50_000)):05d}",
            ts=now_ms - int(rng.integers(86_400_000)),
            category=f"C{int(rng.integers(40)):02d}",
            price=round(float(rng.lognormal(3, 1)), 2) if purchase else None,
            quantity=int(rng.integers(1, 4)) if purchase else 1,
            session_id=f"s{int(rng.integers(10**9))}",
        )
        payloads.append(encode_event(event))
    return payloads


def bench_decode(settings: Settings, events: int, repeats: int = 3) -> DecodeResult:
    """Best of `repeats` passes decoding `events` valid payloads with the live checks on."""
    now_ms = int(time.time() * 1000)
    payloads = sample_payloads(events, now_ms)
    decoder = EventDecoder(settings.worker, live=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        decoded = [decoder.decode(raw, received_at=now_ms) for raw in payloads]
        best = min(best, time.perf_counter() - start)
        rejected = sum(isinstance(item, DeadLetter) for item in decoded)
        if rejected:
            raise AssertionError(f"{rejected} of the sample events were rejected")
    return DecodeResult(
        events=events,
        mean_bytes=sum(map(len, payloads)) / len(payloads),
        seconds=best,
        events_per_s=events / best,
        repeats=repeats,
        python=platform.python_version(),
        machine=describe_machine(),
    )


def bench_features(members: int = 2_000, batch: int = 512, repeats: int = 20) -> dict[str, object]:
    """`encode` of `batch` member snapshots (full 64-event states, simulated): best and median."""
    from memberpulse.models.config import DatasetConfig
    from memberpulse.models.dataset import build_vocabulary
    from memberpulse.models.eventlog import load_events
    from memberpulse.models.features import encode
    from memberpulse.models.fold import fold
    from memberpulse.models.snapshot import StateSpec
    from memberpulse.streams.simulate import SimConfig, simulate_to_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        simulate_to_file(SimConfig(members=members, days=60), path)
        log = load_events(path)
    state = StateSpec()
    spec = build_vocabulary(log, log.end + 1, DatasetConfig(), state)
    snaps = [fold(log.events(m), log.end + 1, state) for m in range(min(batch, len(log.members)))]
    laps = []
    for _ in range(repeats):
        started = time.perf_counter()
        encode(snaps, log.end + 1, spec)
        laps.append(time.perf_counter() - started)
    best, median = min(laps), float(np.median(laps))
    return {
        "batch": len(snaps),
        "sequence_length": spec.sequence_length,
        "mean_events_in_state": float(np.mean([len(s.events) for s in snaps])),
        "best_ms": best * 1e3,
        "median_ms": median * 1e3,
        "members_per_s": len(snaps) / median,
        "python": platform.python_version(),
        "machine": describe_machine(),
    }
