"""Baselines: the RFM logistic regression, popularity and recent-items ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberpulse.models.baselines import (
    LogisticRegression,
    popularity_ranks,
    popularity_scores,
    recent_ranks,
    rfm_features,
)
from memberpulse.models.metrics import ranks_of_targets, roc_auc

TRUE_COEF = np.array([1.5, -2.0, 0.0, 0.7])


def make_logistic_data(
    n: int = 4000, seed: int = 0, scales: tuple[float, ...] = (1.0, 10.0, 0.1, 3.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Features of mixed scales and labels drawn from a known logistic model."""
    rng = np.random.default_rng(seed)
    standard = rng.normal(size=(n, len(scales)))
    x = standard * np.asarray(scales) + 5.0
    p = 1.0 / (1.0 + np.exp(-(standard @ TRUE_COEF - 0.5)))
    return x, (rng.random(n) < p).astype(np.float64)


# -- logistic regression ------------------------------------------------------------------


def test_logistic_recovers_signs_and_beats_random() -> None:
    x, y = make_logistic_data()
    model = LogisticRegression().fit(x, y)
    signs = np.sign(model.coef[[0, 1, 3]])
    np.testing.assert_array_equal(signs, [1.0, -1.0, 1.0])
    assert abs(model.coef[2]) < 0.15
    np.testing.assert_allclose(model.coef, TRUE_COEF, atol=0.2)  # standardised ≈ true scale
    x_test, y_test = make_logistic_data(seed=1)
    random_score = np.random.default_rng(2).random(len(y_test))
    model_auc = roc_auc(y_test, model.predict_proba(x_test))
    assert model_auc > 0.8
    assert model_auc > roc_auc(y_test, random_score) + 0.2


def test_logistic_matches_gradient_descent() -> None:
    x, y = make_logistic_data(n=500, seed=3)
    l2 = 0.05
    model = LogisticRegression().fit(x, y, l2=l2)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(5000):  # plain gradient descent on the same standardised objective
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        w -= 0.5 * (z.T @ (p - y) / len(y) + l2 * w)
        b -= 0.5 * float(np.mean(p - y))
    np.testing.assert_allclose(model.coef, w, atol=1e-6)
    assert model.intercept == pytest.approx(b, abs=1e-6)
    assert 1 <= model.n_iter < 20


def test_logistic_constant_feature_and_separable_data_stay_finite() -> None:
    x = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    y = (np.arange(10) >= 5).astype(np.float64)
    model = LogisticRegression().fit(x, y, l2=1e-6)
    prob = model.predict_proba(x)
    assert np.isfinite(prob).all()
    assert model.scale[1] == 1.0
    assert model.coef[1] == 0.0
    assert roc_auc(y, prob) == 1.0


def test_logistic_round_trips_through_json() -> None:
    x, y = make_logistic_data(n=300)
    model = LogisticRegression().fit(x, y)
    restored = LogisticRegression.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(restored.predict_proba(x), model.predict_proba(x))
    assert restored.l2 == model.l2


def test_logistic_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        LogisticRegression().predict_proba(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="0/1"):
        LogisticRegression().fit(np.zeros((2, 1)), [0, 2])
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    with pytest.raises(ValueError, match="expected 1 features"):
        model.predict_proba(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="one length"):
        LogisticRegression.from_dict({"coef": [1.0], "intercept": 0.0, "mean": [], "scale": []})


# -- RFM ----------------------------------------------------------------------------------


