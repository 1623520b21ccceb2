"""Output production through a confluent-kafka producer: queue a batch, flush, confirm.

Faust's per-record `await topic.send(...)` costs more than a bare agent's whole per-event
budget (docs/architecture.md, Known pitfalls); librdkafka batches in C. `flush` blocks until
every queued record has its delivery report and raises `OutputsNotConfirmed` when any
failed or the deadline passed, so the caller never acknowledges offsets whose outputs
were not written.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message

from memberpulse.models.errors import OutputsNotConfirmed
from memberpulse.streams.settings import KafkaSettings
from memberpulse.streams.worker.kafka import make_producer


class KafkaSink:
    """`OutputSink` over a confluent-kafka producer (acks=all, murmur2 keyed)."""

    def __init__(self, kafka: KafkaSettings, **overrides: Any) -> None:
        self._producer = make_producer(kafka, **overrides)
        self._timeout_s = kafka.output_flush_timeout_s
        self._failed: list[str] = []
        self._queued = 0
        self.confirmed = 0

    def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Queue one record (serves delivery reports when librdkafka's queue is full)."""
        record_headers: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=record_headers, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._queued += 1

    def flush(self) -> None:
        """Wait for every queued record's delivery report; raise unless all succeeded."""
        left = self._producer.flush(self._timeout_s)
        queued, failed = self._queued, self._failed
        self._queued, self._failed = 0, []
        if left or failed:
            detail = f"{left} of {queued} records unconfirmed after {self._timeout_s:g} s"
            if failed:
                detail = f"{len(failed)} of {queued} records failed ({failed[0]}); " + detail
            raise OutputsNotConfirmed(detail)
        self.confirmed += queued

    def close(self) -> None:
        """Flush what is left (best effort) and release the producer."""
        self._producer.flush(self._timeout_s)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(f"{message.topic()}: {error.str()}")
