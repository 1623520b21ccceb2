"""The coupon trigger: the first rule of the coupon rules file that fires, outside the
coupon cooldown and within the day's budget; members of the holdout group get a holdout
record instead and consume no budget.
"""

from __future__ import annotations

from memberpulse.models.snapshot import MemberSnapshot, Reservation, day_of
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.decisions.coupons import signals
from memberpulse.streams.decisions.policy import CENTS, COUPON, Emit, MemberScores, Policy


def coupon(
    member_id: str,
    snapshot: MemberSnapshot,
    scores: MemberScores,
    now: int,
    policy: Policy,
    cooldowns: dict[str, int],
    budget_spent_cents: int,
    emit: Emit,
) -> Reservation | None:
    """Emit the coupon (or holdout record) of the first rule that fires; the budget
    reservation that round trip 2 must grant, None for a holdout or nothing fired."""
    rules = policy.coupons
    if now < cooldowns.get(COUPON, 0):
        return None
    rule = rules.first_match(
        signals(snapshot, scores.risk, scores.expected_spend, policy.alert_threshold)
    )
    if rule is None:
        return None
    tier = rules.value_tier(scores.expected_spend)
    amount = round(tier.value * CENTS)
    limit = round(rules.budget.daily_limit * CENTS)
    holdout = rules.in_holdout(member_id)
    if not holdout and budget_spent_cents + amount > limit:
        return None  # no budget left today: nothing fires, no cooldown starts
    out = emit(
        COUPON,
        {
            "rule": rule.name,
            "holdout": holdout,
            "value_tier": tier.name,
            "value": None if holdout else tier.value,
            "expected_spend": round(scores.expected_spend, 2),
            "risk": round(scores.risk, 4),
            "budget": rules.budget.name,
            "budget_day": day_of(now),
            "budget_remaining": None if holdout else (limit - budget_spent_cents - amount) / CENTS,
        },
    )
    cooldowns[COUPON] = now + round(rules.cooldown_days * MS_PER_DAY)
    if holdout:
        return None
    return Reservation(out.id, rules.budget.name, day_of(now), amount, limit)
