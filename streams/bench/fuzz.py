"""`memberpulse bench fuzz`: generated inputs, hostile ones among valid events, through a
real worker on the local stack; every input must be accounted for and the worker alive.

The inputs mix simulated valid events with the simulator's corruptions (each names the
reason the decoder must give, `streams/simulate/bad.py`) and cases no producer of ours
writes but a broker can carry: truncated and deeply nested JSON, huge numbers, NaN and
Infinity, duplicate keys, byte-order marks, lone surrogates, tombstones (no value),
negative and far-future timestamps, records over the event size limit, random bytes.
Records over the broker's size limit never reach a worker: the producer refuses them,
and they are counted apart (`refused_at_produce`).

The report: `inputs` sent, `crashes` (the worker exited), `unaccounted` (inputs neither
applied, skipped as duplicates nor dead-lettered, from the worker's counters), the DLQ
by reason, and `inputs_per_s` from the first input sent to the last one accounted.
Measured, never asserted here: the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson
from confluent_kafka import KafkaError, KafkaException

from memberpulse.models.contract import Event, encode_event
from memberpulse.models.errors import BenchmarkFailed
from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.simulate.bad import CORRUPTIONS
from memberpulse.streams.worker.kafka import ensure_topics, make_producer

_POLL_S: Final = 0.2
_DRAIN_DEADLINE_S: Final = 300.0
_VALID_SHARE: Final = 0.5  # half the inputs are valid events
_NESTING: Final = 5_000  # past orjson's depth limit (1,024), under the size limit
_BROKER_LIMIT_BYTES: Final = 2_000_000  # over librdkafka's default message.max.bytes (1 MB)

Hostile = Callable[[dict[str, Any], np.random.Generator, int], bytes | None]


def _replace_raw(wire: dict[str, Any], field: str, literal: bytes) -> bytes:
    """The event's JSON with one field's value written as `literal` (not valid Python)."""
    marker = "__fuzz_marker__"
    return orjson.dumps(wire | {field: marker}).replace(f'"{marker}"'.encode(), literal)


HOSTILE: Final[dict[str, Hostile]] = {
    "deep_nesting": lambda _w, _r, _m: b'{"a":' * _NESTING + b"1" + b"}" * _NESTING,
    "deep_array": lambda _w, _r, _m: b"[" * _NESTING + b"]" * _NESTING,
    "huge_number": lambda w, _r, _m: _replace_raw(w, "price", b"1e400"),
    "huge_integer": lambda w, _r, _m: _replace_raw(w, "quantity", b"9" * 400),
    "infinity": lambda w, _r, _m: _replace_raw(w, "price", b"Infinity"),
    "nan": lambda w, _r, _m: _replace_raw(w, "price", b"NaN"),
    "duplicate_keys": lambda w, _r, _m: orjson.dumps(w)[:-1] + b',"member_id":"M-dup"}',
    "bom": lambda w, _r, _m: b"\xef\xbb\xbf" + orjson.dumps(w),
    "lone_surrogate": lambda w, _r, _m: _replace_raw(w, "item_id", b'"\\ud800x"'),
    "tombstone": lambda _w, _r, _m: None,
    "empty": lambda _w, _r, _m: b"",
    "negative_ts": lambda w, _r, _m: orjson.dumps(w | {"ts": -5}),
    "far_future_ts": lambda w, _r, _m: orjson.dumps(w | {"ts": 10**15}),
    "ts_as_string": lambda w, _r, _m: orjson.dumps(w | {"ts": "yesterday"}),
    "over_event_limit": lambda w, _r, m: orjson.dumps(w | {"note": "x" * (m + 1)}),
    "random_bytes": lambda _w, r, _m: r.bytes(int(r.integers(1, 512))),
    "scalar": lambda _w, r, _m: str(int(r.integers(0, 10**9))).encode(),
    "null_fields": lambda w, _r, _m: orjson.dumps(dict.fromkeys(w)),
    "unicode_ids": lambda w, _r, _m: orjson.dumps(w | {"member_id": "M\u202e\u0000\U0001f600"}),
    "over_broker_limit": lambda _w, _r, _m: b"x" * _BROKER_LIMIT_BYTES,
}


def generate(
    events: list[Event], inputs: int, rng: np.random.Generator, max_bytes: int
) -> list[tuple[str, str | None, bytes | None, bytes]]:
    """`inputs` (case, event type or None, value, key): valid events in order (each to its
    type's topic), hostile ones among them (to any input topic)."""
    makers: list[tuple[str, Hostile]] = [
        *((f"corrupt_{reason.value}", _corruption(reason)) for reason in CORRUPTIONS),
        *HOSTILE.items(),
    ]
    out: list[tuple[str, str | None, bytes | None, bytes]] = []
    valid = 0
    for _ in range(inputs):
        event = events[valid % len(events)]
        if valid < len(events) and rng.random() < _VALID_SHARE:
            out.append(("valid", event.type, encode_event(event), event.member_id.encode()))
            valid += 1
            continue
        case, make = makers[int(rng.integers(len(makers)))]
        wire = event.to_wire()
        out.append((case, None, make(wire, rng, max_bytes), event.member_id.encode()))
    return out


def _corruption(reason: Any) -> Hostile:
    corrupt = CORRUPTIONS[reason]
    return lambda wire, _rng, max_bytes: corrupt(wire, max_bytes)


def bench_fuzz(settings: Settings, inputs: int, seed: int) -> dict[str, Any]:
    """Send `inputs` generated records to a fresh worker's input topics; the report."""
    rng = np.random.default_rng(seed)
    members = max(50, inputs // 40)
    events = list(Simulator(SimConfig(members=members, days=30, seed=seed)).iter_events())
    cases = generate(events, inputs, rng, settings.worker.max_event_bytes)
    # Topics, group and key prefix of this run only: read from the start, nothing else in
    # them, nothing of theirs left in anyone's state.
    tag = f"fuzz{uuid.uuid4().hex[:8]}"
    names = [name for name in Settings.flat_names() if name.startswith("topic_")]
    settings = settings.model_copy(
        update={name: f"{tag}.{settings.value(name)}" for name in names}
        | {"redis_key_prefix": tag, "worker_group_id": tag, "worker_offset_reset": "earliest"}
    )
    ensure_topics(settings.kafka)
    log = settings.home / "logs" / "bench-fuzz.log"
    worker = WorkerProcess(settings, log, worker_web_port=0)
    try:
        _wait(worker.ready, worker, "the worker ready")
        producer = make_producer(settings.kafka)
        topics = settings.kafka.input_topics
        refused: Counter[str] = Counter()
        sent: Counter[str] = Counter()
        started = time.monotonic()
        for index, (case, event_type, value, key) in enumerate(cases):
            topic = (
                settings.kafka.topic_for_type(event_type)
                if event_type is not None
                else topics[index % len(topics)]
            )
            try:
                producer.produce(topic, value, key)
            except BufferError:
                producer.poll(1.0)
                producer.produce(topic, value, key)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                refused[case] += 1
                continue
            sent[case] += 1
            if index % 1000 == 0:
                producer.poll(0)
        if producer.flush(60):
            raise BenchmarkFailed("the broker did not confirm the fuzz inputs")
        total = sum(sent.values())

        def accounted() -> float:
            return worker.metrics().accounted()

        _wait(lambda: accounted() >= total, worker, "every input accounted for", alive=False)
        elapsed = time.monotonic() - started
        metrics = worker.metrics()
        crashed = not worker.alive()
        code = worker.stop(60)
    finally:
        worker.kill()
    return {
        "inputs": total,
        "crashes": int(crashed or code != 0),
        "unaccounted": int(total - metrics.accounted()),
        "dlq_by_reason": {
            k: int(v)
            for k, v in sorted(metrics.by_label("memberpulse_dlq_total", "reason").items())
        },
        "applied": int(metrics.total("memberpulse_events_applied_total")),
        "duplicates": int(metrics.total("memberpulse_duplicates_total")),
        "inputs_per_s": round(total / elapsed, 1) if elapsed > 0 else None,
        "cases": dict(sorted(sent.items())),
        "refused_at_produce": dict(sorted(refused.items())),
        "seed": seed,
        "worker_exit_code": code,
    }


def _wait(
    condition: Callable[[], bool], worker: WorkerProcess, what: str, alive: bool = True
) -> None:
    deadline = time.monotonic() + _DRAIN_DEADLINE_S
    while not condition():
        if not worker.alive():
            if alive:
                raise BenchmarkFailed(f"the worker exited before {what}; see its log")
            return  # a crash: reported, not raised
        if time.monotonic() > deadline:
            if alive:
                raise BenchmarkFailed(f"no {what} within {_DRAIN_DEADLINE_S:.0f} s")
            return  # unaccounted inputs: reported
        time.sleep(_POLL_S)  # polling a child process's endpoint
