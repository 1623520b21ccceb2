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
- coupon trigger: the first coupon rule that fires (streams/coupons.py), outside the
  coupon cooldown and within the day's budget; members of the holdout group get a
  holdout record instead and consume no budget;
- tier forecast: thresholds on trailing-12-month spend plus the model's expected spend,
  emitted when the projected tier changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from memberpulse.models.snapshot import (
    PURCHASE_INDEX,
    DecisionState,
    MemberSnapshot,
    day_of,
)
from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_MINUTE
from memberpulse.streams.coupons import CouponRules, signals
from memberpulse.streams.settings import Settings
from memberpulse.streams.state_types import Reservation

CHURN: Final = "churn_alert"
RECOMMENDATION: Final = "recommendation"
COUPON: Final = "coupon"
TIER: Final = "tier"
KINDS: Final = (CHURN, RECOMMENDATION, COUPON, TIER)
IDLE_CHECK: Final = "idle_check"
NEVER_PURCHASED: Final = "never_purchased"
PURCHASE_GAP: Final = "purchase_gap_above_usual"
ACTIVITY_DOWN: Final = "activity_down_vs_previous_30d"
NO_ACTIVITY_7D: Final = "no_activity_7d"
REASON_CODES: Final = (NEVER_PURCHASED, PURCHASE_GAP, ACTIVITY_DOWN, NO_ACTIVITY_7D)
CENTS: Final = 100
FALLBACK_ALERT: Final = 0.7  # thresholds for a model card without risk percentiles
FALLBACK_REARM: Final = 0.5
REARM_CAP: Final = 0.9  # re-arm strictly below the alert threshold, even on flat quantiles
_FINGERPRINT_HEX: Final = 16


@dataclass(frozen=True)
class Policy:
    """Every threshold the decisions use (from Settings and the coupon rules file)."""

    alert_threshold: float
    rearm_threshold: float
    churn_cooldown_ms: int
    reason_gap_ratio: float
    reason_activity_drop: float
    rec_material_top: int
    rec_min_interval_ms: int
    tier_names: tuple[str, ...]
    tier_floors: tuple[float, ...]
    tier_full_history_ms: int
    idle_gap_multiple: float
    idle_default_ms: int
    idle_recheck_ms: int
    coupons: CouponRules

    @classmethod
    def from_settings(
        cls, settings: Settings, coupons: CouponRules, card: Mapping[str, Any] | None = None
    ) -> Policy:
        """The policy the settings describe, churn thresholds fitted to the model `card`."""
        alert, rearm = churn_thresholds(settings, card)
        return cls(
            alert_threshold=alert,
            rearm_threshold=rearm,
            churn_cooldown_ms=round(settings.churn_cooldown_days * MS_PER_DAY),
            reason_gap_ratio=settings.reason_purchase_gap_ratio,
            reason_activity_drop=settings.reason_activity_drop,
            rec_material_top=settings.rec_material_top,
            rec_min_interval_ms=round(settings.rec_min_interval_minutes * MS_PER_MINUTE),
            tier_names=settings.tier_names,
            tier_floors=settings.tier_min_spend,
            tier_full_history_ms=settings.tier_full_history_days * MS_PER_DAY,
            idle_gap_multiple=settings.idle_gap_multiple,
            idle_default_ms=round(settings.idle_default_days * MS_PER_DAY),
            idle_recheck_ms=round(settings.idle_recheck_days * MS_PER_DAY),
            coupons=coupons,
        )


@dataclass(frozen=True)
class MemberScores:
    """What the model said about one member."""

    risk: float
    expected_spend: float
    items: tuple[tuple[str, float], ...]  # top-K (item id, score), best first


@dataclass(frozen=True)
class Output:
    """One output record: its stable id, kind and JSON payload."""

    kind: str
    id: str
    member_id: str
    payload: dict[str, Any]

    def to_wire(self) -> bytes:
        """The record value as JSON bytes."""
        return orjson.dumps(self.payload)


