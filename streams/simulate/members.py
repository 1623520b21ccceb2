"""Simulated members: archetypes, per-member tastes and each member's dated life.

A `MemberPlan` holds everything random about a member that is not an event: rates,
tastes, rhythm (`Tastes`) and the dated episodes of its life (`Life`: first day, lull,
decline, silence, churn). It is drawn from `default_rng([seed, MEMBER_STREAM, index])`,
so member i is the same whatever the member count. Days are floats counted from the
window start; `daily_activity` turns a plan into a per-day session-rate multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from memberpulse.streams.simulate.catalog import Catalog

MEMBER_STREAM = 1

LOYAL = "loyal"
NEW = "new"
BARGAIN_HUNTER = "bargain_hunter"
DECLINING = "declining"
DORMANT_REACTIVATED = "dormant_reactivated"
ONE_TIME = "one_time"
ARCHETYPES: tuple[str, ...] = (LOYAL, NEW, BARGAIN_HUNTER, DECLINING, DORMANT_REACTIVATED, ONE_TIME)


@dataclass(frozen=True)
class ArchetypeMix:
    """Shares of the archetypes in the population (normalised; need not sum to 1)."""

    loyal: float = 0.30
    new: float = 0.15
    bargain_hunter: float = 0.15
    declining: float = 0.15
    dormant_reactivated: float = 0.08
    one_time: float = 0.17

    def __post_init__(self) -> None:
        shares = [getattr(self, name) for name in ARCHETYPES]
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"archetype shares must be >= 0 with a positive sum, got {shares}")

    def probabilities(self) -> NDArray[np.float64]:
        """Shares in `ARCHETYPES` order, summing to 1."""
        shares = np.array([getattr(self, name) for name in ARCHETYPES], dtype=np.float64)
        return shares / float(shares.sum())


@dataclass(frozen=True)
class Traits:
    """Archetype means around which members scatter."""

    rate_mult: float  # × the population's median sessions/day
    buy: float  # share of sessions that end in a purchase
    cart: float  # chance a clicked item goes to the cart
    price_sensitivity: float  # s in price^-s when choosing among candidates
    churn: float  # chance of going silent for good (within or after the window)
    abrupt: float  # share of churners who stop without precursors
    promo_boost: float  # sessions × (1 + boost) on promotion days


#: One row per archetype, in `ARCHETYPES` order.
DEFAULT_TRAITS: tuple[Traits, ...] = (
    #     rate_mult  buy  cart  price_s  churn  abrupt  promo
    Traits(1.6,     0.38, 0.40,  0.3,    0.08,  0.4,    0.3),  # loyal
    Traits(1.0,     0.28, 0.32,  0.6,    0.35,  0.4,    0.5),  # new
    Traits(0.9,     0.25, 0.30,  1.6,    0.25,  0.3,    2.5),  # bargain_hunter
    Traits(1.1,     0.30, 0.35,  0.6,    0.75,  0.0,    0.3),  # declining
    Traits(0.9,     0.30, 0.33,  0.6,    0.10,  0.3,    0.3),  # dormant_reactivated
    Traits(1.0,     1.00, 0.35,  0.6,    1.00,  1.0,    0.0),  # one_time
)  # fmt: skip


@dataclass(frozen=True)
class MemberConfig:
    """Population parameters (rates per day, durations in days, spans as (low, high))."""

    traits: tuple[Traits, ...] = DEFAULT_TRAITS
    rate_median: float = 0.15  # sessions/day, lognormal: heavy-tailed activity
    rate_sigma: float = 0.9
    concentration: float = 10.0  # Beta(m·k, (1 - m)·k) around an archetype mean m
    click_median: float = 2.5
    click_sigma: float = 0.4
    sensitivity_sigma: float = 0.3
    affinity_concentration: float = 0.35  # Dirichlet α = this × n_categories × share
    hour_modes: tuple[float, ...] = (20.0, 12.5, 8.5)  # evening, lunch, morning (UTC)
    hour_mode_weights: tuple[float, ...] = (0.6, 0.25, 0.15)
    hour_mode_sd: float = 1.5
    hour_sd: tuple[float, float] = (1.0, 3.0)
    precursor_days: tuple[float, float] = (14.0, 42.0)
    precursor_peak: tuple[float, float] = (0.7, 1.0)
    declining_churn: tuple[float, float] = (0.3, 1.25)  # churn day, fractions of the window
    session_drop: float = 0.3  # sessions × (1 - drop · decline intensity)
    false_alarm: float = 0.06  # non-churners with a decline they recover from
    lull_prob: float = 0.3  # vacations, for churners and non-churners alike
    lull_days: tuple[float, float] = (7.0, 28.0)
    lull_level: float = 0.1
    drift_sd: float = 0.3  # weekly AR(1) log-rate drift: activity noise that is not churn
    drift_ar: float = 0.7
    weekend_boost: float = 1.15
    churn_horizon_days: float = 60.0  # churn may be dated this far past the window
    min_active_days: float = 7.0
    new_boost: float = 1.5
    new_boost_days: float = 14.0
    dormant_start: tuple[float, float] = (0.05, 0.35)  # fractions of the window
    dormant_length: tuple[float, float] = (0.3, 0.5)
    dormant_precursor_prob: float = 0.5
    reactivation_boost: float = 1.3
    reactivation_boost_days: float = 14.0
    one_time_span_days: tuple[float, float] = (1.0, 10.0)
    one_time_rate: float = 0.3

    def __post_init__(self) -> None:
        if len(self.traits) != len(ARCHETYPES):
            raise ValueError(f"need one Traits per archetype {ARCHETYPES}, got {len(self.traits)}")


@dataclass(frozen=True, eq=False)
class Tastes:
    """How a member shops, independent of time."""

    rate: float  # sessions/day before multipliers
    buy: float
    cart: float
    click_mean: float
    price_sensitivity: float
    promo_boost: float
    preferred_hour: float
    hour_sd: float
    affinity_cdf: NDArray[np.float64]  # over categories
    drift_cdf: NDArray[np.float64]  # tastes during a decline: category drift
    week_drift: NDArray[np.float64]  # log-rate multiplier per week


@dataclass(frozen=True)
class Decline:
    """Precursor intensity: 0 at start, `peak` at peak_day, back to 0 at end (or stays)."""

    start: float
    peak_day: float
    end: float | None
    peak: float


@dataclass(frozen=True)
class Life:
    """Dated episodes of a member's life, in days from the window start."""

    first_day: float
    churn_day: float | None
    decline: Decline | None
    lull: tuple[float, float] | None
    silence: tuple[float, float] | None  # dormant: silent in [start, reactivation)

    def intensity(self, day: NDArray[np.float64]) -> NDArray[np.float64]:
        """Decline intensity in [0, 1] at each (fractional) day."""
        d = self.decline
        if d is None:
            return np.zeros_like(day)
        if d.end is None:
            return np.interp(day, [d.start, d.peak_day], [0.0, d.peak])
        return np.interp(day, [d.start, d.peak_day, d.end], [0.0, d.peak, 0.0])


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
    tastes = _tastes(archetype, traits, n_days, config, catalog, rng)
    life = _life(archetype, traits, n_days, config, rng)
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
    return Tastes(
        rate=cfg.one_time_rate if one_time else traits.rate_mult * cfg.rate_median * heavy_tail,
        buy=traits.buy if one_time else _beta(rng, traits.buy, cfg.concentration),
        cart=_beta(rng, traits.cart, cfg.concentration),
        click_mean=cfg.click_median * float(rng.lognormal(0.0, cfg.click_sigma)),
        price_sensitivity=traits.price_sensitivity * float(rng.lognormal(0, cfg.sensitivity_sigma)),
        promo_boost=traits.promo_boost,
        preferred_hour=float((mode + rng.normal(0.0, cfg.hour_mode_sd)) % 24),
        hour_sd=float(rng.uniform(*cfg.hour_sd)),
        affinity_cdf=_cdf(rng.dirichlet(alpha)),
        drift_cdf=_cdf(rng.dirichlet(alpha)),
        week_drift=np.asarray(drift),
    )


