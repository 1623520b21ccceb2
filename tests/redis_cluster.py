"""A real 3-node Redis Cluster on loopback for tests (same redis-server the stack uses)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from memberpulse.streams.local import stack
from memberpulse.streams.settings import Settings

SLOTS = 16384
BUS_OFFSET = 10_000  # redis cluster's bus port is the client port + 10000


@contextmanager
def redis_cluster(
    workdir: Path, nodes: int = 3, timeout: float = 30.0, extra: tuple[str, ...] = ()
) -> Iterator[list[int]]:
    """Start `nodes` cluster-enabled redis-servers (each given the `extra` arguments),
    split the slots, join them; yield ports."""
    binary = stack.find_redis_server(Settings(home=workdir))
    records: list[stack.ProcessRecord] = []
    try:
        for index in range(nodes):
            folder = workdir / f"node{index}"
            folder.mkdir(parents=True)
            records.append(_start_node(binary, folder, index, timeout, extra))
        clients = [redis.Redis(port=r.port, socket_timeout=5) for r in records]
        share = SLOTS // nodes
        for index, client in enumerate(clients):
            last = SLOTS if index == nodes - 1 else (index + 1) * share
            client.execute_command("CLUSTER ADDSLOTS", *range(index * share, last))
        for record in records[1:]:
            clients[0].execute_command("CLUSTER MEET", stack.LOOPBACK, record.port)
        _wait(lambda: all(_healthy(c, nodes) for c in clients), timeout, "cluster_state ok")
        yield [r.port for r in records]
    finally:
        for record in records:
            stack.stop(record, grace_s=2.0)


PORT_ATTEMPTS = 5  # a free port can be taken between the check and the bind: try another


def _start_node(
    binary: Path, folder: Path, index: int, timeout: float, extra: tuple[str, ...]
) -> stack.ProcessRecord:
    """One cluster-enabled redis-server that answers on its port as itself (its INFO
    process id is the one spawned): a port lost to another process between the check
    and the bind makes the server exit, and another port is tried."""
    for attempt in range(PORT_ATTEMPTS):
        port = _cluster_port()
        command = [
            str(binary), "--port", str(port), "--bind", stack.LOOPBACK,
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--dir", str(folder), "--save", "", "--appendonly", "no", *extra,
        ]  # fmt: skip
        log = folder / f"redis-{attempt}.log"
        record = stack.spawn(f"redis-{index}", command, port, log)
        if _answers_as(record, timeout):
            return record
        stack.stop(record, grace_s=2.0)
    raise AssertionError(f"redis cluster node {index}: no port kept after {PORT_ATTEMPTS} tries")


def _answers_as(record: stack.ProcessRecord, timeout: float) -> bool:
    """Whether the server spawned as `record` answers on its port before `timeout`."""
    client = redis.Redis(port=record.port, socket_timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(client.info("server")["process_id"]) == record.pid
        except redis.RedisError:
            if "Failed listening" in Path(record.log).read_text(errors="replace"):
                return False
        time.sleep(0.05)
    return False


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too and below 65536."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 30_000)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise AssertionError("no free port pair for a redis cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((stack.LOOPBACK, port))
        except OSError:
            return False
    return True


def _healthy(client: redis.Redis, nodes: int) -> bool:
    fields = client.cluster("INFO")  # redis-py parses it into a dict of strings
    return bool(
        fields.get("cluster_state") == "ok" and str(fields.get("cluster_known_nodes")) == str(nodes)
    )


def _wait(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"redis cluster: {what} not reached within {timeout} s")
        time.sleep(0.05)
