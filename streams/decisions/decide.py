"""Decisions: pure functions from a member's snapshot, scores and decision state to outputs.

Nothing here reads a clock, Redis or Kafka: `now` is event time, and everything a decision
must remember (armed flag, cooldowns, episode counters, the last recommendation, the last
projected tier, the next idle check) goes in and out through `DecisionState`, which round
trip 2 stores atomically with the outbox. So a batch replayed after a crash decides the
same things again, and an output's id — (kind, member, episode number) — never depends on
how events were batched.

- churn alert: risk reaches `alert_threshold` while armed; re-armed only once risk falls
  below `rearm_threshold` (hysteresis); at most one alert per `churn_cooldown`;
- recommendation update: the top-K list (recently bought items never in it) when its
  first `rec_material_top` items changed, at most once per `rec_min_interval`;
- coupon trigger: the first coupon rule that fires (streams/decisions/coupons.py), outside the
  coupon cooldown and within the day's budget; members of the holdout group get a
  holdout record instead and consume no budget;
- tier forecast: thresholds on trailing-12-month spend plus the model's expected spend,
  emitted when the projected tier changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from memberpulse.models.snapshot import PURCHASE_INDEX, DecisionState, MemberSnapshot, day_of
from memberpulse.streams.decisions.churn import churn
from memberpulse.streams.decisions.coupon_trigger import coupon
from memberpulse.streams.decisions.policy import (
    IDLE_CHECK,
    Decision,
    MemberScores,
    Output,
    Policy,
    output_id,
)
from memberpulse.streams.decisions.recommendations import recommendation
from memberpulse.streams.decisions.tiers import tier


def decide(
    member_id: str,
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    trigger: str | None,
    now: int,
    policy: Policy,
    model_version: str,
    budget_spent_cents: int = 0,
) -> Decision:
    """All four decisions for one member at event time `now`.

    `trigger`: the id of the member's latest event in the batch, None for an idle check.
    `budget_spent_cents`: the coupon budget already spent on `now`'s day (read in round
    trip 1; the reservation in round trip 2 is what guards it against other workers).
    """
    common = {
        "member_id": member_id,
        "event_time": now,
        "model_version": model_version,
        "trigger": trigger if trigger is not None else IDLE_CHECK,
    }
    outputs: list[Output] = []
    episodes = dict(state.episodes)
    cooldowns = dict(state.cooldown_until)

    def emit(kind: str, payload: dict[str, Any]) -> Output:
        episodes[kind] = episodes.get(kind, 0) + 1
        ident = output_id(kind, member_id, episodes[kind])
        out = Output(kind, ident, member_id, {"id": ident, "kind": kind, **common, **payload})
        outputs.append(out)
        return out

    armed = churn(snapshot, state, scores, now, policy, cooldowns, emit)
    fingerprint = recommendation(snapshot, state, scores, now, policy, cooldowns, emit)
    reservation = coupon(
        member_id, snapshot, scores, now, policy, cooldowns, budget_spent_cents, emit
    )
    projected = tier(snapshot, state, scores, policy, emit)
    new_state = replace(
        state,
        last_risk=scores.risk,
        armed=armed,
        episodes=episodes,
        cooldown_until=cooldowns,
        recommendation_fingerprint=fingerprint,
        next_idle_check=next_idle_check(snapshot, now, policy),
        projected_tier=projected,
        decided_at=now,
    )
    return Decision(new_state, tuple(outputs), reservation)


def next_idle_check(snapshot: MemberSnapshot, now: int, policy: Policy) -> int:
    """When this member's silence should be checked (event time): once the gap since their
    last purchase exceeds `idle_gap_multiple` × their usual gap (a default span for
    members without a usual gap); a check already due is repeated every `idle_recheck`.
    """
    last_purchase = snapshot.last_ts[PURCHASE_INDEX]
    mean_gap = snapshot.orders.mean_gap_ms
    if last_purchase is not None and mean_gap:
        due = last_purchase + round(policy.idle_gap_multiple * mean_gap)
    else:
        due = (last_purchase or snapshot.last_seen) + policy.idle_default_ms
    due = max(due, snapshot.last_seen + policy.idle_recheck_ms)
    return due if due > now else now + policy.idle_recheck_ms


def decide_all(
    members: Mapping[str, tuple[MemberSnapshot, DecisionState, MemberScores, str | None]],
    now_of: Mapping[str, int],
    policy: Policy,
    model_version: str,
    budget_spent_cents: Mapping[int, int],
) -> dict[str, Decision]:
    """`decide` for every member of a batch, in order; coupons share each day's budget
    (`budget_spent_cents`: day → cents already spent, as read in round trip 1).
    """
    decisions: dict[str, Decision] = {}
    spent = dict(budget_spent_cents)
    for member, (snapshot, state, scores, trigger) in members.items():
        now = now_of[member]
        day = day_of(now)
        decision = decide(
            member, snapshot, state, scores, trigger, now, policy, model_version, spent.get(day, 0)
        )
        if decision.reservation is not None:
            spent[day] = spent.get(day, 0) + decision.reservation.amount
        decisions[member] = decision
    return decisions
