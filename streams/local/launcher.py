"""`stack up | down | status`: the local tansu + redis-server stack under MEMBERPULSE_HOME."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
from pydantic import SecretStr

from memberpulse.models.errors import KafkaUnavailable, StackError
from memberpulse.streams.local import stack
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import ensure_topics, wait_for_broker

ALL_COMPONENTS = (stack.KAFKA, stack.REDIS)


@dataclass(frozen=True)
class StackInfo:
    """A running local stack: its processes and the settings that point at it."""

    records: dict[str, stack.ProcessRecord]
    already_running: bool

    def kafka_bootstrap(self) -> str | None:
        """Bootstrap address, when the broker is part of this stack."""
        record = self.records.get(stack.KAFKA)
        return None if record is None else stack.kafka_bootstrap(record)

    def redis_url(self) -> str | None:
        """Redis URL, when redis-server is part of this stack."""
        record = self.records.get(stack.REDIS)
        return None if record is None else stack.redis_url(record)

    def apply_to(self, settings: Settings) -> Settings:
        """`settings` pointed at this stack's broker and Redis."""
        update: dict[str, object] = {}
        if (bootstrap := self.kafka_bootstrap()) is not None:
            update["kafka_bootstrap"] = bootstrap
        if (url := self.redis_url()) is not None:
            update["redis_url"] = SecretStr(url)
        return settings.model_copy(update=update)


def up(settings: Settings, components: Iterable[str] = ALL_COMPONENTS) -> StackInfo:
    """Start what is not running, wait until it answers, create topics; idempotent."""
    wanted = list(components)
    records = {
        name: record
        for name, record in stack.load_state(settings).items()
        if stack.is_alive(record)
    }
    already = all(name in records for name in wanted)
    starters: dict[str, Callable[[Settings], stack.ProcessRecord]] = {
        stack.KAFKA: _start_kafka,
        stack.REDIS: _start_redis,
    }
    started: list[stack.ProcessRecord] = []
    try:
        for name in wanted:
            if name not in records:
                records[name] = starters[name](settings)
                started.append(records[name])
        info = StackInfo(records, already_running=already)
        if stack.KAFKA in records:
            ensure_topics(info.apply_to(settings).kafka)
    except BaseException:
        for record in started:
            stack.stop(record, settings.stack.stop_grace_s)
        raise
    stack.save_state(settings, records)
    return info


def _start_kafka(settings: Settings) -> stack.ProcessRecord:
    binary = stack.find_tansu(settings)
    port = stack.pick_port(settings.stack.kafka_port, "the tansu broker")
    url = f"tcp://{stack.LOOPBACK}:{port}"
    command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
    record = stack.spawn(stack.KAFKA, command, port, stack.stack_dir(settings) / "tansu.log")
    probe = settings.model_copy(update={"kafka_bootstrap": stack.kafka_bootstrap(record)})
    _await(record, settings, lambda: _kafka_answers(probe))
    return record


def _start_redis(settings: Settings) -> stack.ProcessRecord:
    binary = stack.find_redis_server(settings)
    port = stack.pick_port(settings.stack.redis_port, "redis-server")
    workdir = stack.stack_dir(settings) / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        "--port", str(port),
        "--bind", stack.LOOPBACK,
        "--save", "",
        "--appendonly", "yes" if settings.stack.redis_appendonly else "no",
        "--appendfsync", settings.stack.redis_appendfsync,
        "--dir", str(workdir),
    ]  # fmt: skip
    record = stack.spawn(stack.REDIS, command, port, stack.stack_dir(settings) / "redis.log")
    _await(record, settings, lambda: _redis_answers(stack.redis_url(record)))
    return record


def _await(record: stack.ProcessRecord, settings: Settings, answers: Callable[[], bool]) -> None:
    deadline = time.monotonic() + settings.stack.start_timeout_s
    while time.monotonic() < deadline:
        if not stack.is_alive(record):
            raise StackError(
                f"{record.name} exited during start; log {record.log}:\n{stack.tail(record.log)}"
            )
        if answers():
            return
        time.sleep(stack.POLL_S)
    stack.stop(record, settings.stack.stop_grace_s)
    raise StackError(
        f"{record.name} did not answer on port {record.port} within "
        f"{settings.stack.start_timeout_s} s; log {record.log}:\n{stack.tail(record.log)}"
    )


def _kafka_answers(settings: Settings) -> bool:
    try:
        return wait_for_broker(settings.kafka, timeout_s=0.5) > 0
    except KafkaUnavailable:
        return False


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def down(settings: Settings) -> list[str]:
    """Stop the recorded processes that are still ours; return the names stopped."""
    stopped = [
        name
        for name, record in stack.load_state(settings).items()
        if stack.stop(record, settings.stack.stop_grace_s)
    ]  # fmt: skip
    stack.state_file(settings).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> list[stack.ComponentStatus]:
    """Health of each recorded component: process alive and port answering."""
    checks: dict[str, Callable[[stack.ProcessRecord], bool]] = {
        stack.KAFKA: lambda r: _kafka_answers(
            settings.model_copy(update={"kafka_bootstrap": stack.kafka_bootstrap(r)})
        ),
        stack.REDIS: lambda r: _redis_answers(stack.redis_url(r)),
    }
    result = []
    for name, record in stack.load_state(settings).items():
        running = stack.is_alive(record)
        answering = running and checks[name](record)
        result.append(stack.ComponentStatus(name, record.pid, record.port, running, answering))
    return result
