"""The onnxruntime scorer: buckets, providers, I/O binding, on the tiny exported models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memberpulse.models.bundle import load_bundle, load_heldout
from memberpulse.streams.serving.scorer import CPU, Scorer, loadable_providers


def test_scorer_buckets_pad_without_changing_scores(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    bundle = load_bundle(models[0])
    features, _, _ = load_heldout(models[0])
    scorer = Scorer(exported[0], bundle.spec, buckets=(4, 16))
    assert scorer.providers == [CPU]
    rows = features.take(np.arange(19))  # one full bucket of 16 and a padded 4
    together = scorer.score(rows)
    alone = scorer.score(rows.take(np.arange(3)))
    assert len(together) == 19
    np.testing.assert_allclose(together.churn[:3], alone.churn, rtol=1e-5)
    np.testing.assert_array_equal(together.top_items[:3], alone.top_items)
    assert scorer.item_ids(alone.top_items)[0][0] in bundle.spec.items


def test_provider_choice_is_quiet_on_a_cpu_machine(capfd: pytest.CaptureFixture[str]) -> None:
    providers = loadable_providers()
    assert providers[-1] == CPU
    if not torch.cuda.is_available():
        assert providers == [CPU]
    captured = capfd.readouterr()
    assert "error" not in (captured.out + captured.err).lower()


def test_io_binding_path_matches_plain_runs_on_cpu(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    bundle = load_bundle(models[0])
    features, _, _ = load_heldout(models[0])
    rows = features.take(np.arange(20))
    plain = Scorer(exported[0], bundle.spec, buckets=(8, 32)).score(rows)
    bound_scorer = Scorer(exported[0], bundle.spec, buckets=(8, 32), io_binding=True)
    for _ in range(2):  # the second call reuses the bucket's preallocated buffers
        bound = bound_scorer.score(rows)
        np.testing.assert_allclose(bound.churn, plain.churn, rtol=1e-6)
        np.testing.assert_array_equal(bound.top_items, plain.top_items)
