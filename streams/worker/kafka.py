"""Kafka clients built from `Settings`: producer, assign()-based reader, topic admin.

Every producer keys by member_id with the murmur2 partitioner, the one Java clients,
aiokafka and Faust use (`murmur2_random` is librdkafka's name for it: murmur2 for keyed
records, random for the unkeyed), so a member's events all land on one partition
whichever client wrote them. Tools that only read use `assign()`, never a group: on
tansu a group join waits half the session timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from memberpulse.models.errors import ConfigError, KafkaUnavailable
from memberpulse.streams.settings import KafkaSettings

PARTITIONER: Final = "murmur2_random"
_POLL_S: Final = 0.2
#: How long a reader from offset 0 waits for its first record. Its idle gap counts from
#: then: connecting and the first fetch can take longer than a gap between records (on a
#: loaded 2-core CI machine the 0.5 s gap once ran out before the first fetch came back).
_FIRST_RECORD_S: Final = 5.0
#: librdkafka logs (connection refused while a broker starts, …) go to Python logging
#: instead of raw stderr lines, so that commands print only their own plain lines.
_RDKAFKA_LOGGER: Final = logging.getLogger("memberpulse.rdkafka")


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings shared by every client: bootstrap, TLS and SASL (rendered by
    the Kafka section), with librdkafka's logs routed to Python logging."""
    return kafka.librdkafka_config() | {"logger": _RDKAFKA_LOGGER}


def make_producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """A keyed, murmur2-partitioned, idempotent-delivery producer."""
    config = client_config(kafka) | {
        "partitioner": PARTITIONER,
        "linger.ms": kafka.producer_linger_ms,
        "acks": "all",
    }
    return Producer(config | overrides)


def make_admin(kafka: KafkaSettings) -> AdminClient:
    """An admin client for topic metadata and creation."""
    return AdminClient(client_config(kafka))


def wait_for_broker(kafka: KafkaSettings, timeout_s: float | None = None) -> int:
    """Block until the bootstrap servers answer a metadata request; return broker count."""
    deadline = time.monotonic() + (timeout_s or kafka.connect_timeout_s)
    admin = make_admin(kafka)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return len(metadata.brokers)
        except KafkaException as exc:
            last = str(exc)
    raise KafkaUnavailable(kafka.bootstrap, last)


def partition_counts(kafka: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each existing topic among `topics` (missing ones are left out)."""
    metadata = make_admin(kafka).list_topics(timeout=kafka.connect_timeout_s)
    return {
        name: len(metadata.topics[name].partitions)
        for name in topics
        if name in metadata.topics and metadata.topics[name].error is None
    }


def ensure_topics(kafka: KafkaSettings) -> dict[str, int]:
    """Create the input, DLQ and output topics that are missing; return partition counts.

    An existing topic is left as it is; input topics whose partition counts differ from
    `input_partitions` are an error (co-partitioning is what keeps a member on one worker).
    """
    wanted = dict.fromkeys(kafka.input_topics, kafka.input_partitions)
    wanted[kafka.topic_dlq] = kafka.input_partitions
    wanted |= dict.fromkeys(kafka.output_topics, kafka.output_partitions)
    admin = make_admin(kafka)
    existing = partition_counts(kafka, wanted)
    missing = [
        NewTopic(name, num_partitions=count, replication_factor=-1)
        for name, count in wanted.items()
        if name not in existing
    ]
    if missing:
        for future in admin.create_topics(missing).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    counts = _await_partition_counts(kafka, wanted, deadline_s=kafka.connect_timeout_s)
    mismatched = {
        name: counts[name] for name in kafka.input_topics if counts[name] != kafka.input_partitions
    }
    if mismatched:
        raise ConfigError(
            f"input topics must have {kafka.input_partitions} partitions each "
            f"(co-partitioned by member_id), found {mismatched}"
        )
    return counts


def _await_partition_counts(
    kafka: KafkaSettings, wanted: dict[str, int], deadline_s: float
) -> dict[str, int]:
    deadline = time.monotonic() + deadline_s
    while True:
        counts = partition_counts(kafka, wanted)
        if len(counts) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(_POLL_S)  # metadata propagation on a real cluster; not test sync
    missing = sorted(set(wanted) - set(counts))
    if missing:
        raise KafkaUnavailable(kafka.bootstrap, f"topics {missing} did not appear")
    return counts


def read_from_start(
    kafka: KafkaSettings,
    topics: Iterable[str],
    *,
    idle_timeout_s: float = 1.0,
    first_record_s: float = _FIRST_RECORD_S,
) -> Iterator[Message]:
    """Every record of `topics` from offset 0, via assign().

    Stops after an idle gap of `idle_timeout_s` once records flow, or after
    `first_record_s` if none comes at all (an empty topic).
    """
    topics = list(topics)
    counts = partition_counts(kafka, topics)
    consumer = Consumer(
        client_config(kafka) | {"group.id": "memberpulse-reader", "enable.auto.commit": False}
    )
    try:
        consumer.assign(
            [TopicPartition(name, p, 0) for name in topics for p in range(counts.get(name, 0))]
        )
        idle_since = time.monotonic()
        allowed = first_record_s
        while time.monotonic() - idle_since < allowed:
            batch = consumer.consume(num_messages=1000, timeout=_POLL_S)
            records = [m for m in batch if m.error() is None]
            if records:
                idle_since = time.monotonic()
                allowed = idle_timeout_s
            yield from records
    finally:
        consumer.close()


def fetch_max_wait_ms(kafka: KafkaSettings) -> int | None:
    """How long consumers let the broker hold a fetch: short on the local stack (tansu
    holds fetches even once records arrive), the client's default in production."""
    if kafka.profile == "production":
        return None
    return kafka.local_fetch_max_wait_ms


def group_timing_ms(kafka: KafkaSettings) -> dict[str, int]:
    """Session timeout and heartbeat for group consumers (Faust, aiokafka, librdkafka).

    `local` (tansu): tansu holds each JoinGroup for half the session timeout, so a short
    one makes the first assignment come in seconds, not half a minute. `production`:
    empty, so the clients keep their own defaults.
    """
    if kafka.profile == "production":
        return {}
    return {
        "session_timeout_ms": int(kafka.local_session_timeout_s * 1000),
        "heartbeat_interval_ms": int(kafka.local_heartbeat_interval_s * 1000),
    }
