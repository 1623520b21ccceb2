"""Decisions: pure functions from a member's snapshot, scores and decision state to
outputs — churn alerts, recommendation updates, coupon triggers, tier forecasts — and the
output JSON Schemas (`schemas/`). `decide` (decide.py) is the entry point; each kind has
its own module.
"""

from memberpulse.streams.decisions.churn import REASON_CODES, will_alert
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
    "CENTS",
    "CHURN",
    "COUPON",
    "IDLE_CHECK",
    "KINDS",
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
    "tier_of",
    "will_alert",
]
