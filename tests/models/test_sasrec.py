"""SASRec, the next-item baseline: its windows, that it learns a sequential rule, that
early stopping keeps the best epoch, and that a saved one ranks as it did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memberpulse.models import sasrec
from memberpulse.models.baselines import popularity_ranks
from memberpulse.models.config import SASRecConfig
from memberpulse.models.metrics import ndcg_at_k

N_ITEMS = 40
CONFIG = SASRecConfig(hidden=16, max_length=8, max_epochs=30, patience=3, dropout=0.1)


def test_windows_are_right_aligned_padded_and_mark_items_outside_the_catalogue() -> None:
    positions = np.array([3, -1, 5, 7, 0, 2])  # member 0: rows 0-3, member 1: rows 4-5
    out = sasrec.windows(positions, np.array([0, 4]), np.array([3, 6]), 4, N_ITEMS)
    assert out.tolist() == [
        [sasrec.PAD, 4, N_ITEMS + 1, 6],  # rows 0..2; the −1 becomes "other"
        [sasrec.PAD, sasrec.PAD, 1, 3],
    ]


def _cycles(members: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Each member walks the catalogue in a fixed cycle from a random start: item i is
    always followed by item i + 1 (mod n). Popularity knows nothing of it."""
    starts = rng.integers(0, N_ITEMS, members)
    return (starts[:, None] + np.arange(length)[None, :]) % N_ITEMS


def test_sasrec_learns_a_sequential_rule_popularity_cannot_see() -> None:
    rng = np.random.default_rng(0)
    walks = _cycles(300, 12, rng)
    positions = walks.ravel()
    offsets = np.arange(300) * 12
    stops = offsets + 12
    train = sasrec.windows(positions, offsets, stops - 2, CONFIG.max_length + 1, N_ITEMS)
    valid_inputs = sasrec.windows(positions, offsets, stops - 2, CONFIG.max_length, N_ITEMS)
    fitted = sasrec.fit(
        train, valid_inputs, positions[stops - 2], N_ITEMS, CONFIG, torch.device("cpu")
    )
    test_inputs = sasrec.windows(positions, offsets, stops - 1, CONFIG.max_length, N_ITEMS)
    targets = positions[stops - 1]
    model_ndcg = ndcg_at_k(fitted.ranks(test_inputs, targets), 10)
    counts = np.bincount(positions, minlength=N_ITEMS)
    popular = ndcg_at_k(popularity_ranks(counts, targets), 10)
    assert model_ndcg > 0.5
    assert model_ndcg > 3 * popular
    assert fitted.best_epoch <= fitted.epochs_run <= CONFIG.max_epochs
    if fitted.epochs_run < CONFIG.max_epochs:  # stopped early: patience epochs after the best
        assert fitted.epochs_run == fitted.best_epoch + CONFIG.patience


def test_saved_sasrec_ranks_exactly_as_trained(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    walks = _cycles(50, 10, rng)
    positions, offsets = walks.ravel(), np.arange(50) * 10
    windows = sasrec.windows(positions, offsets, offsets + 9, CONFIG.max_length + 1, N_ITEMS)
    inputs = sasrec.windows(positions, offsets, offsets + 9, CONFIG.max_length, N_ITEMS)
    config = SASRecConfig(hidden=16, max_length=8, max_epochs=2, patience=1)
    cpu = torch.device("cpu")
    fitted = sasrec.fit(windows, inputs, positions[offsets + 9], N_ITEMS, config, cpu)
    fitted.save(tmp_path)
    loaded = sasrec.FittedSASRec.load(tmp_path)
    assert loaded is not None
    assert loaded.summary() == fitted.summary()
    targets = positions[offsets + 9]
    assert np.array_equal(loaded.ranks(inputs, targets), fitted.ranks(inputs, targets))
    assert sasrec.FittedSASRec.load(tmp_path / "missing") is None


def test_negatives_fall_outside_each_members_window() -> None:
    rng = np.random.default_rng(2)
    batch = np.tile(np.arange(1, 10), (64, 1))  # every window holds items 1..9
    negatives = sasrec._negatives(batch, 12, rng)  # only 10, 11, 12 are outside
    assert negatives.shape == (64, 8)
    assert set(np.unique(negatives)) <= {10, 11, 12}


@pytest.mark.parametrize("length", [3, 8])
def test_sasrec_output_at_a_position_ignores_later_items(length: int) -> None:
    model = sasrec.SASRec(N_ITEMS, CONFIG).eval()
    base = torch.randint(1, N_ITEMS + 1, (1, length))
    changed = base.clone()
    changed[0, -1] = (changed[0, -1] % N_ITEMS) + 1
    with torch.no_grad():
        assert torch.allclose(model(base)[0, :-1], model(changed)[0, :-1], atol=1e-6)
        assert not torch.allclose(model(base)[0, -1], model(changed)[0, -1])
