"""Output production through a confluent-kafka producer: queue a batch, flush, confirm.

Faust's per-record `await topic.send(...)` costs more than a bare agent's whole per-event
budget (docs/architecture.md, Known pitfalls); librdkafka batches in C. `flush` blocks until
every queued record has its delivery report and raises `OutputsNotConfirmed` when any
failed or the deadline passed, so the caller never acknowledges offsets whose outputs
were not written. A record the broker or the client can never take (too large, invalid)
is not retried: `flush` returns it as `Refused`, and the batch path dead-letters it.
"""

from __future__ import annotations

from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message

from memberpulse.models.errors import OutputsNotConfirmed
from memberpulse.streams.settings import KafkaSettings
from memberpulse.streams.worker.kafka import make_producer
from memberpulse.streams.worker.records import Refused

#: Errors no retry can cure: the record itself is what the broker or client refuses.
PERMANENT: Final = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
    }
)


class KafkaSink:
    """`OutputSink` over a confluent-kafka producer (acks=all, murmur2 keyed)."""

    def __init__(self, kafka: KafkaSettings, **overrides: Any) -> None:
        self._producer = make_producer(kafka, **overrides)
        self._timeout_s = kafka.output_flush_timeout_s
        self._failed: list[str] = []
        self._refused: list[Refused] = []
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
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() not in PERMANENT:  # the broker's trouble: the batch is retried
                    raise OutputsNotConfirmed(f"{topic}: {error.str()}") from exc
                self._refused.append(Refused(topic, key, len(value), headers, error.str()))
                break
        self._queued += 1

    def flush(self) -> list[Refused]:
        """Wait for every queued record's delivery report; raise unless each succeeded or
        was refused for good (those are returned)."""
        left = self._producer.flush(self._timeout_s)
        queued, failed, refused = self._queued, self._failed, self._refused
        self._queued, self._failed, self._refused = 0, [], []
        if left or failed:
            detail = f"{left} of {queued} records unconfirmed after {self._timeout_s:g} s"
            if failed:
                detail = f"{len(failed)} of {queued} records failed ({failed[0]}); " + detail
            raise OutputsNotConfirmed(detail)
        self.confirmed += queued - len(refused)
        return refused

    def close(self) -> None:
        """Flush what is left (best effort) and release the producer."""
        self._producer.flush(self._timeout_s)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        if error.code() in PERMANENT:  # the broker refused this record: never retried
            value = message.value() or b""
            headers: list[tuple[str, bytes]] = []
            for pair in message.headers() or []:  # our records carry (str, bytes) pairs
                if isinstance(pair, tuple):
                    name, header = pair
                    headers.append((str(name), header if isinstance(header, bytes) else b""))
            topic = message.topic() or ""
            key = message.key()
            self._refused.append(
                Refused(
                    topic, key if isinstance(key, bytes) else None, len(value), headers, error.str()
                )
            )
        else:
            self._failed.append(f"{message.topic()}: {error.str()}")
