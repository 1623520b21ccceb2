"""Why the model scored a member at risk: occlusion over groups of the aggregate inputs.

For a member, each group of aggregate columns in turn is replaced by the training mean
(0 after normalisation: "a typical member's value") and the member is scored again. The
group's *effect* is the churn probability as scored minus the probability with that
group occluded: positive means the member's own values of the group raised the risk
above what a typical member's would have given. An alert's reasons are the groups with
the largest effects, in plain-language codes, strongest first (at least one: when no
group raised the risk, the one that lowered it least is named, with its effect).

Occlusion (Zeiler & Fergus 2014) asks the exported model itself, so the reasons are the
model's, not rules beside it; it costs `len(GROUPS)` extra rows per explained member in
one batched scoring call, and the worker explains only members about to be alerted.
Groups occlude columns independently of the others, so an occluded row can be one no
member has (e.g. a typical recency with no purchase ever): the effect says what the
model does with that input, which is what an explanation of this model is.

Pure numpy; `score` is any function from a `FeatureBatch` to churn probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.features import AGGREGATES, FeatureBatch


class ReasonGroup(NamedTuple):
    """A reason code, what it says, and the aggregate columns it stands for."""

    code: str
    text: str
    columns: tuple[str, ...]


def _named(prefixes: tuple[str, ...], exact: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(a for a in AGGREGATES if a in exact or a.startswith(prefixes))


GROUPS: Final[tuple[ReasonGroup, ...]] = (
    ReasonGroup(
        "not_seen_recently",
        "has not visited for a while",
        _named(
            (
                "recency_days_click",
                "recency_days_browse",
                "recency_days_add_to_cart",
                "recency_days_search",
            ),
            ("days_since_last_seen", "sessions_days_since_last"),
        ),
    ),
    ReasonGroup(
        "purchase_overdue",
        "their next order is later than their usual rhythm",
        _named(
            (),
            (
                "recency_days_purchase",
                "orders_days_since_last",
                "orders_overdue",
                "events_since_purchase",
                "sessions_since_purchase",
                "no_purchase_in_sequence",
            ),
        ),
    ),
    ReasonGroup(
        "activity_falling",
        "fewer visits and events than in earlier weeks",
        _named(("count_", "week")),
    ),
    ReasonGroup(
        "few_orders",
        "has bought rarely",
        _named(
            (),
            (
                "total_purchases",
                "orders_n",
                "orders_mean_gap_days",
                "orders_last_gap_days",
                "orders_missing",
                "never_purchase",
                "recent_purchases",
            ),
        ),
    ),
    ReasonGroup(
        "low_spend",
        "spends little",
        _named(
            (),
            (
                "total_spend",
                "trailing_12m_spend",
                "recent_log_price_bought",
                "earlier_log_price_bought",
            ),
        ),
    ),
    ReasonGroup(
        "browsing_without_buying",
        "browses and clicks in sessions that end without a purchase",
        _named(
            ("recent_", "earlier_"),
            ("novel_category_share",),
        ),
    ),
    ReasonGroup(
        "short_history",
        "is new or has little history",
        _named(
            ("never_", "sessions_", "sequence_"),
            ("tenure_days",),
        ),
    ),
)
CODES: Final = tuple(group.code for group in GROUPS)
MAX_REASONS: Final = 3


def _column_indexes() -> tuple[NDArray[np.int64], ...]:
    """Each group's column indexes; every aggregate belongs to exactly one group."""
    position = {name: i for i, name in enumerate(AGGREGATES)}
    claimed: dict[str, str] = {}
    out = []
    for group in GROUPS:
        columns = [c for c in group.columns if c not in claimed]
        for column in columns:
            claimed[column] = group.code
        out.append(np.array([position[c] for c in columns], dtype=np.int64))
    missing = set(AGGREGATES) - set(claimed)
    if missing:
        raise RuntimeError(f"aggregate columns in no reason group: {sorted(missing)}")
    return tuple(out)


GROUP_COLUMNS: Final = _column_indexes()


def occluded(batch: FeatureBatch) -> FeatureBatch:
    """Each row repeated once per group, that group's aggregates set to the training
    mean (0 in normalised units): row r × G + g is row r without group g."""
    n, groups = batch.rows, len(GROUPS)
    rows = np.repeat(np.arange(n), groups)
    out = batch.take(rows)
    aggregates = out.aggregates.copy()
    for g, columns in enumerate(GROUP_COLUMNS):
        aggregates[np.ix_(np.arange(g, n * groups, groups), columns)] = 0.0
    return out._replace(aggregates=aggregates)


class Explanation(NamedTuple):
    """A member's reasons, strongest first: (code, effect on the churn probability)."""

    reasons: tuple[tuple[str, float], ...]


def effects(risk: NDArray[np.float64], without: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n,) risks and (n × G,) risks of the occluded rows → (n, G) effects."""
    return risk[:, None] - without.reshape(len(risk), len(GROUPS))


def reasons_of(effect: NDArray[np.float64], top: int = MAX_REASONS) -> list[Explanation]:
    """Per row: the groups that raised the risk most (at least one), strongest first."""
    out = []
    for row in effect:
        order = np.argsort(-row, kind="stable")
        chosen = [g for g in order[:top] if row[g] > 0] or [int(order[0])]
        out.append(Explanation(tuple((CODES[g], round(float(row[g]), 4)) for g in chosen)))
    return out


def explain(
    score: Callable[[FeatureBatch], NDArray[np.float64]],
    batch: FeatureBatch,
    risk: NDArray[np.float64] | None = None,
    top: int = MAX_REASONS,
) -> list[Explanation]:
    """The reasons of every row of `batch` (its scored `risk` when already known)."""
    if batch.rows == 0:
        return []
    base = score(batch) if risk is None else np.asarray(risk, dtype=np.float64)
    return reasons_of(effects(base, np.asarray(score(occluded(batch)), np.float64)), top)
