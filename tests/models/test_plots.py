"""Plots: each function writes a non-empty PNG where it was told to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memberpulse.models import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, expected: Path) -> None:
    assert path == expected
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000


def test_loss_curves(tmp_path: Path) -> None:
    history = {"train": [0.9, 0.6, 0.5], "valid": [0.95, 0.7, 0.65], "valid_auc": [0.6, 0.7, 0.72]}
    target = tmp_path / "nested" / "loss.png"
    assert_png(plots.plot_loss_curves(history, target), target)


def test_roc(tmp_path: Path) -> None:
    curves = {
        "model": (np.array([0.0, 0.1, 0.4, 1.0]), np.array([0.0, 0.6, 0.9, 1.0])),
        "rfm": (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.6, 1.0])),
    }
    target = tmp_path / "roc.png"
    written = plots.plot_roc(curves, {"model": 0.85, "rfm": float("nan")}, target)
    assert_png(written, target)


def test_calibration(tmp_path: Path) -> None:
    target = tmp_path / "calibration.png"
    written = plots.plot_calibration(
        np.array([0.05, 0.5, 0.9]), np.array([0.1, 0.45, 0.8]), np.array([50.0, 20.0, 5.0]), target
    )
    assert_png(written, target)
    with pytest.raises(ValueError, match="equal shapes"):
        plots.plot_calibration([0.1], [0.1, 0.2], [1.0], tmp_path / "bad.png")


def test_recall_at_k(tmp_path: Path) -> None:
    curves = {
        "model": {1: 0.1, 10: 0.4, 100: 0.8},
        "popularity": {1: 0.02, 10: 0.1, 100: 0.3},
        "recent": {1: 0.05, 10: 0.3, 100: 0.5},
    }
    target = tmp_path / "recall_at_k.png"
    assert_png(plots.plot_recall_at_k(curves, target), target)
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_recall_at_k({}, tmp_path / "empty.png")


def test_imports_stay_light() -> None:
    """metrics, baselines and plots load none of the heavy or serving-side libraries."""
    code = (
        "import sys\n"
        "import memberpulse.models.metrics, memberpulse.models.baselines\n"
        "import memberpulse.models.plots\n"
        "heavy = ('matplotlib', 'torch', 'faust', 'redis', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
