"""Simulated members: per-member tastes and the plan that fixes a member's life.

A `MemberPlan` holds everything random about a member that is not an event: rates,
tastes, buying rhythm (`Tastes`) and the dated episodes of its life (`Life`, drawn in
`lives.py`). It is drawn from `default_rng([seed, MEMBER_STREAM, index])`, so member i is
the same whatever the member count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from memberpulse.streams.simulate.archetypes import (
    ARCHETYPES,
    ONE_TIME,
    ArchetypeMix,
    MemberConfig,
    Traits,
)
from memberpulse.streams.simulate.catalog import Catalog, unit_rows
from memberpulse.streams.simulate.lives import Life, draw_life

MEMBER_STREAM = 1
#: Member tastes in the latent space have their own stream, so adding them moved no
#: other draw of the member.
TASTE_STREAM = 4


@dataclass(frozen=True, eq=False)
class Tastes:
    """How a member shops, independent of time."""

    rate: float  # sessions/day before multipliers
    buy: float
    cycle_days: float  # mean days between restock orders
    cart: float
    click_mean: float
    price_sensitivity: float
    promo_boost: float
    preferred_hour: float
    hour_sd: float
    affinity_cdf: NDArray[np.float64]  # over categories
    drift_cdf: NDArray[np.float64]  # tastes during a decline: category drift
    week_drift: NDArray[np.float64]  # log-rate multiplier per week
    taste_start: NDArray[np.float64]  # unit vector in the catalog's latent space, day 0
    taste_end: NDArray[np.float64]  # where the taste has drifted to after `taste_drift_days`
    taste_drift_days: float

    def taste_level(self, day: NDArray[np.float64], levels: int) -> NDArray[np.int64]:
        """How far the taste has drifted on each window day, in steps 0 (`taste_start`)
        … levels − 1 (`taste_end`)."""
        share = np.clip(np.asarray(day, dtype=np.float64) / self.taste_drift_days, 0.0, 1.0)
        level: NDArray[np.int64] = np.rint(share * (levels - 1)).astype(np.int64)
        return level


@dataclass(frozen=True, eq=False)
class MemberPlan:
    """One member: who, how it shops, and when things happen to it."""

    index: int
    member_id: str
    archetype: str
    tastes: Tastes
    life: Life


def member_id(index: int) -> str:
    """The id of member `index`, e.g. M000123."""
    return f"M{index:06d}"


def draw_plan(
    index: int, seed: int, n_days: int, config: MemberConfig, mix: ArchetypeMix, catalog: Catalog
) -> MemberPlan:
    """Member `index`'s plan; depends on (seed, index), never on the member count."""
    rng = np.random.default_rng([seed, MEMBER_STREAM, index])
    kind = _categorical(rng, mix.probabilities())
    archetype, traits = ARCHETYPES[kind], config.traits[kind]
    tastes = _tastes(archetype, traits, n_days, config, catalog, rng, (seed, index))
    life = draw_life(archetype, traits, n_days, config, rng)
    return MemberPlan(index, member_id(index), archetype, tastes, life)


def _categorical(rng: np.random.Generator, probabilities: NDArray[np.float64]) -> int:
    """An index drawn with these probabilities (cheaper than Generator.choice with p)."""
    index = int(np.cumsum(probabilities).searchsorted(rng.random(), side="right"))
    return min(index, len(probabilities) - 1)


def _beta(rng: np.random.Generator, mean: float, concentration: float) -> float:
    return float(rng.beta(mean * concentration, (1.0 - mean) * concentration))


def _cdf(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return cdf


def _tastes(
    archetype: str,
    traits: Traits,
    n_days: int,
    cfg: MemberConfig,
    catalog: Catalog,
    rng: np.random.Generator,
    stream: tuple[int, int],
) -> Tastes:
    share = catalog.category_share
    alpha = np.maximum(cfg.affinity_concentration * len(share) * share, 1e-3)
    weights = np.asarray(cfg.hour_mode_weights) / sum(cfg.hour_mode_weights)
    mode = cfg.hour_modes[_categorical(rng, weights)]
    # Stationary AR(1) per week: shocks scaled so every week has sd drift_sd.
    shocks = rng.normal(0.0, 1.0, n_days // 7 + 2) * cfg.drift_sd
    shocks[1:] *= np.sqrt(1.0 - cfg.drift_ar**2)
    drift = [float(shocks[0])]
    for shock in shocks[1:].tolist():
        drift.append(cfg.drift_ar * drift[-1] + shock)
    heavy_tail = float(rng.lognormal(0.0, cfg.rate_sigma))
    one_time = archetype == ONE_TIME
    # Drawn in this order (the fields' order): the member's stream stays as it was.
    buy = traits.buy if one_time else _beta(rng, traits.buy, cfg.concentration)
    cycle_days = traits.cycle * float(rng.lognormal(0.0, cfg.cycle_sigma))
    cart = _beta(rng, traits.cart, cfg.concentration)
    click_mean = cfg.click_median * float(rng.lognormal(0.0, cfg.click_sigma))
    sensitivity = traits.price_sensitivity * float(rng.lognormal(0, cfg.sensitivity_sigma))
    preferred_hour = float((mode + rng.normal(0.0, cfg.hour_mode_sd)) % 24)
    hour_sd = float(rng.uniform(*cfg.hour_sd))
    affinity = rng.dirichlet(alpha)
    drifted = rng.dirichlet(alpha)
    seed, index = stream
    taste_rng = np.random.default_rng([seed, TASTE_STREAM, index])
    mean = affinity @ catalog.category_centroid
    noise = taste_rng.normal(size=(2, len(mean))) / np.sqrt(len(mean))
    start, end = unit_rows(mean + cfg.taste_noise * noise)
    drift_median, drift_sigma = cfg.taste_drift_days
    return Tastes(
        rate=cfg.one_time_rate if one_time else traits.rate_mult * cfg.rate_median * heavy_tail,
        buy=buy,
        cycle_days=cycle_days,
        cart=cart,
        click_mean=click_mean,
        price_sensitivity=sensitivity,
        promo_boost=traits.promo_boost,
        preferred_hour=preferred_hour,
        hour_sd=hour_sd,
        affinity_cdf=_cdf(affinity),
        drift_cdf=_cdf(drifted),
        week_drift=np.asarray(drift),
        taste_start=start,
        taste_end=end,
        taste_drift_days=drift_median * float(taste_rng.lognormal(0.0, drift_sigma)),
    )
