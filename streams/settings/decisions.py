"""The decisions section: churn thresholds and cooldowns, reason codes, recommendation
and coupon pacing, tiers and idle checks. Its flat names are its field names."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from memberpulse.streams.settings.base import Section, section_config


class DecisionSettings(Section):
    """`churn_*`, `reason_*`, `rec_*`, `coupon_rules`, `tier_*`, `idle_*` (but idle_tick_s)."""

    model_config = section_config()

    churn_alert_threshold: float | None = Field(
        None, gt=0, lt=1, description="fixed alert threshold (default: from the model card)"
    )
    churn_rearm_threshold: float | None = Field(
        None, gt=0, lt=1, description="fixed re-arm threshold (set with the alert threshold)"
    )
    churn_alert_quantile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="alert threshold = this quantile of the model's held-out risks "
        "(0.95: the riskiest 5%), unless churn_alert_threshold is set",
    )
    churn_rearm_quantile: float = Field(
        0.75, gt=0, lt=1, description="re-arm below this quantile of held-out risks"
    )
    churn_cooldown_days: float = Field(7.0, ge=0, description="at most one alert per span")
    churn_reasons: int = Field(
        3, ge=1, le=7, description="reason codes per churn alert (the model's strongest)"
    )
    rec_material_top: int = Field(3, ge=1, description="a change in the first N items is material")
    rec_min_interval_minutes: float = Field(
        60.0, ge=0, description="at most one recommendation update per member per span"
    )
    coupon_rules: Path | None = Field(
        None,
        description="coupon rules TOML (default: the packaged decisions/coupons.default.toml)",
    )
    tier_names: tuple[str, ...] = ("member", "silver", "gold", "platinum")
    tier_min_spend: tuple[float, ...] = Field(
        (0.0, 250.0, 750.0, 2000.0),
        description="tier floors on trailing-12-month spend (+ expected spend when projected)",
    )
    tier_full_history_days: int = Field(
        365, ge=1, description="shorter histories are marked partial_history"
    )
    idle_gap_multiple: float = Field(
        2.0, gt=0, description="idle check when the purchase gap exceeds this × usual gap"
    )
    idle_default_days: float = Field(
        21.0, gt=0, description="idle check after this much silence without a usual gap"
    )
    idle_recheck_days: float = Field(7.0, gt=0, description="re-check a silent member every")

    @model_validator(mode="after")
    def _check_consistency(self) -> DecisionSettings:
        alert, rearm = self.churn_alert_threshold, self.churn_rearm_threshold
        if (alert is None) != (rearm is None):
            raise ValueError(
                "set churn_alert_threshold and churn_rearm_threshold together (or neither: "
                "then both come from the model card's risk quantiles)"
            )
        if alert is not None and rearm is not None and rearm >= alert:
            raise ValueError(
                f"churn_rearm_threshold ({rearm}) must be below "
                f"churn_alert_threshold ({alert}) for hysteresis"
            )
        if self.churn_rearm_quantile >= self.churn_alert_quantile:
            raise ValueError(
                f"churn_rearm_quantile ({self.churn_rearm_quantile}) must be below "
                f"churn_alert_quantile ({self.churn_alert_quantile})"
            )
        floors = self.tier_min_spend
        if len(floors) != len(self.tier_names) or list(floors) != sorted(floors) or floors[0]:
            raise ValueError(
                f"tier_min_spend {floors} must start at 0, rise, and match tier_names "
                f"{self.tier_names} one to one"
            )
        return self