@dataclass(frozen=True)
class Decision:
    """Everything decided for one member in one batch."""

    state: DecisionState
    outputs: tuple[Output, ...]
    reservation: Reservation | None = None  # the coupon's budget, reserved in round trip 2


def churn_thresholds(settings: Settings, card: Mapping[str, Any] | None) -> tuple[float, float]:
    """(alert, re-arm): the fixed settings when given; else quantiles of the model's own
    held-out risks (its card), so that "alert on the riskiest 5%" holds for any model,
    however its probabilities are spread; else the fallback (a card from before the
    percentiles were recorded).
    """
    if settings.churn_alert_threshold is not None and settings.churn_rearm_threshold is not None:
        return settings.churn_alert_threshold, settings.churn_rearm_threshold
    percentiles = (card or {}).get("churn_risk_percentiles")
    if not percentiles:
        return FALLBACK_ALERT, FALLBACK_REARM

    def at(quantile: float) -> float:
        index = min(max(round(quantile * 100) - 1, 0), len(percentiles) - 1)
        return float(percentiles[index])

    alert, rearm = at(settings.churn_alert_quantile), at(settings.churn_rearm_quantile)
    return alert, min(rearm, alert * REARM_CAP)


def output_id(kind: str, member_id: str, episode: int) -> str:
    """An output's id: what it is, for whom, and which episode — never batch-dependent."""
    return f"{kind}:{member_id}:{episode}"


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

    armed = _churn(snapshot, state, scores, now, policy, cooldowns, emit)
    fingerprint = _recommendation(snapshot, state, scores, now, policy, cooldowns, emit)
    reservation = _coupon(
        member_id, snapshot, scores, now, policy, cooldowns, budget_spent_cents, emit
    )
    tier = _tier(snapshot, state, scores, policy, emit)
    new_state = replace(
        state,
        last_risk=scores.risk,
        armed=armed,
        episodes=episodes,
        cooldown_until=cooldowns,
        recommendation_fingerprint=fingerprint,
        next_idle_check=next_idle_check(snapshot, now, policy),
        projected_tier=tier,
        decided_at=now,
    )
    return Decision(new_state, tuple(outputs), reservation)


def _churn(
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    now: int,
    policy: Policy,
    cooldowns: dict[str, int],
    emit: Any,
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


def _recommendation(
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    now: int,
    policy: Policy,
    cooldowns: dict[str, int],
    emit: Any,
) -> str | None:
    """Emit the list when its head changed materially; returns the fingerprint kept."""
    bought = set(snapshot.recent_purchases)
    items = [(item, score) for item, score in scores.items if item not in bought]
    if not items:
        return state.recommendation_fingerprint
    fingerprint = _fingerprint([item for item, _ in items[: policy.rec_material_top]])
    changed = fingerprint != state.recommendation_fingerprint
    if not changed or now < cooldowns.get(RECOMMENDATION, 0):
        return state.recommendation_fingerprint
    emit(
        RECOMMENDATION,
        {
            "items": [{"item_id": item, "score": round(score, 4)} for item, score in items],
            "excluded_recent_purchases": len(bought),
        },
    )
    cooldowns[RECOMMENDATION] = now + policy.rec_min_interval_ms
    return fingerprint


def _fingerprint(items: Sequence[str]) -> str:
    text = "\x00".join(items).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:_FINGERPRINT_HEX]


def _coupon(
    member_id: str,
    snapshot: MemberSnapshot,
    scores: MemberScores,
    now: int,
    policy: Policy,
    cooldowns: dict[str, int],
    budget_spent_cents: int,
    emit: Any,
) -> Reservation | None:
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


def tier_of(spend: float, policy: Policy) -> str:
    """The highest tier whose floor `spend` reaches."""
    chosen = policy.tier_names[0]
    for name, floor in zip(policy.tier_names, policy.tier_floors, strict=True):
        if spend >= floor:
            chosen = name
    return chosen


def _tier(
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    policy: Policy,
    emit: Any,
) -> str:
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
