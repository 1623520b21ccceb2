"""`memberpulse bench model`: every CPU backend timed on the tiny trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memberpulse.models.bundle import load_bundle
from memberpulse.streams.cli.main import app


def test_bench_model_reports_every_cpu_backend_as_json(
    models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from memberpulse.streams.bench import model as bench

    monkeypatch.setattr(bench, "BATCH_SIZES", (1, 8))
    monkeypatch.setattr(bench, "MIN_SECONDS", 0.0)
    monkeypatch.setenv("MEMBERPULSE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "model", "--model", str(models[0]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    cells = {(row["backend"], row["batch_size"]): row for row in report["results"]}
    backends = {"torch-eager", "torch-eager-serving-graph", "onnx-fp32", "onnx-int8"}
    if any("INT8 variant was refused" in note for note in report["notes"]):
        backends.remove("onnx-int8")  # a 1-epoch model may lose too much AUC to INT8
    assert {(b, n) for b in backends for n in (1, 8)} <= set(cells)
    for row in report["results"]:
        assert row["seq_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["calls"] >= bench.MIN_CALLS * bench.ROUNDS
    assert report["parameters"] == load_bundle(models[0]).model.parameter_count()
