"""When members act: expected sessions per day, visit and restock moments, hours of the
day, and timestamps inside sessions and orders.

Visits are a Poisson count per calendar day at hours around the member's preferred hour.
Restocks follow the member's own buying rhythm: gamma-spaced (regular, not Poisson)
moments from a random phase. A restock due in a lull or a silence waits for the return
(the member comes back and buys), and late in a decline (x >= the stop level) a restock
is a visit that buys nothing: visits go on, buying stops.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate.archetypes import NEW, ONE_TIME, MemberConfig
from memberpulse.streams.simulate.context import SimContext
from memberpulse.streams.simulate.members import MemberPlan

MS_PER_HOUR = 3_600_000
HOURS_PER_DAY = 24


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
    mult *= 1.0 + cfg.session_lift * life.intensity(mid)
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


def visit_moments(
    plan: MemberPlan, ctx: SimContext, per_day: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.int64]:
    """Sorted start moments: a Poisson count per calendar day at diurnal hours; members
    first seen in the window get a session at their first moment."""
    day = np.repeat(np.arange(len(per_day)), rng.poisson(per_day))
    hours = hours_of_day(plan, len(day), ctx.behaviour.off_rhythm, rng)
    ts = ctx.midnight_ms[day] + (hours * MS_PER_HOUR).astype(np.int64)
    if plan.archetype in (NEW, ONE_TIME):
        ts = np.concatenate(([ctx.to_ms(plan.life.first_day)], ts))
    return np.sort(ts[alive(plan, ctx, ts)])


def restock_moments(
    plan: MemberPlan, ctx: SimContext, stretch: float, stop: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Sorted restock moments (the cycle × `stretch`) and whether each buys (x < `stop`)."""
    cfg, life = ctx.behaviour, plan.life
    n_days = (ctx.end_ms - ctx.start_ms) / MS_PER_DAY
    end = n_days if life.churn_day is None else min(n_days, life.churn_day)
    shape = cfg.cycle_shape
    scale = plan.tastes.cycle_days * stretch / shape  # gamma(shape, scale) has mean the cycle
    due = life.first_day + float(rng.random() * rng.gamma(shape, scale))  # a random phase
    days: list[float] = []
    while due < end:
        for pause in (life.lull, life.silence):
            if pause is not None and pause[0] <= due < pause[1]:
                due = pause[1] + cfg.catch_up * (due - pause[0])
        if due >= end:
            break
        days.append(due)
        due += float(rng.gamma(shape, scale))
    when = np.asarray(days, dtype=np.float64)
    day = np.searchsorted(ctx.day_start, when, side="right") - 1
    hours = hours_of_day(plan, len(day), cfg.off_rhythm, rng)
    moments = ctx.midnight_ms[day] + (hours * MS_PER_HOUR).astype(np.int64)
    buys = life.intensity(when) < stop
    keep = alive(plan, ctx, moments)
    order = np.argsort(moments[keep], kind="stable")
    return moments[keep][order], buys[keep][order]


def hours_of_day(
    plan: MemberPlan, n: int, off_rhythm: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Hours of day: around the preferred hour, some at any hour."""
    around = plan.tastes.preferred_hour + rng.normal(0.0, plan.tastes.hour_sd, n)
    anywhere = rng.uniform(0.0, HOURS_PER_DAY, n)
    return np.where(rng.random(n) < off_rhythm, anywhere, around) % HOURS_PER_DAY


def alive(plan: MemberPlan, ctx: SimContext, ts: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Inside the window and inside the member's active life (not silent, not churned)."""
    life = plan.life
    keep = (ts >= max(ctx.start_ms, ctx.to_ms(life.first_day))) & (ts < ctx.end_ms)
    if life.churn_day is not None:
        keep &= ts < ctx.to_ms(life.churn_day)
    if life.silence is not None:
        keep &= (ts < ctx.to_ms(life.silence[0])) | (ts >= ctx.to_ms(life.silence[1]))
    return keep


def place(
    starts: NDArray[np.int64], group: NDArray[np.int64], gaps: NDArray[np.int64], spacing: int
) -> NDArray[np.int64]:
    """Timestamps: each group (session, order) runs from its start by cumulative gaps; a
    group that would start before the previous one ended (+ spacing) is pushed later."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    edge = group[1:] != group[:-1]
    first, last = np.concatenate(([True], edge)), np.concatenate((edge, [True]))
    cumulative = np.cumsum(np.where(first, 0, gaps))
    offset = cumulative - np.repeat(cumulative[first], np.bincount(group))
    # e_k = max(s_k, e_(k-1) + d_(k-1)) unrolls to a running max of s_k - (d_0 + … + d_(k-1)).
    before = np.concatenate(([0], np.cumsum(offset[last] + spacing)[:-1]))
    pushed = np.maximum.accumulate(starts - before) + before
    ts: NDArray[np.int64] = pushed[group] + offset
    return ts
