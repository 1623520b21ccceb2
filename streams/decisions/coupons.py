"""Coupon rules: a TOML file of named rules over named member signals, checked by a schema.

A rule fires when every one of its conditions holds; conditions compare a *signal* (a
number computed from the member's snapshot and scores, listed in `SIGNALS`) with a
threshold. There is no expression language and no `eval`: an unknown signal, operator or
field is a load error that names what is allowed. The first rule that fires wins (file
order). The same file sets the coupon cooldown, the value tiers (coupon value from the
model's expected spend), the daily budget and the holdout share.
"""

from __future__ import annotations

import hashlib
import math
import operator
import tomllib
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memberpulse.models.contract import ADD_TO_CART, BROWSE, CLICK, PURCHASE, SEARCH
from memberpulse.models.errors import ConfigError
from memberpulse.models.snapshot import MemberSnapshot
from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_MINUTE

INTENT_TYPES: Final = (CLICK, BROWSE, ADD_TO_CART, SEARCH)
DEFAULT_RULES: Final = "coupons.default.toml"
_HASH_BYTES: Final = 8
_HASH_SCALE: Final = float(1 << (8 * _HASH_BYTES))

Op = Literal[">=", ">", "<=", "<", "=="]
_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


def _minutes_since(snapshot: MemberSnapshot, types: tuple[str, ...]) -> float:
    recencies = [snapshot.recency_ms(t) for t in types]
    known = [r for r in recencies if r is not None]
    return min(known) / MS_PER_MINUTE if known else math.inf


#: name → (meaning, how it is computed from the snapshot, churn risk, expected spend and the
#: churn alert threshold in use).
SIGNALS: Final[dict[str, tuple[str, Callable[[MemberSnapshot, float, float, float], float]]]] = {
    "churn_risk": ("model churn probability over the horizon", lambda s, r, e, a: r),
    "churn_risk_vs_alert": (
        "churn risk / the alert threshold in use (1: alert level, whatever the model)",
        lambda s, r, e, a: r / a if a > 0 else math.inf,
    ),
    "expected_spend": ("model expected spend over the horizon", lambda s, r, e, a: e),
    "minutes_since_intent": (
        "minutes since the latest click, browse, add_to_cart or search (inf: never)",
        lambda s, r, e, a: _minutes_since(s, INTENT_TYPES),
    ),
    "minutes_since_purchase": (
        "minutes since the latest purchase (inf: never)",
        lambda s, r, e, a: _minutes_since(s, (PURCHASE,)),
    ),
    "trailing_12m_spend": (
        "spend over the last 12 calendar months",
        lambda s, r, e, a: s.trailing_12m_spend_cents / 100,
    ),
    "purchases_30d": (
        "purchases over the last 30 days",
        lambda s, r, e, a: float(s.counts["30d"][2]),
    ),
    "events_7d": (
        "events of any type over the last 7 days",
        lambda s, r, e, a: sum(s.counts["7d"]),
    ),
    "tenure_days": (
        "days since the member's first event",
        lambda s, r, e, a: s.tenure_ms / MS_PER_DAY,
    ),
}


class Condition(BaseModel):
    """`signal op value`, e.g. churn_risk >= 0.5."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    signal: str
    op: Op
    value: float

    @field_validator("signal")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in SIGNALS:
            raise ValueError(f"unknown signal {name!r}; known: {', '.join(sorted(SIGNALS))}")
        return name

    def holds(self, signals: Mapping[str, float]) -> bool:
        """Whether the condition holds for these signal values."""
        return bool(_OPS[self.op](signals[self.signal], self.value))


class Rule(BaseModel):
    """A named rule: fires when all its conditions hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    when: tuple[Condition, ...] = Field(min_length=1)


class ValueTier(BaseModel):
    """Coupon value for members whose expected spend is at least `min_expected_spend`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    min_expected_spend: float = Field(ge=0)
    value: float = Field(gt=0)


class Budget(BaseModel):
    """A daily (event-time UTC day) budget in currency units, shared by all workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    daily_limit: float = Field(ge=0)


class CouponRules(BaseModel):
    """The whole rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cooldown_days: float = Field(ge=0, description="no second coupon within this span")
    holdout_share: float = Field(ge=0, le=1)
    holdout_salt: str = Field(min_length=1)
    budget: Budget
    value_tiers: tuple[ValueTier, ...] = Field(min_length=1)
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CouponRules:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        floors = [tier.min_expected_spend for tier in self.value_tiers]
        if floors != sorted(floors) or floors[0] != 0:
            raise ValueError(
                f"value_tiers must start at min_expected_spend = 0 and rise, got {floors}"
            )
        return self

    def first_match(self, signals: Mapping[str, float]) -> Rule | None:
        """The first rule (file order) whose conditions all hold."""
        for rule in self.rules:
            if all(condition.holds(signals) for condition in rule.when):
                return rule
        return None

    def value_tier(self, expected_spend: float) -> ValueTier:
        """The highest value tier the expected spend reaches."""
        chosen = self.value_tiers[0]
        for tier in self.value_tiers:
            if expected_spend >= tier.min_expected_spend:
                chosen = tier
        return chosen

    def in_holdout(self, member_id: str) -> bool:
        """Deterministic control group: sha256(salt + member_id) below the holdout share."""
        digest = hashlib.sha256((self.holdout_salt + member_id).encode("utf-8", "surrogatepass"))
        draw = int.from_bytes(digest.digest()[:_HASH_BYTES], "big") / _HASH_SCALE
        return draw < self.holdout_share


def signals(
    snapshot: MemberSnapshot, risk: float, expected_spend: float, alert_threshold: float
) -> dict[str, float]:
    """Every named signal for one member."""
    return {
        name: float(fn(snapshot, risk, expected_spend, alert_threshold))
        for name, (_, fn) in SIGNALS.items()
    }


def load_rules(path: Path | None) -> CouponRules:
    """Rules from a TOML file (the packaged default when `path` is None); clear errors."""
    if path is None:
        text = (
            files("memberpulse.streams.decisions")
            .joinpath(DEFAULT_RULES)
            .read_text(encoding="utf-8")
        )
        where = f"<packaged {DEFAULT_RULES}>"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read coupon rules {path}: {exc}") from exc
        where = str(path)
    try:
        return CouponRules.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"coupon rules {where} are not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"coupon rules {where} do not match the schema:\n{exc}") from exc
