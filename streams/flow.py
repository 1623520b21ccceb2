"""Watching events flow: a reader thread that counts and decodes what reaches the topics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition

from memberpulse.streams.events import DeadLetter, EventDecoder, Origin
from memberpulse.streams.kafka import client_config, partition_counts
from memberpulse.streams.settings import Settings

_POLL_S = 0.2
_BATCH = 1_000


@dataclass
class FlowCounts:
    """Records seen since the watcher started, per topic and per DLQ reason."""

    per_topic: Counter[str] = field(default_factory=Counter)
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """All records seen."""
        return sum(self.per_topic.values())


class FlowWatcher:
    """Reads the input topics with assign() from the start, counting records stamped
    at or after `since_ms` (tansu's watermarks can under-count, so we count by reading).
    """

    def __init__(self, settings: Settings, since_ms: int) -> None:
        self._settings = settings
        self._since_ms = since_ms
        self._decoder = EventDecoder(settings)
        self._lock = threading.Lock()
        self._counts = FlowCounts()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flow-watcher", daemon=True)

    def start(self) -> None:
        """Start reading in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def snapshot(self) -> FlowCounts:
        """A copy of the counts so far."""
        with self._lock:
            return FlowCounts(
                Counter(self._counts.per_topic), self._counts.valid, Counter(self._counts.rejected)
            )

    def wait_for_total(self, total: int, timeout_s: float) -> bool:
        """True once `total` records were seen, False if the deadline passed first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.snapshot().total >= total:
                return True
            self._stop.wait(0.05)
        return self.snapshot().total >= total

    def _run(self) -> None:
        topics = list(self._settings.input_topics)
        counts = partition_counts(self._settings, topics)
        consumer = Consumer(
            client_config(self._settings)
            | {"group.id": "memberpulse-flow", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(counts[t])])
        try:
            while not self._stop.is_set():
                for message in consumer.consume(num_messages=_BATCH, timeout=_POLL_S):
                    if message.error() is None:
                        self._count(message)
        finally:
            consumer.close()

    def _count(self, message: Message) -> None:
        _kind, stamp = message.timestamp()
        if stamp < self._since_ms:
            return
        topic = message.topic() or ""
        origin = Origin(topic, message.partition(), message.offset(), message.key())
        value = message.value() or b""
        decoded = self._decoder.decode(value, origin, int(time.time() * 1000))
        with self._lock:
            self._counts.per_topic[topic] += 1
            if isinstance(decoded, DeadLetter):
                self._counts.rejected[decoded.reason.value] += 1
            else:
                self._counts.valid += 1
