"""Producing and consuming through the real broker; the partitioner contract; topics."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis
from aiokafka.partitioner import murmur2

from memberpulse.models.contract import Event, encode_event
from memberpulse.models.errors import ConfigError
from memberpulse.streams.local.live import plan_live, produce_live
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.decode import DeadLetter, EventDecoder, Origin
from memberpulse.streams.worker.kafka import (
    ensure_topics,
    make_admin,
    make_producer,
    partition_counts,
    read_from_start,
)
from tests.helpers import make_event

pytestmark = pytest.mark.integration


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records (Java client, aiokafka, Faust)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_keyed_records_land_where_java_clients_put_them(isolated: Settings) -> None:
    producer = make_producer(isolated.kafka)
    members = [f"M{i:06d}" for i in range(400)] + ["ünïcødé", "{braces}:*", "a b\nc"]
    for member in members:
        event = make_event(member_id=member, event_id=f"e-{member}")
        producer.produce(
            isolated.kafka.topic_clicks, key=member.encode(), value=encode_event(event)
        )
    assert producer.flush(10) == 0
    records = list(read_from_start(isolated.kafka, [isolated.kafka.topic_clicks]))
    assert len(records) == len(members)
    for record in records:
        assert record.partition() == java_partition(record.key(), isolated.kafka.input_partitions)
    assert len({record.partition() for record in records}) == isolated.kafka.input_partitions


def test_records_decode_back_to_the_events_sent(isolated: Settings) -> None:
    producer = make_producer(isolated.kafka)
    sent = [make_event(event_id=f"e{i}", member_id=f"M{i % 7}") for i in range(50)]
    for event in sent:
        producer.produce(
            isolated.kafka.topic_purchases, key=event.member_id.encode(), value=encode_event(event)
        )
    producer.flush(10)
    decoder = EventDecoder(isolated.worker)
    now = int(time.time() * 1000)
    received = []
    for record in read_from_start(isolated.kafka, [isolated.kafka.topic_purchases]):
        origin = Origin(record.topic(), record.partition(), record.offset(), record.key())
        received.append(decoder.decode(record.value(), origin, now))
    assert sorted(received, key=lambda e: e.event_id) == sorted(sent, key=lambda e: e.event_id)


def test_ensure_topics_is_idempotent_and_creates_all(isolated: Settings) -> None:
    counts = ensure_topics(isolated.kafka)
    assert counts == ensure_topics(isolated.kafka)
    for topic in (*isolated.kafka.input_topics, isolated.kafka.topic_dlq):
        assert counts[topic] == isolated.kafka.input_partitions
    for topic in isolated.kafka.output_topics:
        assert counts[topic] == isolated.kafka.output_partitions


def test_input_partition_mismatch_is_refused(isolated: Settings) -> None:
    from confluent_kafka.admin import NewTopic

    skewed = isolated.model_copy(update={"topic_browses": isolated.kafka.topic_browses + ".skewed"})
    admin = make_admin(skewed.kafka)  # keep the handle alive until the futures resolve
    for future in admin.create_topics([NewTopic(skewed.kafka.topic_browses, 2, -1)]).values():
        future.result()
    assert partition_counts(skewed.kafka, [skewed.kafka.topic_browses]) == {
        skewed.kafka.topic_browses: 2
    }
    with pytest.raises(ConfigError, match="co-partitioned"):
        ensure_topics(skewed.kafka)


def test_live_producer_sends_everything_keyed_and_bad_records_are_caught(
    isolated: Settings,
) -> None:
    plan = plan_live(seconds=30, speed=10_000, rate=50_000)
    start = plan.sim_start_ms
    events = [
        Event(
            f"e{i}",
            f"M{i % 23}",
            ("click", "browse", "purchase")[i % 3],
            f"I{i % 11}",
            start + i * 500,
            "C1",
            9.5,
            1,
            None,
        )
        for i in range(600)
    ]
    summary = produce_live(isolated, plan, events, bad_fraction=0.2, seed=3)
    assert not summary.cut_short
    assert summary.sent == len(events) == summary.delivered
    assert summary.failed == 0
    assert 60 < sum(summary.bad.values()) < 180
    decoder = EventDecoder(isolated.worker)
    now = int(time.time() * 1000)
    seen: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for record in read_from_start(isolated.kafka, isolated.kafka.input_topics):
        seen[record.topic()] += 1
        result = decoder.decode(record.value(), Origin(key=record.key()), now)
        if isinstance(result, DeadLetter):
            reasons[result.reason.value] += 1
        else:
            assert record.key() == result.member_id.encode()
    assert sum(seen.values()) == summary.sent
    assert dict(seen) == dict(summary.per_topic)
    assert reasons == summary.bad


def test_redis_from_fixture_reads_and_writes(servers: Settings) -> None:
    client = redis.Redis.from_url(servers.redis.url.get_secret_value())
    client.set("mp-test:{m1}:probe", b"value", ex=30)
    assert client.get("mp-test:{m1}:probe") == b"value"
    assert 0 < client.ttl("mp-test:{m1}:probe") <= 30
    client.delete("mp-test:{m1}:probe")


async def test_group_consumer_with_local_profile_gets_records(isolated: Settings) -> None:
    """A group member (as Faust uses) joins and receives records under the local profile."""
    from aiokafka import AIOKafkaConsumer

    from memberpulse.streams.worker.kafka import group_timing_ms

    producer = make_producer(isolated.kafka)
    for i in range(20):
        producer.produce(
            isolated.kafka.topic_clicks,
            key=f"M{i}".encode(),
            value=encode_event(make_event(event_id=f"g{i}", member_id=f"M{i}")),
        )
    assert producer.flush(10) == 0
    consumer = AIOKafkaConsumer(
        isolated.kafka.topic_clicks,
        bootstrap_servers=isolated.kafka.bootstrap,
        group_id=f"{isolated.kafka.topic_clicks}.group",
        auto_offset_reset="earliest",
        **group_timing_ms(isolated.kafka),
    )
    await consumer.start()
    try:
        seen: set[bytes] = set()
        deadline = time.monotonic() + 20
        while len(seen) < 20 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            seen.update(record.value for records in batches.values() for record in records)
        assert len(seen) == 20
    finally:
        await consumer.stop()


def test_a_record_too_large_is_refused_for_good_and_the_rest_confirmed(
    isolated: Settings,
) -> None:
    from memberpulse.streams.worker.sink import KafkaSink

    sink = KafkaSink(isolated.kafka, **{"message.max.bytes": 1000})  # librdkafka's minimum
    topic = isolated.kafka.topic_tiers
    sink.produce(topic, b"M1", b"x" * 2000, [("output_id", b"tier:M1:1")])
    sink.produce(topic, b"M2", b'{"small": true}', [("output_id", b"tier:M2:1")])
    refused = sink.flush()
    assert [(r.topic, r.key, r.size, r.headers) for r in refused] == [
        (topic, b"M1", 2000, [("output_id", b"tier:M1:1")])
    ]
    assert "too large" in refused[0].error.lower()
    assert sink.confirmed == 1
    assert [m.value() for m in read_from_start(isolated.kafka, [topic])] == [b'{"small": true}']
