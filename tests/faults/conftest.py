"""Fixtures of the fault suite: a Redis and a broker of the test's own, a copy of the model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from memberpulse.streams.settings import Settings
from tests.faults.harness import OwnBroker, OwnRedis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server only this test uses (paused, killed or filled at will)."""
    redis = OwnRedis.start(Settings(home=tmp_path / "redis-home", stack_stop_grace_s=1.0))
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """A tansu broker only this test uses (paused at will without stalling the others)."""
    broker = OwnBroker.start(Settings(home=tmp_path / "broker-home", stack_stop_grace_s=1.0))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def registry(served_registry: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(served_registry, target, symlinks=True)
    return target
