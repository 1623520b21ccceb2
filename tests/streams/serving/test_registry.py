"""The model registry and hot reload: promotion, refusals, swaps under a running scorer."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from memberpulse.models.bundle import load_heldout
from memberpulse.streams.serving.files import card_path
from memberpulse.streams.serving.registry import (
    ModelHolder,
    ModelRejected,
    Registry,
    check,
    redis_promoted,
)
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.client import make_redis
from tests.helpers import wait_until


def _registry_with_both(tmp_path: Path, exported: list[Path]) -> tuple[Registry, list[str]]:
    registry = Registry(tmp_path / "registry")
    return registry, [registry.add(path) for path in exported]


def test_promote_switches_current_and_checks_the_model(
    tmp_path: Path, exported: list[Path]
) -> None:
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    assert registry.current() is None
    registry.promote(v1)
    assert registry.current() == v1
    registry.promote(v2)
    assert registry.current() == v2
    with pytest.raises(ValueError, match="no model version"):
        registry.promote("nope")


def test_corrupt_file_and_mismatched_schema_are_refused(
    tmp_path: Path, exported: list[Path]
) -> None:
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    holder = ModelHolder(registry)
    registry.promote(v1)
    assert holder.refresh()
    data = bytearray(registry.path(v2).read_bytes())
    data[len(data) // 2] ^= 0xFF
    registry.path(v2).write_bytes(bytes(data))
    with pytest.raises(ModelRejected, match="corrupt"):
        check(registry, v2)
    (registry.root / "current").unlink()
    (registry.root / "current").symlink_to(v2)  # as if promoted before the file broke
    assert not holder.refresh()
    assert holder.current().version == v1
    assert holder.refusals == 1

    card_file = card_path(registry.path(v1))
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps(card | {"feature_schema": "0" * 16}))
    with pytest.raises(ModelRejected, match="schema"):
        registry.promote(v1)


def test_a_promotion_while_a_scoring_thread_runs_swaps_between_batches_losing_none(
    models: tuple[Path, Path], tmp_path: Path, exported: list[Path]
) -> None:
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    registry.promote(v1)
    holder = ModelHolder(registry)
    holder.refresh()
    features, _, _ = load_heldout(models[0])
    batches: queue.Queue[int | None] = queue.Queue()
    scored: list[tuple[int, str, int]] = []

    def loop() -> None:  # the worker's shape: refresh between batches, then score
        while (batch := batches.get()) is not None:
            holder.refresh()
            model = holder.current()
            rows = features.take(np.arange(batch % 7 + 1))
            scored.append((batch, model.version, len(model.scorer.score(rows))))

    worker = threading.Thread(target=loop)
    worker.start()
    for batch in range(40):
        if batch == 20:  # promote while the loop runs, once half the batches were scored
            wait_until(lambda: len(scored) >= 15, timeout=60, what="first batches scored")
            registry.promote(v2)
        batches.put(batch)
    batches.put(None)
    worker.join(timeout=120)
    assert [b for b, _, _ in scored] == list(range(40))  # each batch once, in order
    assert all(n == b % 7 + 1 for b, _, n in scored)
    versions = [v for _, v, _ in scored]
    switch = versions.index(v2)
    assert switch >= 15
    assert set(versions[:switch]) == {v1}
    assert set(versions[switch:]) == {v2}
    assert holder.swaps == 2


def test_refusals_and_swaps_are_metrics(tmp_path: Path, exported: list[Path]) -> None:
    registry, (v1, _v2) = _registry_with_both(tmp_path, exported)
    before = REGISTRY.get_sample_value("memberpulse_model_refusals_total", {"reason": "corrupt"})
    registry.path(v1).write_bytes(b"not onnx")
    (registry.root / "current").symlink_to(v1)
    holder = ModelHolder(registry)
    assert not holder.refresh()
    after = REGISTRY.get_sample_value("memberpulse_model_refusals_total", {"reason": "corrupt"})
    assert (after or 0) - (before or 0) == 1


@pytest.mark.integration
def test_promotion_is_published_in_redis_for_every_worker(
    isolated: Settings, tmp_path: Path, exported: list[Path]
) -> None:
    client = make_redis(isolated.redis)
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    prefix = isolated.redis.key_prefix
    elsewhere = ModelHolder(registry, promoted=redis_promoted(client, prefix))  # another host
    assert not elsewhere.refresh()  # nothing promoted yet
    registry.promote(v1, client, prefix)
    assert elsewhere.refresh()
    assert elsewhere.current().version == v1
    registry.promote(v2, client, prefix)
    assert elsewhere.refresh()
    assert elsewhere.current().version == v2


def test_promoting_a_corrupt_model_from_the_cli_is_a_one_line_error(
    tmp_path: Path, exported: list[Path]
) -> None:
    import os
    import subprocess
    import sys

    registry, (v1, _v2) = _registry_with_both(tmp_path, exported)
    data = bytearray(registry.path(v1).read_bytes())
    data[len(data) // 2] ^= 0xFF
    registry.path(v1).write_bytes(bytes(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERPULSE_")}
    env |= {
        "MEMBERPULSE_HOME": str(tmp_path / "home"),
        "MEMBERPULSE_MODEL_REGISTRY": str(registry.root),
    }
    result = subprocess.run(
        [sys.executable, "-c", "from memberpulse.streams.cli.main import main; main()",
         "model", "promote", v1],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: model {v1} refused (corrupt): {registry.path(v1)} does not match its card's "
        "checksum"
    ]
    assert registry.current() is None
