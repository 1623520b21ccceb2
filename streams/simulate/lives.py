"""A member's dated life: first day, churn, decline (the precursors), lull and silence.

Days are floats counted from the window start. Every draw is made whatever the
archetype, so a member's random stream stays aligned and members differ only where they
should.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from memberpulse.streams.simulate.archetypes import (
    DECLINING,
    DORMANT_REACTIVATED,
    NEW,
    ONE_TIME,
    MemberConfig,
    Traits,
)


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


def draw_life(
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
        churn_day = earliest + u_churn**cfg.churn_skew * max(horizon - earliest, 0.0)
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
