"""What every decision shares: the thresholds (`Policy`), what the model said
(`MemberScores`), what a decision produces (`Output`, `Decision`) and how an output's id
is made (kind, member, episode number: never batch-dependent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from memberpulse.models.snapshot import DecisionState, Reservation
from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_MINUTE
from memberpulse.streams.decisions.coupons import CouponRules
from memberpulse.streams.settings import DecisionSettings

CHURN: Final = "churn_alert"
RECOMMENDATION: Final = "recommendation"
COUPON: Final = "coupon"
TIER: Final = "tier"
KINDS: Final = (CHURN, RECOMMENDATION, COUPON, TIER)
IDLE_CHECK: Final = "idle_check"
CENTS: Final = 100
FALLBACK_ALERT: Final = 0.7  # thresholds for a model card without risk percentiles
FALLBACK_REARM: Final = 0.5
REARM_CAP: Final = 0.9  # re-arm strictly below the alert threshold, even on flat quantiles


@dataclass(frozen=True)
class Policy:
    """Every threshold the decisions use (from Settings and the coupon rules file)."""

    alert_threshold: float
    rearm_threshold: float
    churn_cooldown_ms: int
    churn_reasons: int
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
        cls,
        decisions: DecisionSettings,
        coupons: CouponRules,
        card: Mapping[str, Any] | None = None,
    ) -> Policy:
        """The policy the settings describe, churn thresholds fitted to the model `card`."""
        alert, rearm = churn_thresholds(decisions, card)
        return cls(
            alert_threshold=alert,
            rearm_threshold=rearm,
            churn_cooldown_ms=round(decisions.churn_cooldown_days * MS_PER_DAY),
            churn_reasons=decisions.churn_reasons,
            rec_material_top=decisions.rec_material_top,
            rec_min_interval_ms=round(decisions.rec_min_interval_minutes * MS_PER_MINUTE),
            tier_names=decisions.tier_names,
            tier_floors=decisions.tier_min_spend,
            tier_full_history_ms=decisions.tier_full_history_days * MS_PER_DAY,
            idle_gap_multiple=decisions.idle_gap_multiple,
            idle_default_ms=round(decisions.idle_default_days * MS_PER_DAY),
            idle_recheck_ms=round(decisions.idle_recheck_days * MS_PER_DAY),
            coupons=coupons,
        )


@dataclass(frozen=True)
class MemberScores:
    """What the model said about one member."""

    risk: float
    expected_spend: float
    items: tuple[tuple[str, float], ...]  # top-K (item id, score), best first
    # Why the risk is what it is (models/explain.py): (reason code, effect on the risk),
    # strongest first; filled for members about to be alerted.
    reasons: tuple[tuple[str, float], ...] = ()


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


def churn_thresholds(
    decisions: DecisionSettings, card: Mapping[str, Any] | None
) -> tuple[float, float]:
    """(alert, re-arm): the fixed settings when given; else quantiles of the model's own
    held-out risks (its card), so that "alert on the riskiest 5%" holds for any model,
    however its probabilities are spread; else the fallback (a card from before the
    percentiles were recorded).
    """
    if decisions.churn_alert_threshold is not None and decisions.churn_rearm_threshold is not None:
        return decisions.churn_alert_threshold, decisions.churn_rearm_threshold
    percentiles = (card or {}).get("churn_risk_percentiles")
    if not percentiles:
        return FALLBACK_ALERT, FALLBACK_REARM

    def at(quantile: float) -> float:
        index = min(max(round(quantile * 100) - 1, 0), len(percentiles) - 1)
        return float(percentiles[index])

    alert, rearm = (
        at(decisions.churn_alert_quantile),
        at(decisions.churn_rearm_quantile),
    )
    return alert, min(rearm, alert * REARM_CAP)


def output_id(kind: str, member_id: str, episode: int) -> str:
    """An output's id: what it is, for whom, and which episode — never batch-dependent."""
    return f"{kind}:{member_id}:{episode}"


#: How a decision emits an output: kind and payload in, the numbered `Output` back.
Emit = Callable[[str, dict[str, Any]], Output]
