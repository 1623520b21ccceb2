"""Session fixtures: a real broker and a real Redis, started by the project's own launcher
on free ports, or the servers named by MEMBERPULSE_KAFKA_BOOTSTRAP / MEMBERPULSE_REDIS_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from memberpulse.streams.local import launcher
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import ensure_topics
from tests.helpers import TOPIC_SETTINGS


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a live Kafka-compatible broker and Redis for the whole session."""
    home = tmp_path_factory.mktemp("mp-home")
    settings = Settings(home=home)
    external_kafka = os.environ.get("MEMBERPULSE_KAFKA_BOOTSTRAP")
    external_redis = os.environ.get("MEMBERPULSE_REDIS_URL")
    wanted = [
        name
        for name, external in (("kafka", external_kafka), ("redis", external_redis))
        if not external
    ]
    info = launcher.up(settings, components=wanted) if wanted else None
    try:
        live = info.apply_to(settings) if info else settings
        if external_kafka:
            live = live.model_copy(update={"kafka_bootstrap": external_kafka})
        if external_redis:
            live = live.model_copy(update={"redis_url": SecretStr(external_redis)})
        yield live
    finally:
        if info is not None:
            launcher.down(settings)


@pytest.fixture
def isolated(servers: Settings, tmp_path: Path) -> Settings:
    """`servers` with fresh topic names and key prefix, so tests cannot see each other."""
    tag = uuid.uuid4().hex[:8]
    update: dict[str, object] = {
        name: f"t{tag}.{getattr(servers, name)}" for name in TOPIC_SETTINGS
    }
    update |= {"redis_key_prefix": f"mp{tag}", "home": tmp_path / "home"}
    settings = servers.model_copy(update=update)
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="session")
def cluster_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for a real local 3-node Redis Cluster (started once per session)."""
    from tests.redis_cluster import redis_cluster

    workdir = tmp_path_factory.mktemp("redis-cluster")
    with redis_cluster(workdir) as ports:
        yield Settings(
            home=workdir / "home",
            redis_url=f"redis://127.0.0.1:{ports[0]}/0",
            redis_cluster=True,
        )


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry holding one small trained, exported and promoted model.

    Trained here on simulated members (no download), once per session (~45 s: smaller
    models do not tell a silent member from a loyal one): the worker tests
    score with a real ONNX model. Tests that change the registry copy it first.
    """
    from dataclasses import replace

    from memberpulse.export.pipeline import export_model
    from memberpulse.models.config import DatasetConfig, NetworkConfig, TrainConfig
    from memberpulse.models.eventlog import load_events
    from memberpulse.models.snapshot import StateSpec
    from memberpulse.models.train import train
    from memberpulse.streams.serving.registry import Registry
    from memberpulse.streams.simulate import SimConfig, simulate_to_file

    root = tmp_path_factory.mktemp("served-model")
    simulate_to_file(SimConfig(members=1_500, days=90, seed=5), root / "events.parquet")
    config = TrainConfig(
        network=NetworkConfig(hidden=32, heads=2, ffn=64, layers=1),
        dataset=DatasetConfig(horizon_days=21, sequence_length=16),
        epochs=4,
    )
    train(
        load_events(root / "events.parquet"), root / "model", replace(config, seed=3), StateSpec()
    )
    onnx_file = export_model(root / "model", root / "onnx" / "model.onnx", 10, variants=False).onnx
    registry = Registry(root / "registry")
    registry.promote(registry.add(onnx_file))
    return registry.root
