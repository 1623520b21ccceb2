"""Who the members are: the archetypes, their shares and traits, and the population's
parameters (rates, spreads, durations of lives' episodes). Everything here is a frozen
config; drawing a member from it lives in `members.py` and `lives.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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
    one_time: float = 0.06

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
    buy: float  # share of browsing sessions that end in an impulse purchase
    cycle: float  # median days between restock orders (the member's buying rhythm)
    cart: float  # chance a clicked item goes to the cart
    price_sensitivity: float  # s in price^-s when choosing among candidates
    churn: float  # chance of going silent for good (within or after the window)
    abrupt: float  # share of churners who stop without precursors
    promo_boost: float  # sessions × (1 + boost) on promotion days


#: One row per archetype, in `ARCHETYPES` order.
DEFAULT_TRAITS: tuple[Traits, ...] = (
    #     rate_mult  buy  cycle  cart  price_s  churn  abrupt  promo
    Traits(1.6,     0.12, 14.0, 0.40,  0.3,    0.12,  0.05,   0.3),  # loyal
    Traits(1.0,     0.10, 20.0, 0.32,  0.6,    0.40,  0.05,   0.5),  # new
    Traits(0.9,     0.08, 24.0, 0.30,  1.6,    0.30,  0.05,   2.5),  # bargain_hunter
    Traits(1.1,     0.10, 18.0, 0.35,  0.6,    0.75,  0.0,    0.3),  # declining
    Traits(0.9,     0.10, 20.0, 0.33,  0.6,    0.10,  0.05,   0.3),  # dormant_reactivated
    Traits(1.0,     1.00, 20.0, 0.35,  0.6,    1.00,  1.0,    0.0),  # one_time
)  # fmt: skip


@dataclass(frozen=True)
class MemberConfig:
    """Population parameters (rates per day, durations in days, spans as (low, high))."""

    traits: tuple[Traits, ...] = DEFAULT_TRAITS
    rate_median: float = 0.12  # browsing sessions/day, lognormal: heavy-tailed activity
    rate_sigma: float = 0.9
    cycle_sigma: float = 0.6  # lognormal spread of restock cycles around the archetype's
    concentration: float = 10.0  # Beta(m·k, (1 - m)·k) around an archetype mean m
    click_median: float = 2.5
    click_sigma: float = 0.4
    sensitivity_sigma: float = 0.3
    affinity_concentration: float = 0.35  # Dirichlet α = this × n_categories × share
    # Taste in the catalog's latent space: the affinity-weighted mean of the category
    # centroids + this × Gaussian noise, unit length; it drifts from a first to a second
    # such vector over a lognormal number of days (median, sigma), and an item's
    # log-weight in every choice gains sharpness × cosine(taste, item).
    taste_noise: float = 1.0
    taste_sharpness: float = 5.0
    taste_drift_days: tuple[float, float] = (150.0, 0.5)
    taste_levels: int = 8  # the drift is followed in this many steps (walk caches per step)
    hour_modes: tuple[float, ...] = (20.0, 12.5, 8.5)  # evening, lunch, morning (UTC)
    hour_mode_weights: tuple[float, ...] = (0.6, 0.25, 0.15)
    hour_mode_sd: float = 1.5
    hour_sd: tuple[float, float] = (1.0, 3.0)
    precursor_days: tuple[float, float] = (21.0, 56.0)
    precursor_peak: tuple[float, float] = (0.8, 1.0)
    declining_churn: tuple[float, float] = (0.5, 1.25)  # churn day, fractions of the window
    # Sessions × (1 + lift · decline intensity): members shop around before they leave, so
    # their last visit stays recent while their buying stops (recency alone misleads).
    session_lift: float = 0.3
    false_alarm: float = 0.06  # non-churners with a decline they recover from
    lull_prob: float = 0.45  # vacations, for churners and non-churners alike
    lull_days: tuple[float, float] = (7.0, 28.0)
    lull_level: float = 0.1
    drift_sd: float = 0.3  # weekly AR(1) log-rate drift: activity noise that is not churn
    drift_ar: float = 0.7
    weekend_boost: float = 1.15
    churn_horizon_days: float = 60.0  # churn may be dated this far past the window
    # Churn day = earliest + span × u^skew: below 1 dates churn later, so most churners are
    # seen through their decline instead of long gone (which recency alone would catch).
    churn_skew: float = 0.5
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