def test_rfm_features_columns() -> None:
    out = rfm_features([0.0, 9.0], [1, 0], [99.0, 0.0], [1, 0])
    expected = [[0.0, np.log(2.0), np.log(100.0), 1.0], [np.log(10.0), 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(out, expected)
    assert out.shape == (2, 4)
    assert rfm_features([], [], [], []).shape == (0, 4)
    with pytest.raises(ValueError, match="recency_days"):
        rfm_features([-1.0], [0], [0.0], [0])
    with pytest.raises(ValueError, match="frequency"):
        rfm_features([1.0], [0, 1], [0.0], [0])


# -- next item ----------------------------------------------------------------------------


def brute_popularity(counts: list[int]) -> list[int]:
    return sorted(range(len(counts)), key=lambda i: (-counts[i], i))


def brute_recent(history: list[int], target: int, counts: list[int]) -> int:
    if target == -1:
        return len(counts)
    order: list[int] = []
    for item in reversed(history):
        if item != -1 and item not in order:
            order.append(item)
    order += [i for i in brute_popularity(counts) if i not in order]
    return order.index(target)


@st.composite
def next_item_case(draw: st.DrawFn) -> tuple[list[list[int]], list[int], list[int]]:
    n_items = draw(st.integers(1, 8))
    n = draw(st.integers(0, 6))
    item = st.integers(-1, n_items - 1)
    histories = draw(st.lists(st.lists(item, max_size=10), min_size=n, max_size=n))
    targets = draw(st.lists(item, min_size=n, max_size=n))
    counts = draw(st.lists(st.integers(0, 3), min_size=n_items, max_size=n_items))
    return histories, targets, counts


@given(next_item_case())
def test_popularity_ranks_match_brute_force_and_score_matrix(
    case: tuple[list[list[int]], list[int], list[int]],
) -> None:
    _, targets, counts = case
    order = brute_popularity(counts)
    expected = [len(counts) if t == -1 else order.index(t) for t in targets]
    target_array = np.array(targets, dtype=np.int64)
    ranks = popularity_ranks(np.array(counts), target_array)
    np.testing.assert_array_equal(ranks, expected)
    scores = popularity_scores(np.array(counts), len(targets))
    assert scores.shape == (len(targets), len(counts))
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(ranks_of_targets(scores, target_array), expected)


@given(next_item_case())
def test_recent_ranks_match_brute_force(
    case: tuple[list[list[int]], list[int], list[int]],
) -> None:
    histories, targets, counts = case
    expected = [brute_recent(h, t, counts) for h, t in zip(histories, targets, strict=True)]
    ranks = recent_ranks(
        [np.array(h, dtype=np.int64) for h in histories],
        np.array(targets, dtype=np.int64),
        np.array(counts),
    )
    np.testing.assert_array_equal(ranks, expected)
    assert ranks.dtype == np.int64


def test_recent_ranks_by_hand() -> None:
    counts = np.array([5, 1, 9, 0])  # popularity order: 2, 0, 1, 3
    histories = [np.array([1, 3, 1, -1]), np.array([], dtype=np.int64)]
    ranks = recent_ranks(histories, np.array([3, 0]), counts)
    # member 0: 1 (latest), 3, then 2, 0 → item 3 at 1; member 1: popularity → item 0 at 1
    np.testing.assert_array_equal(ranks, [1, 1])
    np.testing.assert_array_equal(recent_ranks(histories, np.array([0, -1]), counts), [3, 4])


def test_next_item_baselines_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="histories"):
        recent_ranks([np.array([0])], np.array([0, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="histories"):
        recent_ranks([np.array([2])], np.array([0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="targets"):
        popularity_ranks(np.array([1, 1]), np.array([2]))
    with pytest.raises(ValueError, match="popularity_ranks"):
        popularity_scores(np.array([1, 1]), 10, max_cells=19)


def test_markov_chain_ranks_equal_brute_force_ranks_of_its_scores() -> None:
    from memberpulse.models.baselines import MarkovChain
    from memberpulse.models.metrics import ranks_of_targets

    rng = np.random.default_rng(7)
    n_items = 30
    previous = rng.integers(-1, n_items, 2_000)
    following = (previous * 3 + rng.integers(0, 4, 2_000)) % n_items
    counts = rng.integers(0, 50, n_items)
    chain = MarkovChain.fit(previous, following, n_items, top_m=5, train_item_counts=counts)
    last = rng.integers(-1, n_items, 300)
    targets = rng.integers(-1, n_items, 300)
    # Brute force: follow-ups by count (popularity breaking ties) above everything else.
    order = np.argsort(-counts, kind="stable")
    pop_rank = np.empty(n_items)
    pop_rank[order] = np.arange(n_items)
    scores = np.tile(-pop_rank / n_items, (len(last), 1))
    for row, item in enumerate(last):
        if item < 0:
            continue
        for slot in range(5):
            follow = chain.follow[item, slot]
            if follow >= 0:
                tie = 1 - pop_rank[follow] / n_items
                scores[row, follow] = 10.0 * chain.counts[item, slot] + tie
    expected = ranks_of_targets(scores, targets)
    assert np.array_equal(chain.ranks(last, targets, counts), expected)
    assert (chain.counts[:, :-1] >= chain.counts[:, 1:]).all()  # rows sorted by count
