"""Baselines the model must beat, the pure-numpy ones: RFM logistic regression for churn;
popularity, "repeat recent items" and a first-order Markov chain for the next item.
(BG/NBD and Gamma-Gamma are in `clv.py`, SASRec in `sasrec.py`; `baseline_suite.py`
fits and scores them all on the model's split.)

Pure numpy. Next-item baselines work on catalogue positions 0..n_items-1 (the caller
maps item ids to positions; −1 = an item outside the catalogue) and rank with the same
tie-break as `metrics.ranks_of_targets`: equal scores, lower position first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from memberpulse.models.metrics import NOT_RANKABLE

DEFAULT_L2: Final = 1e-3
DEFAULT_MAX_ITER: Final = 100
DEFAULT_TOL: Final = 1e-8
LOGIT_CLIP: Final = 30.0  # |η| beyond this changes p by < 1e-13 and risks exp overflow
SOLVE_RIDGE: Final = 1e-10  # keeps the Newton system solvable with collinear features
MAX_HALVINGS: Final = 30  # step-halving line search: Newton without it can overshoot
MAX_SCORE_CELLS: Final = 50_000_000  # popularity_scores refuses larger matrices (~200 MB)
RFM_COLUMNS: Final = ("log1p_recency_days", "log1p_frequency", "log1p_monetary", "has_purchase")

__all__ = [
    "RFM_COLUMNS",
    "LogisticRegression",
    "MarkovChain",
    "popularity_ranks",
    "popularity_scores",
    "recent_ranks",
    "rfm_features",
]


def _empty() -> NDArray[np.float64]:
    return np.zeros(0, dtype=np.float64)


def _design(x: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] == 0:  # (n, n_features)
        raise ValueError(f"x: expected (n, n_features) with n_features ≥ 1, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("x: expected finite feature values")
    return array


def _sigmoid(eta: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(eta, -LOGIT_CLIP, LOGIT_CLIP)))


def _newton(
    z: NDArray[np.float64],  # (n, 1 + d), first column ones
    y: NDArray[np.float64],  # (n,)
    penalty: NDArray[np.float64],  # (1 + d,), 0 for the intercept
    max_iter: int,
    tol: float,
) -> tuple[NDArray[np.float64], int]:
    """Penalised log-loss minimiser and the iterations it took (Newton, step halving)."""
    n = len(y)

    def loss(w: NDArray[np.float64]) -> float:
        eta = np.clip(z @ w, -LOGIT_CLIP, LOGIT_CLIP)
        return float(np.mean(np.logaddexp(0.0, eta) - y * eta) + 0.5 * penalty @ (w * w))

    w = np.zeros(z.shape[1])
    current = loss(w)
    iteration = 0
    while iteration < max_iter:
        iteration += 1
        p = _sigmoid(z @ w)
        grad = z.T @ (p - y) / n + penalty * w
        hessian = (z.T * (p * (1.0 - p))) @ z / n + np.diag(penalty + SOLVE_RIDGE)
        step = np.linalg.solve(hessian, grad)
        for _ in range(MAX_HALVINGS):
            if (value := loss(w - step)) <= current:
                break
            step = step / 2.0
        else:
            break  # no descent left at machine precision: converged
        w, current = w - step, value
        if np.max(np.abs(step)) < tol:
            break
    return w, iteration


@dataclass
class LogisticRegression:
    """L2-penalised logistic regression on standardised features, fitted by Newton/IRLS.

    Minimises mean log-loss + l2/2 · ‖coef‖² (the intercept is not penalised); `coef`
    applies to standardised features (x − mean) / scale.
    """

    coef: NDArray[np.float64] = field(default_factory=_empty)
    intercept: float = 0.0
    mean: NDArray[np.float64] = field(default_factory=_empty)
    scale: NDArray[np.float64] = field(default_factory=_empty)
    l2: float = DEFAULT_L2
    n_iter: int = 0

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        l2: float = DEFAULT_L2,
        max_iter: int = DEFAULT_MAX_ITER,
        tol: float = DEFAULT_TOL,
    ) -> Self:
        """Fit on features `x` (n, d) and 0/1 labels `y` (n,); returns self."""
        features = _design(x)
        target = np.asarray(y, dtype=np.float64)
        if target.shape != (len(features),) or len(target) == 0:
            raise ValueError(f"y: expected ({len(features)},) labels, got shape {target.shape}")
        if ((target != 0) & (target != 1)).any():
            raise ValueError(f"y: expected 0/1 labels, got {np.unique(target)[:5]}")
        if l2 < 0:
            raise ValueError(f"l2: expected a non-negative penalty, got {l2}")
        self.mean = features.mean(axis=0)
        std = features.std(axis=0)
        self.scale = np.where(std > 0, std, 1.0)
        z = np.column_stack([np.ones(len(features)), (features - self.mean) / self.scale])
        penalty = np.full(z.shape[1], l2)
        penalty[0] = 0.0  # intercept
        w, self.n_iter = _newton(z, target, penalty, max_iter, tol)
        self.intercept, self.coef, self.l2 = float(w[0]), w[1:], l2
        return self

    def decision_function(self, x: ArrayLike) -> NDArray[np.float64]:
        """Linear predictor (log-odds) for features `x` (n, d)."""
        if self.coef.size == 0:
            raise ValueError("LogisticRegression is not fitted: call fit() or from_dict() first")
        features = _design(x)
        if features.shape[1] != self.coef.size:
            raise ValueError(f"x: expected {self.coef.size} features, got {features.shape[1]}")
        return ((features - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_proba(self, x: ArrayLike) -> NDArray[np.float64]:
        """Probability of the positive class for each row of `x`."""
        return _sigmoid(self.decision_function(x))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters (plain lists and floats)."""
        return {
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "l2": self.l2,
            "n_iter": self.n_iter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogisticRegression:
        """Rebuild a fitted model from `to_dict()` output."""
        coef, mean, scale = (
            np.asarray(data[k], dtype=np.float64) for k in ("coef", "mean", "scale")
        )
        if (
            not coef.ndim == mean.ndim == scale.ndim == 1
            or not coef.size == mean.size == scale.size
        ):
            raise ValueError(
                f"coef, mean and scale must be vectors of one length, got "
                f"{coef.shape}, {mean.shape}, {scale.shape}"
            )
        return cls(
            coef=coef,
            intercept=float(data["intercept"]),
            mean=mean,
            scale=scale,
            l2=float(data.get("l2", DEFAULT_L2)),
            n_iter=int(data.get("n_iter", 0)),
        )


def rfm_features(
    recency_days: ArrayLike, frequency: ArrayLike, monetary: ArrayLike, has_purchase: ArrayLike
) -> NDArray[np.float64]:
    """The classic recency/frequency/monetary churn baseline's inputs, shape (n, 4).

    recency = days since the last purchase (since first seen when none), frequency =
    purchases, monetary = spend; columns `RFM_COLUMNS`: log1p of the three and the 0/1 flag.
    """
    names = ("recency_days", "frequency", "monetary", "has_purchase")
    columns = [np.asarray(v, dtype=np.float64) for v in (recency_days, frequency, monetary)]
    flag = np.asarray(has_purchase, dtype=np.float64)
    for name, column in zip(names, [*columns, flag], strict=True):
        if column.ndim != 1 or len(column) != len(flag):
            raise ValueError(f"{name}: expected shape ({len(flag)},), got {column.shape}")
        if not np.isfinite(column).all() or (column < 0).any():
            raise ValueError(f"{name}: expected finite non-negative values, got min {column.min()}")
    if ((flag != 0) & (flag != 1)).any():
        raise ValueError(f"has_purchase: expected 0/1, got {np.unique(flag)[:5]}")
    return np.column_stack([*(np.log1p(c) for c in columns), flag])


# -- next item ----------------------------------------------------------------------------


def _counts(train_item_counts: ArrayLike) -> NDArray[np.int64]:
    counts = np.asarray(train_item_counts)
    if counts.ndim != 1 or counts.size == 0 or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"train_item_counts: expected (n_items,) integers, got {counts.shape}")
    return counts.astype(np.int64)


