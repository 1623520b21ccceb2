"""Session fixtures: a real broker and a real Redis, started by the project's own launcher
on free ports, or the servers named by MEMBERPULSE_KAFKA_BOOTSTRAP / MEMBERPULSE_REDIS_URL.

Every test that starts a server is an integration test (`make unit` runs the others):
a test using a server fixture gets the marker here; a test that starts one itself carries
it explicitly; and a guard fails any test without it that starts one anyway.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from pydantic import SecretStr

from memberpulse.streams.local import launcher, stack
from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import ensure_topics
from tests.helpers import TINY_TOP_K, TOPIC_SETTINGS

#: Fixtures that start (or stand for) a live broker or Redis. A test that uses one,
#: directly or through another fixture (`base`, `worker`, …), is an integration test.
SERVER_FIXTURES: Final = frozenset({"servers", "isolated", "cluster_settings"})
#: Executables that are servers, and `memberpulse` commands that start one (or a worker).
SERVER_BINARIES: Final = frozenset({"tansu", "redis-server"})
SERVER_COMMANDS: Final = (
    ("stack", "up"), ("demo",), ("worker",), ("bench", "state"), ("bench", "startup"),
    ("bench", "e2e"),
)  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


_running: dict[str, pytest.Item] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Remember the test being run (its setup included: session fixtures start there)."""
    _running["item"] = item
    try:
        return (yield)
    finally:
        _running.pop("item", None)


def _refuse_unless_integration(what: str) -> None:
    item = _running.get("item")
    if item is not None and item.get_closest_marker("integration") is None:
        pytest.fail(
            f"test {item.nodeid} starts a server ({what}) but is not marked integration: "
            "mark it `@pytest.mark.integration` or use the `servers`/`isolated` fixtures",
            pytrace=False,
        )


def _server_in(args: Any) -> str | None:
    """What server a Popen argument list starts, if it starts one."""
    if isinstance(args, str | bytes | os.PathLike):
        argv = os.fsdecode(args).split()
    else:
        argv = [os.fsdecode(a) for a in args]
    if not argv:
        return None
    if Path(argv[0]).name in SERVER_BINARIES:
        return argv[0]
    is_cli = Path(argv[0]).name == "memberpulse" or any(
        "memberpulse.streams.cli" in a for a in argv[1:3]
    )
    words = [a for a in argv[1:] if not a.startswith("-")]
    for command in SERVER_COMMANDS if is_cli else ():
        if any(tuple(words[i : i + len(command)]) == command for i in range(len(words))):
            return "memberpulse " + " ".join(command)
    return None


class _GuardedPopen(subprocess.Popen[Any]):
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        if (server := _server_in(args)) is not None:
            _refuse_unless_integration(server)
        super().__init__(args, *rest, **kwargs)


def _guarded(what: str, start: Any) -> Any:
    @functools.wraps(start)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _refuse_unless_integration(what)
        return start(*args, **kwargs)

    return guarded


@pytest.fixture(scope="session", autouse=True)
def _servers_only_in_integration_tests() -> Iterator[None]:
    """Fail, loudly, a test that starts a server without the integration marker."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launcher, "up", _guarded("launcher.up", launcher.up))
        patch.setattr(stack, "spawn", _guarded("stack.spawn", stack.spawn))
        patch.setattr(WorkerProcess, "__init__", _guarded("WorkerProcess", WorkerProcess.__init__))
        patch.setattr(subprocess, "Popen", _GuardedPopen)
        yield


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
    update: dict[str, object] = {name: f"t{tag}.{servers.value(name)}" for name in TOPIC_SETTINGS}
    update |= {"redis_key_prefix": f"mp{tag}", "home": tmp_path / "home"}
    settings = servers.model_copy(update=update)
    ensure_topics(settings.kafka)
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
        dataset=DatasetConfig(horizon_days=21, sequence_length=16, stride_days=7),
        epochs=4,
    )
    train(
        load_events(root / "events.parquet"), root / "model", replace(config, seed=3), StateSpec()
    )
    onnx_file = export_model(root / "model", root / "onnx" / "model.onnx", 10, variants=False).onnx
    registry = Registry(root / "registry")
    registry.promote(registry.add(onnx_file))
    return registry.root


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny trained models (different seeds, so different weights and versions), once
    per session, for the export, serving and `bench model` tests."""
    from dataclasses import replace

    from memberpulse.models.config import DatasetConfig, NetworkConfig, TrainConfig
    from memberpulse.models.eventlog import load_events
    from memberpulse.models.snapshot import StateSpec
    from memberpulse.models.train import train
    from memberpulse.streams.simulate import SimConfig, simulate_to_file

    tiny = TrainConfig(
        network=NetworkConfig(hidden=16, heads=2, ffn=32, layers=1),
        dataset=DatasetConfig(horizon_days=20, sequence_length=16),
        epochs=1,
    )
    root = tmp_path_factory.mktemp("models")
    simulate_to_file(SimConfig(members=300, days=80, seed=11), root / "events.parquet")
    log = load_events(root / "events.parquet")
    for seed in (1, 2):
        train(log, root / f"m{seed}", replace(tiny, seed=seed), StateSpec())
    return root / "m1", root / "m2"


@pytest.fixture(scope="session")
def exported(models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """`models` exported to ONNX (parity checked), top-K `TINY_TOP_K`."""
    from memberpulse.export.pipeline import export_model

    out = tmp_path_factory.mktemp("onnx")
    return [
        export_model(model, out / f"model{i}.onnx", TINY_TOP_K).onnx
        for i, model in enumerate(models)
    ]
