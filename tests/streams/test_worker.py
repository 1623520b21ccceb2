"""`memberpulse worker` as a process: real broker, real Redis, real ONNX model, real signals."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from memberpulse.models.contract import Event
from memberpulse.streams import keys
from memberpulse.streams.events import encode_event
from memberpulse.streams.kafka import (
    client_config,
    make_producer,
    partition_counts,
    read_from_start,
)
from memberpulse.streams.redis_client import make_redis
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.stack import free_port
from memberpulse.streams.state_types import decode_decision
from tests.helpers import validate_record, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_EXIT_DEADLINE_S = 60.0
_FLOW_DEADLINE_S = 180.0


def _env(settings: Settings, registry: Path, **extra: object) -> dict[str, str]:
    fields = {
        "home": settings.home,
        "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url.get_secret_value(),
        "redis_key_prefix": settings.redis_key_prefix,
        "model_registry": registry,
        "worker_group_id": f"g-{settings.redis_key_prefix}",
        "worker_log_level": "info",
        **{name: getattr(settings, name) for name in _TOPICS},
        **extra,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERPULSE_")}
    env |= {f"MEMBERPULSE_{k.upper()}": str(v) for k, v in fields.items()}
    return env


_TOPICS = (
    "topic_clicks",
    "topic_browses",
    "topic_purchases",
    "topic_dlq",
    "topic_churn_alerts",
    "topic_recommendations",
    "topic_coupons",
    "topic_tiers",
)


class _Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        env = env | {"MEMBERPULSE_WORKER_WEB_PORT": str(self.port)}
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from memberpulse.streams.cli import main; main()", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        totals: dict[str, float] = defaultdict(float)
        for line in text.splitlines():
            match = re.match(r"^(memberpulse_[a-z_]+?)(?:\{.*\})? ([0-9.e+-]+)$", line)
            if match:
                totals[match[1]] += float(match[2])
        return totals

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                return bool(orjson.loads(r.read())["ready"])
        except OSError:
            return False

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(_EXIT_DEADLINE_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(_EXIT_DEADLINE_S)
        self._log.close()


@contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[_Worker]:
    worker = _Worker(env, log)
    try:
        yield worker
    finally:
        worker.kill()


def _registry_copy(served_registry: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(served_registry, target, symlinks=True)
    return target


def _produce(settings: Settings, events: list[Event], bad: int = 0) -> int:
    producer = make_producer(settings)
    for event in events:
        producer.produce(
            settings.topic_for_type(event.type), encode_event(event), event.member_id.encode()
        )
    for i in range(bad):
        producer.produce(settings.topic_clicks, b'{"event_id": "bad-%d"' % i, b"M-bad")
    assert producer.flush(30) == 0
    return len(events) + bad


def _events(members: int, seed: int) -> list[Event]:
    return list(Simulator(SimConfig(members=members, days=60, seed=seed)).iter_events())


def _accounted(worker: _Worker) -> float:
    m = worker.metrics()
    return (
        m.get("memberpulse_events_applied_total", 0)
        + m.get("memberpulse_duplicates_total", 0)
        + m.get("memberpulse_dlq_total", 0)
    )


def _outputs(settings: Settings) -> list[bytes]:
    return [m.value() for m in read_from_start(settings, settings.output_topics)]


def _committed_all(settings: Settings, group: str) -> bool:
    """Every input record is at or below the group's committed offsets (count by reading)."""
    ends: Counter[tuple[str, int]] = Counter()
    for message in read_from_start(settings, settings.input_topics, idle_timeout_s=0.5):
        ends[(message.topic(), message.partition())] = message.offset() + 1
    counts = partition_counts(settings, settings.input_topics)
    consumer = Consumer(client_config(settings) | {"group.id": group, "enable.auto.commit": False})
    try:
        wanted = [TopicPartition(t, p) for t in settings.input_topics for p in range(counts[t])]
        committed = consumer.committed(wanted, timeout=10)
    finally:
        consumer.close()
    return all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed)


def test_worker_scores_the_stream_validates_outputs_and_stops_cleanly_on_sigterm(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    registry = _registry_copy(served_registry, tmp_path)
    env = _env(isolated, registry)
    with _worker(env, tmp_path / "worker.log") as worker:
        wait_until(worker.ready, timeout=60, interval=0.2, what="worker ready")
        produced = _produce(isolated, _events(members=30, seed=21), bad=3)
        wait_until(
            lambda: _accounted(worker) >= produced,
            timeout=_FLOW_DEADLINE_S,
            interval=0.5,
            what="every event applied, skipped or dead-lettered",
        )
        assert _accounted(worker) == produced  # conservation
        letters = [orjson.loads(m.value()) for m in read_from_start(isolated, [isolated.topic_dlq])]
        assert Counter(d["reason"] for d in letters) == Counter({"malformed_json": 3})
        assert worker.stop() == 0
    log = (tmp_path / "worker.log").read_text()
    assert '"level": "error"' not in log, log[-3000:]
    outputs = [orjson.loads(value) for value in _outputs(isolated)]
    assert {o["kind"] for o in outputs} >= {"recommendation", "tier"}
    for record in outputs:
        validate_record(record)
    assert len({o["id"] for o in outputs}) == len(outputs)
    assert _committed_all(isolated, env["MEMBERPULSE_WORKER_GROUP_ID"])


def test_kill_9_after_recording_loses_no_decision_and_never_renames_one(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    registry = _registry_copy(served_registry, tmp_path)
    env = _env(isolated, registry, batch_max_size=64)
    events = _events(members=25, seed=22)
    log = tmp_path / "worker.log"
    with _worker(env | {"MEMBERPULSE_FAILPOINT_KILL_AFTER_RECORD": "5"}, log) as doomed:
        wait_until(doomed.ready, timeout=60, interval=0.2, what="worker ready")
        _produce(isolated, events)
        assert doomed.proc.wait(_FLOW_DEADLINE_S) == -signal.SIGKILL
    with _worker(env, log) as restarted:
        group = env["MEMBERPULSE_WORKER_GROUP_ID"]
        wait_until(
            lambda: _committed_all(isolated, group),
            timeout=_FLOW_DEADLINE_S,
            interval=1.0,
            what="the group committed every input record",
        )
        resent = restarted.metrics()["memberpulse_outputs_resent_total"]
        assert restarted.stop() == 0
    assert resent > 0  # the killed batch's outbox went out again, under its ids

    by_id: dict[str, set[bytes]] = defaultdict(set)
    for value in _outputs(isolated):
        by_id[orjson.loads(value)["id"]].add(value)
    # a repeat is byte-identical: no decision exists under two ids or in two versions
    assert all(len(versions) == 1 for versions in by_id.values())
    # no decision lost: every episode the state counted has its record, 1..n, no gaps
    episodes: dict[tuple[str, str], list[int]] = defaultdict(list)
    for ident in by_id:
        kind, rest = ident.split(":", 1)
        member, episode = rest.rsplit(":", 1)
        episodes[(member, kind)].append(int(episode))
    redis = make_redis(isolated)
    members = {e.member_id for e in events}
    for member in members:
        blob = redis.get(keys.member_keys(isolated.redis_key_prefix, member)[1])
        state = decode_decision(blob)
        for kind, count in state.episodes.items():
            assert sorted(episodes[(member, kind)]) == list(range(1, count + 1)), (member, kind)
