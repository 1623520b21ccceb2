"""The churn alert: hysteresis on the model's risk (fire on reaching the alert threshold
while armed, re-arm only below the re-arm threshold), at most one alert per cooldown, with
the model's own reasons (occlusion over its inputs, models/explain.py), strongest first.
"""

from __future__ import annotations

from typing import Final

from memberpulse.models.explain import CODES
from memberpulse.models.snapshot import DecisionState, MemberSnapshot
from memberpulse.streams.decisions.policy import CHURN, Emit, MemberScores, Policy

REASON_CODES: Final = CODES


def will_alert(state: DecisionState, risk: float, now: int, policy: Policy) -> bool:
    """Whether `churn` fires for this risk: armed (or re-armed by it), cooled, at threshold.
    The worker asks first, to explain only the members about to be alerted."""
    armed = state.armed or risk < policy.rearm_threshold
    cooled = now >= state.cooldown_until.get(CHURN, 0)
    return armed and cooled and risk >= policy.alert_threshold


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
        if not scores.reasons:
            raise ValueError(
                f"a churn alert needs the model's reasons (models/explain.py); "
                f"none were computed for risk {scores.risk:.4f}"
            )
        reasons = scores.reasons[: policy.churn_reasons]
        emit(
            CHURN,
            {
                "risk": round(scores.risk, 4),
                "previous_risk": None if state.last_risk is None else round(state.last_risk, 4),
                "threshold": policy.alert_threshold,
                "reasons": [code for code, _ in reasons],
                "reason_effects": dict(reasons),
            },
        )
        cooldowns[CHURN] = now + policy.churn_cooldown_ms
        return False
    return armed
