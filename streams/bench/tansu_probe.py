"""Probe: how fast a consumer reads a tansu topic back, by how the records were batched.

Not a test and not a `memberpulse bench` command: a measurement behind BENCHMARKS.md's
soak section ("Soak, and why it stalled"). A live producer writes record batches of a few
records each; a consumer that fell behind then has to read thousands of small batches per
partition. This starts a private tansu, writes N records in batches of B records
(librdkafka `batch.num.messages`, no linger) to a 4-partition topic, and times reading
back min(N, 50,000) records with `assign()` (a 120 s cap): from offset 0, or with
`--tail` only the last 1 % of each partition (a consumer that is nearly caught up).

    .venv/bin/python -m memberpulse.streams.bench.tansu_probe --records 200000 --batch 5 [--tail]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Final

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from memberpulse.streams.bench.e2e import cpu_seconds
from memberpulse.streams.local.stack import find_tansu, free_port, port_open
from memberpulse.streams.settings import Settings

PARTITIONS: Final = 4
READ_BACK: Final = 50_000
CAP_S: Final = 120.0
IDLE_S: Final = 10.0
TAIL_SHARE: Final = 100  # --tail reads the last 1/TAIL_SHARE of each partition
PAYLOAD: Final = b"x" * 150  # about the size of one JSON event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5, help="records per produced batch")
    parser.add_argument("--tail", action="store_true", help="read the last 1 %% only")
    parser.add_argument(
        "--fetch-wait-ms", type=int, default=500, help="the consumer's fetch.wait.max.ms"
    )
    args = parser.parse_args()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    tansu = subprocess.Popen(
        [str(find_tansu(Settings())), "broker", "--listener-url", url,
         "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if time.monotonic() > deadline:
                raise SystemExit("tansu did not open its port")
            time.sleep(0.1)  # polling the port: tansu has no readiness signal
        bootstrap = f"127.0.0.1:{port}"
        print(measure(bootstrap, args.records, args.batch, args.tail, args.fetch_wait_ms))
        print(idle_cost(bootstrap, tansu.pid, args.fetch_wait_ms))
    finally:
        tansu.kill()  # tansu ignores SIGTERM


def idle_cost(bootstrap: str, pid: int, fetch_wait_ms: int) -> str:
    """tansu's CPU while one consumer, caught up, polls the topic's end for IDLE_S."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "idle",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
            "auto.offset.reset": "latest",
        }
    )
    consumer.assign([TopicPartition("probe", p, OFFSET_END) for p in range(PARTITIONS)])
    consumer.consume(1, 2.0)  # connected and positioned at the end
    before, started = cpu_seconds(pid), time.monotonic()
    while time.monotonic() - started < IDLE_S:
        consumer.consume(1000, 0.5)
    used = cpu_seconds(pid) - before
    consumer.close()
    share = used / IDLE_S
    return f"caught-up consumer, fetch wait {fetch_wait_ms} ms: tansu used {share:.0%} of a core"


def measure(bootstrap: str, records: int, batch: int, tail: bool, fetch_wait_ms: int) -> str:
    topic = "probe"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures need it alive
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": batch}
    )
    writing = time.monotonic()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, PAYLOAD, str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    written_s = time.monotonic() - writing
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "probe",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
        }
    )
    starts = dict.fromkeys(range(PARTITIONS), 0)
    if tail:
        for p in starts:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            starts[p] = high - high // TAIL_SHARE
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    ahead = records - sum(starts.values())
    wanted, got, started = min(ahead, READ_BACK), 0, time.monotonic()
    while got < wanted and time.monotonic() - started < CAP_S:
        got += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    seconds = time.monotonic() - started
    consumer.close()
    where = "the last 1 %" if tail else "from offset 0"
    return (
        f"{records:,} records in batches of {batch}, written in {written_s:.1f} s "
        f"({records / written_s:,.0f}/s); {where}: read back {got:,} of {wanted:,} in "
        f"{seconds:.1f} s ({got / seconds:,.0f} records/s)"
    )


if __name__ == "__main__":
    main()
