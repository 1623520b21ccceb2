"""`memberpulse bench bounds` at a small size: every measurement runs and reports its keys
(figures are measured, never asserted: BENCHMARKS.md). What must hold whatever the
machine is asserted: no member key without a TTL, a flooding member's state key about
the same size after 200 times the events."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memberpulse.streams.bench.bounds import bench_bounds
from memberpulse.streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_bounds_finds_every_member_key_expiring_and_a_flood_bounded(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(served_registry, registry, symlinks=True)
    settings = isolated.model_copy(update={"model_registry": registry})
    report = bench_bounds(
        settings, members=3_000, flood_events=12_000, rate=200.0, latency_seconds=5,
        out_dir=tmp_path / "out",
    )  # fmt: skip
    many = report["many_members"]
    assert many["member_keys"] == 3_000  # one state key each
    assert many["member_keys_without_ttl"] == 0
    assert many["bytes_per_member"] > 0
    flood = report["one_member_flood"]
    sizes = {row["events"]: row["state_key_bytes"] for row in flood["state_key_bytes_by_events"]}
    assert set(sizes) == {64, 1_000, 10_000, 12_000}
    # a full sequence at 64 events; 12,000 later the key is within a few ids' bytes of it
    # (1,560 to 1,592 bytes from 64 to a million events when measured)
    assert max(sizes.values()) <= 1.25 * sizes[64]
    assert flood["longest_id_key_chars"] < 100  # a 2,048-character id: a hashed key
    for phase in ("alone", "flooded"):
        row = report["flood_latency"][phase]
        assert row["sent"] == row["offered_eps"] * 5
        assert row["outputs_timed"] > 0
        assert row["p50_ms"] <= row["p99_ms"]
    assert report["flood_latency"]["flooded"]["offered_eps"] == 400.0
