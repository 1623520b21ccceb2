"""`memberpulse bench e2e` end to end at a small size: every phase runs and every key of the
JSON the issue names is there (figures are measured, never asserted: BENCHMARKS.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memberpulse.streams.bench.e2e import bench_e2e, summary_lines
from memberpulse.streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_e2e_runs_every_phase_and_reports_the_documented_keys(
    isolated: Settings, served_registry: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(served_registry, registry, symlinks=True)
    settings = isolated.model_copy(update={"model_registry": registry})
    report = bench_e2e(
        settings,
        events=3_000,
        workers=1,
        load=0.5,
        latency_seconds=6,
        naive_seconds=5,
        soak_seconds=6,
        out_dir=tmp_path / "out",
    )
    assert report["events"] == 3_000
    for key in ("throughput_eps", "ratio_to_consume", "ratio_to_naive", "worker_cpu_us_per_event"):
        assert report[key] > 0, key
    assert set(report["ceilings"]) == {"consume_eps", "naive_forward_eps"}
    assert all(v > 0 for v in report["ceilings"].values())
    assert report["one_event_at_a_time_eps"] > 0
    for q in ("p50", "p95", "p99"):
        assert report["latency_ms"][q] > 0, q
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert 1 <= report["redis_round_trips_per_batch"] <= 2
    assert set(report["stages_ms"]) >= {"decode", "state", "encode", "score", "decide", "produce"}
    assert report["stages_ms"]["state"] > 0
    assert report["rss_mb"]["start"] > 0
    assert report["rss_mb"]["end"] > 0
    soak = report["soak"]
    assert set(soak["rss_mb"]) == {"start", "warm", "end", "max"}
    assert soak["rss_mb"]["max"] >= max(soak["rss_mb"]["start"], soak["rss_mb"]["end"])
    by_minute = soak["latency_p99_ms_by_minute"]  # a 6 s soak: its first minute only
    assert len(by_minute) == 1
    assert by_minute[0] > 0
    assert report["outputs"]  # the worker produced something
    plots = [Path(p) for p in report["plots"]]
    assert {p.name for p in plots} == {"bench-e2e-throughput.png", "bench-e2e-latency.png"}
    assert all(p.stat().st_size > 0 for p in plots)
    assert (tmp_path / "out" / "bench-e2e.json").exists()
    assert any("consume ceiling" in line for line in summary_lines(report))
