"""Decisions: pure functions from a member's snapshot, scores and decision state to
outputs — churn alerts, recommendation updates, coupon triggers, tier forecasts — and the
output JSON Schemas (`schemas/`). `decide` (decide.py) is the entry point; each kind has
its own module.
"""

from memberpulse.streams.decisions.churn import (
    ACTIVITY_DOWN,
    NEVER_PURCHASED,
    NO_ACTIVITY_7D,
    PURCHASE_GAP,
    REASON_CODES,
    reason_codes,
)
from memberpulse.streams.decisions.decide import decide, decide_all, next_idle_check
from memberpulse.streams.decisions.policy import (
    CENTS,
    CHURN,
    COUPON,
    IDLE_CHECK,
    KINDS,
    RECOMMENDATION,
    TIER,
    Decision,
    MemberScores,
    Output,
    Policy,
    churn_thresholds,
    output_id,
)
from memberpulse.streams.decisions.tiers import tier_of

__all__ = [
    "ACTIVITY_DOWN",
    "CENTS",
    "CHURN",
    "COUPON",
    "IDLE_CHECK",
    "KINDS",
    "NEVER_PURCHASED",
    "NO_ACTIVITY_7D",
    "PURCHASE_GAP",
    "REASON_CODES",
    "RECOMMENDATION",
    "TIER",
    "Decision",
    "MemberScores",
    "Output",
    "Policy",
    "churn_thresholds",
    "decide",
    "decide_all",
    "next_idle_check",
    "output_id",
    "reason_codes",
    "tier_of",
]