def _targets(targets: ArrayLike, n_items: int) -> NDArray[np.int64]:
    array = np.asarray(targets)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"targets: expected (n,) integers, got {array.dtype} {array.shape}")
    array = array.astype(np.int64)
    if ((array < NOT_RANKABLE) | (array >= n_items)).any():
        raise ValueError(f"targets: expected values in [-1, {n_items}), got {array.min()}..")
    return array


def _popularity_order_rank(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Position of each item when sorted by count, highest first, ties by lower index."""
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(counts), dtype=np.int64)
    rank[order] = np.arange(len(counts))
    return rank


def popularity_scores(
    train_item_counts: ArrayLike, n_rows: int, max_cells: int = MAX_SCORE_CELLS
) -> NDArray[np.float32]:
    """Every row scores items by global training popularity, shape (n_rows, n_items)."""
    counts = _counts(train_item_counts)
    if n_rows < 0 or n_rows * counts.size > max_cells:
        raise ValueError(
            f"n_rows={n_rows} × {counts.size} items exceeds {max_cells} cells "
            "(or is negative): use popularity_ranks"
        )
    return np.tile(counts.astype(np.float32), (n_rows, 1))


def popularity_ranks(train_item_counts: ArrayLike, targets: ArrayLike) -> NDArray[np.int64]:
    """Rank of each target under the popularity baseline, without the score matrix."""
    counts = _counts(train_item_counts)
    target = _targets(targets, counts.size)
    rank = _popularity_order_rank(counts)
    return np.where(target == NOT_RANKABLE, counts.size, rank[np.maximum(target, 0)])


def recent_ranks(
    histories: Sequence[NDArray[np.int64]], targets: ArrayLike, train_item_counts: ArrayLike
) -> NDArray[np.int64]:
    """Rank of each target under "repeat the member's recent items".

    The member's distinct items come first, most recently seen first (unknown −1 skipped),
    then every other item by global popularity (ties by lower index).
    """
    counts = _counts(train_item_counts)
    n_items = counts.size
    target = _targets(targets, n_items)
    n = len(target)
    if len(histories) != n:
        raise ValueError(f"histories: expected {n} rows (one per target), got {len(histories)}")
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
    flat = (
        np.concatenate([np.asarray(h, dtype=np.int64).ravel() for h in histories])
        if n
        else np.zeros(0, dtype=np.int64)
    )
    if flat.size != lengths.sum() or ((flat < NOT_RANKABLE) | (flat >= n_items)).any():
        raise ValueError(f"histories: expected 1-D item positions in [-1, {n_items})")
    rows = np.repeat(np.arange(n), lengths)
    seen_at = np.arange(flat.size)  # global position: later in a row = more recent
    known = flat != NOT_RANKABLE
    rows, items, seen_at = rows[known], flat[known], seen_at[known]

    # One entry per distinct (row, item), keeping the last time it was seen.
    key = rows * n_items + items
    order = np.argsort(key, kind="stable")  # stable: within a key, seen_at ascends
    key, seen_at = key[order], seen_at[order]
    last = np.r_[key[1:] != key[:-1], True][: key.size]
    key, seen_at = key[last], seen_at[last]  # key sorted ascending and unique
    d_row, d_item = key // n_items, key % n_items

    # Recency rank of each distinct entry within its row: most recent first.
    per_row = np.bincount(d_row, minlength=n)
    row_start = np.cumsum(per_row) - per_row
    by_recency = np.lexsort((-seen_at, d_row))
    recency = np.empty(key.size, dtype=np.int64)
    recency[by_recency] = np.arange(key.size) - row_start[d_row[by_recency]]

    # Target among the member's items: its recency rank (a sentinel ends `key`).
    rankable = target != NOT_RANKABLE
    safe = np.maximum(target, 0)
    wanted = np.arange(n) * n_items + safe
    at = np.searchsorted(key, wanted)  # in [0, key.size]
    found = rankable & (np.r_[key, NOT_RANKABLE][at] == wanted)
    own_recency = np.r_[recency, 0][at]

    # Otherwise: after the member's items, by popularity among the items left.
    pop = _popularity_order_rank(counts)
    ahead = pop[d_item] < pop[safe[d_row]]
    ahead_per_row = np.bincount(d_row[ahead], minlength=n)
    ranks = np.where(found, own_recency, per_row + pop[safe] - ahead_per_row)
    return np.where(rankable, ranks, n_items).astype(np.int64)


@dataclass(frozen=True)
class MarkovChain:
    """A first-order Markov chain over the catalogue: the next item given the last one.

    Per item the `top_m` most frequent next items (counts of consecutive pairs in the
    training sequences); a member is ranked by the row of their latest item (most
    frequent follow-up first), then every other item by popularity. Ties break by
    popularity, then by lower position, as everywhere else.
    """

    follow: NDArray[np.int64]  # (n_items, top_m) catalogue positions, −1 = none
    counts: NDArray[np.int64]  # (n_items, top_m) pair counts, 0 = none

    @classmethod
    def fit(
        cls,
        previous: ArrayLike,
        following: ArrayLike,
        n_items: int,
        top_m: int,
        train_item_counts: ArrayLike,
    ) -> MarkovChain:
        """Count (previous item → following item) pairs; −1 on either side is skipped."""
        prev, nxt = (np.asarray(v, dtype=np.int64) for v in (previous, following))
        if prev.shape != nxt.shape or prev.ndim != 1:
            raise ValueError(f"previous/following: expected two (n,) arrays, got {prev.shape}")
        if top_m < 1:
            raise ValueError(f"top_m: expected ≥ 1, got {top_m}")
        pop = _popularity_order_rank(_counts(train_item_counts))
        keep = (prev >= 0) & (nxt >= 0) & (prev < n_items) & (nxt < n_items)
        pairs, count = np.unique(prev[keep] * n_items + nxt[keep], return_counts=True)
        src, dst = pairs // n_items, pairs % n_items
        order = np.lexsort((pop[dst], -count, src))  # per source: by count, then popularity
        src, dst, count = src[order], dst[order], count[order]
        start = np.searchsorted(src, src, side="left")
        slot = np.arange(len(src)) - start
        kept = slot < top_m
        follow = np.full((n_items, top_m), NOT_RANKABLE, dtype=np.int64)
        counts = np.zeros((n_items, top_m), dtype=np.int64)
        follow[src[kept], slot[kept]] = dst[kept]
        counts[src[kept], slot[kept]] = count[kept]
        return cls(follow, counts)

    def ranks(
        self, last: ArrayLike, targets: ArrayLike, train_item_counts: ArrayLike
    ) -> NDArray[np.int64]:
        """Rank of each target given each member's latest item (−1: none, popularity only)."""
        counts = _counts(train_item_counts)
        n_items = counts.size
        target = _targets(targets, n_items)
        latest = np.asarray(last, dtype=np.int64)
        if latest.shape != target.shape:
            raise ValueError(f"last: expected {target.shape}, got {latest.shape}")
        pop = _popularity_order_rank(counts)
        rows = np.where(latest[:, None] >= 0, self.follow[np.maximum(latest, 0)], NOT_RANKABLE)
        valid = rows >= 0
        safe = np.maximum(target, 0)
        hit = valid & (rows == safe[:, None])
        found = hit.any(axis=1)
        own = hit.argmax(axis=1)
        ahead = valid & (pop[np.maximum(rows, 0)] < pop[safe][:, None])
        ranks = np.where(found, own, valid.sum(axis=1) + pop[safe] - ahead.sum(axis=1))
        return np.where(target == NOT_RANKABLE, n_items, ranks).astype(np.int64)

    def to_arrays(self) -> dict[str, NDArray[np.int64]]:
        """What `baselines.npz` stores."""
        return {"markov_follow": self.follow, "markov_counts": self.counts}

    @classmethod
    def from_arrays(cls, arrays: Any) -> MarkovChain:
        """Rebuild from `to_arrays()`."""
        return cls(np.asarray(arrays["markov_follow"]), np.asarray(arrays["markov_counts"]))
