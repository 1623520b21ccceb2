"""Test helpers: factories and condition waits (never sleep as synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memberpulse.models.contract import Event
from memberpulse.models.timeutil import parse_ts

if TYPE_CHECKING:
    from memberpulse.streams.local.worker_process import WorkerProcess
    from memberpulse.streams.settings import Settings

NOW_MS = parse_ts("2026-11-26T12:00:00Z")
#: Top-K of the tiny exported models (the `exported` fixture).
TINY_TOP_K = 10

#: Every topic-name setting (tests give each its own names).
TOPIC_SETTINGS = (
    "topic_clicks",
    "topic_browses",
    "topic_purchases",
    "topic_dlq",
    "topic_churn_alerts",
    "topic_recommendations",
    "topic_coupons",
    "topic_tiers",
)


def make_event(**overrides: Any) -> Event:
    """A valid purchase event; override any field."""
    fields: dict[str, Any] = {
        "event_id": "e-1",
        "member_id": "M0000001",
        "type": "purchase",
        "item_id": "I00042",
        "ts": NOW_MS - 60_000,
        "category": "C07",
        "price": 19.99,
        "quantity": 2,
        "session_id": "s-1",
    }
    return Event(**(fields | overrides))


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Return the first truthy value of `condition()`; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or condition}")
        time.sleep(interval)


def output_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema shipped for an output kind (or `dlq`)."""
    import json
    from importlib.resources import files

    text = (
        files("memberpulse.streams.decisions")
        .joinpath("schemas", f"{kind}.schema.json")
        .read_text()
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_record(record: dict[str, Any], kind: str | None = None) -> None:
    """Fail unless `record` matches its kind's schema (its own `kind` field by default)."""
    import jsonschema

    jsonschema.validate(record, output_schema(kind or str(record["kind"])))


def produce_events(settings: Settings, events: list[Event], bad: int = 0) -> int:
    """Events keyed by member to their input topics, plus `bad` malformed clicks; the count."""
    from memberpulse.streams.bench.e2e import preload
    from memberpulse.streams.worker.kafka import make_producer

    preload(settings, events)  # the benchmark's loader: keyed, flushed, confirmed
    producer = make_producer(settings.kafka)
    for i in range(bad):
        producer.produce(settings.kafka.topic_clicks, b'{"event_id": "bad-%d"' % i, b"M-bad")
    assert producer.flush(30) == 0
    return len(events) + bad


def accounted(worker: WorkerProcess) -> float:
    """Events a worker applied, skipped as duplicates or dead-lettered."""
    return worker.metrics().accounted()
