"""`bench fuzz` at CI size: seeded, under a minute; hostile inputs through a real worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memberpulse.streams.bench.fuzz import HOSTILE, bench_fuzz
from memberpulse.streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_hostile_inputs_crash_nothing_and_every_input_is_accounted_for(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(served_registry, registry, symlinks=True)
    settings = isolated.model_copy(update={"model_registry": registry})
    report = bench_fuzz(settings, inputs=4_000, seed=7)
    assert (report["crashes"], report["unaccounted"], report["worker_exit_code"]) == (0, 0, 0)
    assert report["inputs"] == sum(report["cases"].values())
    # every hostile case was sent (or refused by the producer before any worker saw it)
    seen = set(report["cases"]) | set(report["refused_at_produce"])
    assert set(HOSTILE) <= seen
    assert set(report["refused_at_produce"]) == {"over_broker_limit"}
    assert report["applied"] > 0
    assert sum(report["dlq_by_reason"].values()) > len(HOSTILE)
    assert {"malformed_json", "oversize", "non_finite", "not_utf8"} <= set(report["dlq_by_reason"])