def _life(
    archetype: str, traits: Traits, n_days: int, cfg: MemberConfig, rng: np.random.Generator
) -> Life:
    """First day, churn, decline, lull and silence. Every draw is made whatever the
    archetype, so the stream stays aligned and members differ only where they should."""
    horizon = n_days + cfg.churn_horizon_days
    late_start = float(rng.uniform(0.0, n_days))
    churns = bool(rng.random() < traits.churn)
    abrupt = bool(rng.random() < traits.abrupt)
    ramp = float(rng.uniform(*cfg.precursor_days))
    peak = float(rng.uniform(*cfg.precursor_peak))
    u_churn, u_alarm, u_lull, u_lull_start = rng.random(4)
    lull_length = float(rng.uniform(*cfg.lull_days))
    silence_start = float(rng.uniform(*cfg.dormant_start)) * n_days
    silence_length = float(rng.uniform(*cfg.dormant_length)) * n_days
    span = float(rng.uniform(*cfg.one_time_span_days))

    first = late_start if archetype in (NEW, ONE_TIME) else 0.0
    if archetype == ONE_TIME:
        return Life(first, first + span, None, None, None)
    silence = None
    decline: Decline | None = None
    earliest = first + cfg.min_active_days
    if archetype == DORMANT_REACTIVATED:
        silence = (silence_start, silence_start + silence_length)
        earliest = silence[1] + cfg.min_active_days
        if u_alarm < cfg.dormant_precursor_prob:
            # Dormancy often starts like churn; intensity is moot once silent.
            decline = Decline(max(first, silence_start - ramp), silence_start, silence[1], peak)
    churn_day: float | None = None
    if churns and archetype == DECLINING:
        churn_day = n_days * float(np.interp(u_churn, [0, 1], cfg.declining_churn))
    elif churns:
        churn_day = earliest + u_churn * max(horizon - earliest, 0.0)
    if churn_day is not None and not abrupt:
        decline = Decline(max(first, churn_day - ramp), churn_day, None, peak)
    elif churn_day is None and (
        archetype == DECLINING or (decline is None and u_alarm < cfg.false_alarm)
    ):
        start = first + u_churn * max(n_days - first - ramp / 2, 0.0)
        decline = Decline(start, start + ramp / 2, start + ramp, peak)
    lull = None
    if u_lull < cfg.lull_prob:
        start = first + u_lull_start * max(n_days - first, 0.0)
        lull = (start, start + lull_length)
    return Life(first, churn_day, decline, lull, silence)


