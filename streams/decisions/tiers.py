"""The tier forecast: tier floors on trailing-12-month spend plus the model's expected
spend, emitted when the projected tier changes.
"""

from __future__ import annotations

from memberpulse.models.snapshot import DecisionState, MemberSnapshot
from memberpulse.streams.decisions.policy import CENTS, TIER, Emit, MemberScores, Policy


def tier_of(spend: float, policy: Policy) -> str:
    """The highest tier whose floor `spend` reaches."""
    chosen = policy.tier_names[0]
    for name, floor in zip(policy.tier_names, policy.tier_floors, strict=True):
        if spend >= floor:
            chosen = name
    return chosen


def tier(
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    policy: Policy,
    emit: Emit,
) -> str:
    """Emit a forecast when the projected tier changed; returns the projected tier."""
    trailing = snapshot.trailing_12m_spend_cents / CENTS
    projected_spend = trailing + scores.expected_spend
    projected = tier_of(projected_spend, policy)
    if projected != state.projected_tier:
        emit(
            TIER,
            {
                "current_tier": tier_of(trailing, policy),
                "projected_tier": projected,
                "previous_projected_tier": state.projected_tier,
                "trailing_12m_spend": round(trailing, 2),
                "expected_spend": round(scores.expected_spend, 2),
                "projected_spend": round(projected_spend, 2),
                "partial_history": snapshot.tenure_ms < policy.tier_full_history_ms,
            },
        )
    return projected
