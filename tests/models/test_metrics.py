"""Metrics: exact values on hand-made cases, properties against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from memberpulse.models import metrics as m

# -- strategies ---------------------------------------------------------------------------


@st.composite
def labelled_scores(draw: st.DrawFn, distinct: bool = False) -> tuple[list[int], list[float]]:
    """0/1 labels with both classes and integer-valued scores (ties likely unless distinct)."""
    n = draw(st.integers(2, 30))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    labels[0], labels[1] = 0, 1
    ints = st.integers(-20, 20)
    raw = (
        draw(st.lists(ints, min_size=n, max_size=n, unique=True))
        if distinct
        else draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    )
    return labels, [float(v) for v in raw]


def brute_auc(y: list[int], s: list[float]) -> float:
    pos = [b for a, b in zip(y, s, strict=True) if a == 1]
    neg = [b for a, b in zip(y, s, strict=True) if a == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


# -- ROC-AUC ------------------------------------------------------------------------------


def test_auc_perfect_reversed_and_tied() -> None:
    y = [0, 0, 1, 1]
    assert m.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert m.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert m.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_by_hand() -> None:
    # positives 0.8, 0.4; negatives 0.6, 0.4, 0.2: pairs 0.8 beats 3, 0.4 beats 1 ties 1
    assert m.roc_auc([1, 0, 1, 0, 0], [0.8, 0.6, 0.4, 0.4, 0.2]) == pytest.approx(4.5 / 6)


def test_auc_one_class_raises() -> None:
    with pytest.raises(ValueError, match="both classes"):
        m.roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([0, 1], [0.1], "differ in length"),
        ([], [], "empty"),
        ([0, 2], [0.1, 0.2], "0/1 labels"),
        ([0, 1], [0.1, float("nan")], "finite"),
    ],
)
def test_auc_rejects_bad_input(y: list[int], s: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        m.roc_auc(y, s)


@given(labelled_scores())
def test_auc_matches_pairwise_count(case: tuple[list[int], list[float]]) -> None:
    y, s = case
    assert m.roc_auc(y, s) == pytest.approx(brute_auc(y, s))


@given(labelled_scores())
def test_auc_invariant_under_monotone_transform(case: tuple[list[int], list[float]]) -> None:
    y, s = case
    transformed = np.exp(np.asarray(s) / 4.0) * 3.0 + 1.0
    assert m.roc_auc(y, transformed) == pytest.approx(m.roc_auc(y, s))


@given(labelled_scores(distinct=True))
def test_auc_of_negated_scores_is_complement(case: tuple[list[int], list[float]]) -> None:
    y, s = case
    assert m.roc_auc(y, [-v for v in s]) == pytest.approx(1.0 - m.roc_auc(y, s))


@given(labelled_scores())
def test_roc_curve_area_equals_auc(case: tuple[list[int], list[float]]) -> None:
    y, s = case
    fpr, tpr = m.roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0)
    assert np.all(np.diff(tpr) >= 0)
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    assert trapezoid == pytest.approx(m.roc_auc(y, s))


def test_roc_curve_by_hand() -> None:
    fpr, tpr = m.roc_curve([1, 0, 1, 0], [0.9, 0.7, 0.7, 0.1])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])


# -- average precision --------------------------------------------------------------------


def test_pr_auc_known_case() -> None:
    # sklearn's docstring example: average_precision_score([0, 0, 1, 1], [.1, .4, .35, .8])
    assert m.pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8333333333)


def test_pr_auc_ties_are_one_threshold() -> None:
    # one threshold holding 1 positive and 1 negative: precision 1/2 at recall 1
    assert m.pr_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # top 0.9 (pos): P=1 R=1/2; tie at 0.5 (pos, neg): P=2/3 R=1 → 1/2 + 1/2·2/3
    assert m.pr_auc([1, 1, 0], [0.9, 0.5, 0.5]) == pytest.approx(0.5 + 1.0 / 3.0)


def test_pr_auc_perfect_and_no_positive() -> None:
    assert m.pr_auc([0, 1, 1], [0.1, 0.8, 0.9]) == 1.0
    with pytest.raises(ValueError, match="positive"):
        m.pr_auc([0, 0], [0.1, 0.2])


# -- calibration --------------------------------------------------------------------------


def test_brier_by_hand() -> None:
    assert m.brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.brier([1, 0], [1.2, 0.4])


def test_calibration_curve_and_ece_by_hand() -> None:
    y = [0, 1, 1, 1, 0]
    prob = [0.05, 0.15, 0.75, 0.85, 1.0]  # bins (2 bins): [0, .5) twice, [.5, 1] thrice
    mean_pred, observed, counts = m.calibration_curve(y, prob, bins=2)
    np.testing.assert_allclose(mean_pred, [0.1, 2.6 / 3])
    np.testing.assert_allclose(observed, [0.5, 2.0 / 3])
    np.testing.assert_array_equal(counts, [2, 3])
    expected = (2 * abs(0.1 - 0.5) + 3 * abs(2.6 / 3 - 2.0 / 3)) / 5
    assert m.ece(y, prob, bins=2) == pytest.approx(expected)


def test_calibration_curve_skips_empty_bins() -> None:
    mean_pred, _, counts = m.calibration_curve([0, 1], [0.01, 0.99], bins=10)
    np.testing.assert_allclose(mean_pred, [0.01, 0.99])
    np.testing.assert_array_equal(counts, [1, 1])


def test_ece_of_perfectly_calibrated_bins_is_zero() -> None:
    assert m.ece([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0
    with pytest.raises(ValueError, match="bins"):
        m.ece([0, 1], [0.5, 0.5], bins=0)


# -- regression ---------------------------------------------------------------------------


def test_mae_rmse_by_hand() -> None:
    assert m.mae([1.0, 2.0, 3.0], [2.0, 2.0, 1.0]) == pytest.approx(1.0)
    assert m.rmse([1.0, 2.0, 3.0], [2.0, 2.0, 1.0]) == pytest.approx(math.sqrt(5.0 / 3.0))
    with pytest.raises(ValueError, match="differ in length"):
        m.mae([1.0], [1.0, 2.0])


# -- ranking ------------------------------------------------------------------------------


def brute_ranks(scores: np.ndarray, targets: np.ndarray) -> list[int]:
    n_items = scores.shape[1]
    out = []
    for row, target in zip(scores, targets, strict=True):
        if target == -1:
            out.append(n_items)
            continue
        order = sorted(range(n_items), key=lambda i: (-row[i], i))
        out.append(order.index(int(target)))
    return out


def test_ranks_of_targets_by_hand() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]], dtype=np.float32)
    ranks = m.ranks_of_targets(scores, np.array([2, 2, -1]))
    np.testing.assert_array_equal(ranks, [1, 2, 3])
    assert ranks.dtype == np.int64


def test_ranks_of_targets_empty_and_bad_targets() -> None:
    empty = m.ranks_of_targets(np.zeros((0, 5), dtype=np.float32), np.zeros(0, dtype=np.int64))
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="targets"):
        m.ranks_of_targets(np.zeros((1, 3), dtype=np.float32), np.array([3]))
    with pytest.raises(ValueError, match="NaN"):
        m.ranks_of_targets(np.array([[np.nan, 1.0]], dtype=np.float32), np.array([0]))


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
        elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
    ),
    st.data(),
)
def test_ranks_of_targets_match_argsort_loop(scores: np.ndarray, data: st.DataObject) -> None:
    n, n_items = scores.shape
    targets = np.array(
        data.draw(st.lists(st.integers(-1, n_items - 1), min_size=n, max_size=n)), dtype=np.int64
    )
    np.testing.assert_array_equal(m.ranks_of_targets(scores, targets), brute_ranks(scores, targets))


def test_recall_ndcg_by_hand() -> None:
    ranks = np.array([0, 1, 4, 10])
    assert m.recall_at_k(ranks, 5) == 0.75
    assert m.ndcg_at_k(ranks, 5) == pytest.approx(
        (1.0 + 1.0 / math.log2(3) + 1.0 / math.log2(6)) / 4
    )
    assert m.recall_curve(ranks, [1, 2, 11]) == {1: 0.25, 2: 0.5, 11: 1.0}


def test_ranking_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        m.recall_at_k(np.zeros(0, dtype=np.int64), 5)
    with pytest.raises(ValueError, match="cut-off"):
        m.ndcg_at_k(np.array([0]), 0)
    with pytest.raises(ValueError, match="non-negative integers"):
        m.recall_at_k(np.array([-1]), 5)


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
        elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
    ),
    st.data(),
)
def test_ranks_with_seen_items_left_out_equal_ranking_the_other_items(
    scores: np.ndarray, data: st.DataObject
) -> None:
    """Leaving a row's seen items out (its target excepted) ranks the target as if those
    columns were not there; from scores and from ranks alone alike."""
    n, n_items = scores.shape
    targets = np.array(
        data.draw(st.lists(st.integers(-1, n_items - 1), min_size=n, max_size=n)), dtype=np.int64
    )
    rows = [
        data.draw(st.lists(st.integers(-1, n_items - 1), max_size=2 * n_items)) for _ in range(n)
    ]
    seen = m.SeenItems(
        np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64),
        np.array([i for r in rows for i in r], dtype=np.int64),
    )
    expected = []
    for i in range(n):
        if targets[i] < 0:
            expected.append(n_items)
            continue
        kept = [j for j in range(n_items) if j not in rows[i] or j == targets[i]]
        expected.append(
            int(brute_ranks(scores[i : i + 1, kept], np.array([kept.index(targets[i])]))[0])
        )
    by_scores = m.ranks_of_targets(scores, targets, seen)
    np.testing.assert_array_equal(by_scores, expected)
    by_ranks = m.ranks_without_seen(
        m.ranks_of_targets(scores, targets),
        targets,
        seen,
        lambda r, items: m.ranks_of_targets(scores[r], items),
    )
    np.testing.assert_array_equal(by_ranks, expected)


def test_seen_items_of_log_rows_and_their_subsets() -> None:
    positions = np.array([4, 2, -1, 7, 7, 1], dtype=np.int64)
    seen = m.SeenItems.of_rows(positions, [0, 3, 5], [3, 5, 5])
    assert seen.indptr.tolist() == [0, 3, 5, 5]
    assert seen.items.tolist() == [4, 2, -1, 7, 7]
    picked = seen.take([2, 1])
    assert picked.indptr.tolist() == [0, 0, 2]
    assert picked.items.tolist() == [7, 7]