def daily_activity(
    plan: MemberPlan,
    cfg: MemberConfig,
    day_start: NDArray[np.float64],
    weekend: NDArray[np.bool_],
    promo: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Expected sessions per calendar day; `day_start` holds each day's midnight in
    window days. Zero on days entirely outside the member's active life."""
    tastes, life = plan.tastes, plan.life
    mid = day_start + 0.5
    week = np.clip(np.floor(mid / 7).astype(np.int64), 0, len(tastes.week_drift) - 1)
    mult = tastes.rate * np.exp(tastes.week_drift[week])
    mult *= np.where(weekend, cfg.weekend_boost, 1.0)
    mult *= np.where(promo, 1.0 + tastes.promo_boost, 1.0)
    mult *= 1.0 - cfg.session_drop * life.intensity(mid)
    if life.lull is not None:
        mult *= np.where((mid >= life.lull[0]) & (mid < life.lull[1]), cfg.lull_level, 1.0)
    if plan.archetype == NEW:
        keen = (mid >= life.first_day) & (mid < life.first_day + cfg.new_boost_days)
        mult *= np.where(keen, cfg.new_boost, 1.0)
    if life.silence is not None:
        back = life.silence[1]
        fresh = (mid >= back) & (mid < back + cfg.reactivation_boost_days)
        mult *= np.where(fresh, cfg.reactivation_boost, 1.0)
        mult *= ~((day_start >= life.silence[0]) & (day_start + 1 <= back))
    ends = np.inf if life.churn_day is None else life.churn_day
    return np.where((day_start + 1 > life.first_day) & (day_start < ends), mult, 0.0)
