"""Evaluation metrics for churn (ranking, calibration), next-item ranking and spend.

Pure numpy, no sklearn. Every metric takes array-likes of equal length and raises a
`ValueError` naming the offending input when lengths differ, an input is empty, a label
is not 0/1 or a score is not finite. Definitions follow sklearn where one exists
(`roc_auc_score`, `average_precision_score`, `roc_curve`), so numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_BINS: Final = 10
NOT_RANKABLE: Final = -1  # a target outside the catalogue; ranked as a miss (rank = n_items)
_DCG_OFFSET: Final = 2  # ndcg gain 1 / log2(rank + 2): rank 0 (the top) has gain 1

__all__ = [
    "DEFAULT_BINS",
    "NOT_RANKABLE",
    "SeenItems",
    "brier",
    "calibration_curve",
    "ece",
    "mae",
    "ndcg_at_k",
    "pr_auc",
    "ranks_of_targets",
    "ranks_without_seen",
    "recall_at_k",
    "recall_curve",
    "rmse",
    "roc_auc",
    "roc_curve",
]


# -- validation ---------------------------------------------------------------------------


def _vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """`values` as a non-empty, finite, 1-D float64 array."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty array")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, got {array[~np.isfinite(array)][:5]}")
    return array


def _pair(
    first: ArrayLike, second: ArrayLike, names: tuple[str, str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two validated vectors of the same length."""
    a, b = _vector(first, names[0]), _vector(second, names[1])
    if len(a) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {len(a)} != {len(b)}")
    return a, b


def _labels(
    y_true: ArrayLike, other: ArrayLike, other_name: str
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Binary labels (0/1 or bools) and a paired score vector."""
    y, s = _pair(y_true, other, ("y_true", other_name))
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(f"y_true: expected 0/1 labels, got {np.unique(y[bad])[:5]}")
    return y == 1, s


def _both_classes(y: NDArray[np.bool_], metric: str) -> None:
    positives = int(y.sum())
    if positives in (0, len(y)):
        only = "positive" if positives else "negative"
        raise ValueError(
            f"{metric} needs both classes in y_true, got only {only} labels ({len(y)} rows)"
        )


def _probabilities(prob: NDArray[np.float64]) -> None:
    if (prob < 0).any() or (prob > 1).any():
        raise ValueError(f"prob: expected values in [0, 1], got min {prob.min()} max {prob.max()}")


def _ranks(ranks: ArrayLike, k: int | None = None) -> NDArray[np.int64]:
    """Validated 0-based ranks (and cut-off `k` when given)."""
    array = np.asarray(ranks)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"ranks: expected a non-empty 1-D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise ValueError(f"ranks: expected non-negative integers, got dtype {array.dtype}")
    if k is not None and k < 1:
        raise ValueError(f"k: expected a positive cut-off, got {k}")
    return array.astype(np.int64)


# -- binary classification -------------------------------------------------------------------


def _average_ranks(score: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of `score`, tied values sharing the mean of their ranks."""
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(score)]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def roc_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Binary ROC-AUC by the Mann–Whitney rank sum (ties count one half)."""
    y, s = _labels(y_true, score, "score")
    _both_classes(y, "roc_auc")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    rank_sum = float(_average_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _threshold_counts(
    y: NDArray[np.bool_], s: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cumulative true and false positives at each distinct threshold, highest first."""
    order = np.argsort(-s, kind="stable")
    hits = y[order].astype(np.float64)
    ordered = s[order]
    last_of_group = np.r_[ordered[1:] != ordered[:-1], True]
    tps = np.cumsum(hits)[last_of_group]
    fps = np.cumsum(1.0 - hits)[last_of_group]
    return tps, fps


def pr_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Average precision: Σ (Rₙ − Rₙ₋₁) Pₙ over distinct thresholds (sklearn's definition)."""
    y, s = _labels(y_true, score, "score")
    if not y.any():
        raise ValueError(f"pr_auc needs at least one positive label, got none in {len(y)} rows")
    tps, fps = _threshold_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_curve(
    y_true: ArrayLike, score: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """False and true positive rates at every distinct threshold, starting at (0, 0)."""
    y, s = _labels(y_true, score, "score")
    _both_classes(y, "roc_curve")
    tps, fps = _threshold_counts(y, s)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def brier(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Mean squared error of a probability against 0/1 outcomes."""
    y, p = _labels(y_true, prob, "prob")
    _probabilities(p)
    return float(np.mean((p - y) ** 2))


def _bin_stats(
    y_true: ArrayLike, prob: ArrayLike, bins: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per equal-width bin on [0, 1]: Σ prob, Σ outcome and count (empty bins included)."""
    if bins < 1:
        raise ValueError(f"bins: expected a positive number of bins, got {bins}")
    y, p = _labels(y_true, prob, "prob")
    _probabilities(p)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)  # prob = 1 joins the last bin
    sums = np.bincount(index, weights=p, minlength=bins).astype(np.float64)
    hits = np.bincount(index, weights=y.astype(np.float64), minlength=bins).astype(np.float64)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    return sums, hits, counts


def calibration_curve(
    y_true: ArrayLike, prob: ArrayLike, bins: int = DEFAULT_BINS
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean predicted probability, observed rate and count for each non-empty bin."""
    sums, hits, counts = _bin_stats(y_true, prob, bins)
    keep = counts > 0
    return sums[keep] / counts[keep], hits[keep] / counts[keep], counts[keep]


def ece(y_true: ArrayLike, prob: ArrayLike, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: count-weighted |mean predicted − observed| over bins."""
    mean_pred, observed, counts = calibration_curve(y_true, prob, bins)
    return float(np.sum(counts * np.abs(mean_pred - observed)) / counts.sum())


# -- regression ---------------------------------------------------------------------------


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error."""
    a, b = _pair(y_true, y_pred, ("y_true", "y_pred"))
    return float(np.mean(np.abs(a - b)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error."""
    a, b = _pair(y_true, y_pred, ("y_true", "y_pred"))
    return float(np.sqrt(np.mean((a - b) ** 2)))


# -- single-target ranking ------------------------------------------------------------------


class SeenItems(NamedTuple):
    """Per row, the items a ranking leaves out (the member's earlier items, the literature's
    full-sort convention): row i's are `items[indptr[i]:indptr[i + 1]]`, catalogue
    positions (−1 entries ignored)."""

    indptr: NDArray[np.int64]
    items: NDArray[np.int64]

    @classmethod
    def of_rows(
        cls, positions: NDArray[np.int64], starts: ArrayLike, stops: ArrayLike
    ) -> SeenItems:
        """Row i: `positions[starts[i]:stops[i]]` (e.g. a member's log rows before a stop)."""
        begin, end = np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64)
        lengths = np.maximum(end - begin, 0)
        indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        within = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1], lengths)
        rows = np.repeat(begin, lengths) + within
        return cls(indptr, np.asarray(positions, dtype=np.int64)[rows])

    def take(self, rows: ArrayLike) -> SeenItems:
        """The entries of `rows`, in that order."""
        picked = np.asarray(rows, dtype=np.int64)
        return SeenItems.of_rows(self.items, self.indptr[picked], self.indptr[picked + 1])

    def masked(self, scores: NDArray[Any], targets: NDArray[np.int64]) -> NDArray[Any]:
        """A copy of (n, n_items) `scores` with each row's seen items at −inf, except its
        own target (a repeat target stays rankable)."""
        if len(self.indptr) != len(scores) + 1:
            raise ValueError(f"seen items: {len(self.indptr) - 1} rows for {len(scores)} scores")
        out = np.array(scores, dtype=np.float64 if scores.dtype == np.float64 else np.float32)
        rows = np.repeat(np.arange(len(scores)), np.diff(self.indptr))
        keep = (self.items >= 0) & (self.items != np.asarray(targets)[rows])
        out[rows[keep], self.items[keep]] = -np.inf
        return out


def ranks_without_seen(
    ranks: ArrayLike,
    targets: ArrayLike,
    seen: SeenItems,
    rank_of: Callable[[NDArray[np.int64], NDArray[np.int64]], ArrayLike],
) -> NDArray[np.int64]:
    """`ranks` of each row's target with its seen items left out, for a ranking known only
    through its ranks: `rank_of(rows, items)` gives the rank of `items[j]` in row `rows[j]`
    (a total order, as `ranks_of_targets`'s), and each seen item ranked ahead of the target
    moves it up one place. Misses (rank n_items) stay misses."""
    rank = np.asarray(ranks, dtype=np.int64)
    target = np.asarray(targets, dtype=np.int64)
    rows = np.repeat(np.arange(len(rank)), np.diff(seen.indptr))
    keep = (seen.items >= 0) & (seen.items != target[rows])
    rows, items = rows[keep], seen.items[keep]
    if len(rows):
        span = int(items.max()) + 1
        unique = np.unique(rows * span + items)  # an item seen twice counts once
        rows, items = unique // span, unique % span
    ahead = np.asarray(rank_of(rows, items), dtype=np.int64) < rank[rows]
    moved = np.bincount(rows[ahead], minlength=len(rank))
    hit = target != NOT_RANKABLE
    out: NDArray[np.int64] = np.where(hit, rank - moved, rank).astype(np.int64)
    return out


def ranks_of_targets(
    scores: NDArray[np.floating[Any]], targets: ArrayLike, seen: SeenItems | None = None
) -> NDArray[np.int64]:
    """0-based rank of each row's target among its item scores (ties: lower index first).

    rank = #items scored strictly higher + #items scored equal with a lower index, so the
    result is deterministic. A target of `NOT_RANKABLE` (−1) gets rank n_items: a miss.
    With `seen`, each row's seen items (other than its target) are left out of the ranking.
    """
    scores = np.asarray(scores)
    target = np.asarray(targets)
    if scores.ndim != 2:  # (n, n_items)
        raise ValueError(f"scores: expected (n, n_items), got shape {scores.shape}")
    n, n_items = scores.shape
    if target.shape != (n,) or not (target.size == 0 or np.issubdtype(target.dtype, np.integer)):
        raise ValueError(f"targets: expected ({n},) integers, got {target.dtype} {target.shape}")
    target = target.astype(np.int64)
    if ((target < NOT_RANKABLE) | (target >= n_items)).any():
        raise ValueError(f"targets: expected values in [-1, {n_items}), got {target.min()}..")
    if np.isnan(scores).any():
        raise ValueError("scores: expected no NaN (a NaN compares false and would rank first)")
    if seen is not None:
        scores = seen.masked(scores, target)
    rankable = target != NOT_RANKABLE
    safe = np.where(rankable, target, 0)
    own = np.take_along_axis(scores, safe[:, None], axis=1)  # (n, 1)
    higher = (scores > own).sum(axis=1)
    earlier = np.arange(n_items)[None, :] < safe[:, None]  # (n, n_items)
    tied_before = ((scores == own) & earlier).sum(axis=1)
    ranks: NDArray[np.int64] = np.where(rankable, higher + tied_before, n_items).astype(np.int64)
    return ranks


def recall_at_k(ranks: ArrayLike, k: int) -> float:
    """Share of rows whose target ranks in the top `k` (rank < k)."""
    r = _ranks(ranks, k)
    return float(np.mean(r < k))


def ndcg_at_k(ranks: ArrayLike, k: int) -> float:
    """Mean NDCG@k with one relevant item per row: 1 / log2(rank + 2) when rank < k."""
    r = _ranks(ranks, k)
    gain = np.zeros(len(r), dtype=np.float64)
    hit = r < k
    gain[hit] = 1.0 / np.log2(r[hit] + _DCG_OFFSET)
    return float(gain.mean())


def recall_curve(ranks: ArrayLike, ks: Iterable[int]) -> dict[int, float]:
    """recall@k for each cut-off in `ks`."""
    r = _ranks(ranks)
    return {int(k): recall_at_k(r, int(k)) for k in ks}
