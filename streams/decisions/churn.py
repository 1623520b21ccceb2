"""The churn alert: hysteresis on the model's risk (fire on reaching the alert threshold
while armed, re-arm only below the re-arm threshold), at most one alert per cooldown, with
reason codes from the member's own history.
"""

from __future__ import annotations

from typing import Final

from memberpulse.models.snapshot import DecisionState, MemberSnapshot
from memberpulse.streams.decisions.policy import CHURN, Emit, MemberScores, Policy

NEVER_PURCHASED: Final = "never_purchased"
PURCHASE_GAP: Final = "purchase_gap_above_usual"
ACTIVITY_DOWN: Final = "activity_down_vs_previous_30d"
NO_ACTIVITY_7D: Final = "no_activity_7d"
REASON_CODES: Final = (NEVER_PURCHASED, PURCHASE_GAP, ACTIVITY_DOWN, NO_ACTIVITY_7D)


def churn(
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    now: int,
    policy: Policy,
    cooldowns: dict[str, int],
    emit: Emit,
) -> bool:
    """Hysteresis: fire on reaching the threshold while armed; re-arm below re-arm."""
    armed = state.armed or scores.risk < policy.rearm_threshold
    cooled = now >= cooldowns.get(CHURN, 0)
    if armed and cooled and scores.risk >= policy.alert_threshold:
        emit(
            CHURN,
            {
                "risk": round(scores.risk, 4),
                "previous_risk": None if state.last_risk is None else round(state.last_risk, 4),
                "threshold": policy.alert_threshold,
                "reasons": reason_codes(snapshot, policy),
            },
        )
        cooldowns[CHURN] = now + policy.churn_cooldown_ms
        return False
    return armed


def reason_codes(snapshot: MemberSnapshot, policy: Policy) -> list[str]:
    """Why the member looks at risk, from their own history (never from the model)."""
    reasons = []
    since_purchase = snapshot.recency_ms("purchase")
    mean_gap = snapshot.orders.mean_gap_ms
    if since_purchase is None:
        reasons.append(NEVER_PURCHASED)
    elif mean_gap and since_purchase > policy.reason_gap_ratio * mean_gap:
        reasons.append(PURCHASE_GAP)
    last_30, previous_30 = sum(snapshot.counts["30d"]), sum(snapshot.counts["prev30d"])
    if previous_30 and last_30 < policy.reason_activity_drop * previous_30:
        reasons.append(ACTIVITY_DOWN)
    if not sum(snapshot.counts["7d"]):
        reasons.append(NO_ACTIVITY_7D)
    return reasons
