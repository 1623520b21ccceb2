"""What members do: sessions of browse → click → add_to_cart → purchase, or bare orders.

Full mode: a Poisson count of sessions per calendar day (rate × the member's activity
multiplier), each at an hour drawn around the member's preferred hour. Inside a session
the member views listings, clicks items (mostly following the transitions of the last
item, else fresh picks by affinity × popularity, weighed by price), carts some and buys
the cart when the session is a buying one. A decline of intensity x thins all of it and
shifts its content: more browsing, fewer clicks, smaller baskets, cheaper items, drifted
categories. Purchase-only mode: orders as a renewal process with lognormal (heavy-tailed)
gaps in the member's activity-scaled time. Output is a columnar `MemberTrace`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.contract import ADD_TO_CART, BROWSE, CLICK, EVENT_TYPES, PURCHASE
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate.catalog import Catalog
from memberpulse.streams.simulate.members import (
    NEW,
    ONE_TIME,
    MemberConfig,
    MemberPlan,
    daily_activity,
)

BEHAVIOUR_STREAM = 2
MS_PER_HOUR = 3_600_000
MS_PER_SECOND = 1_000
HOURS_PER_DAY = 24
# Event kinds are indexes into the contract's EVENT_TYPES (the feature schema's order).
K_CLICK, K_BROWSE = EVENT_TYPES.index(CLICK), EVENT_TYPES.index(BROWSE)
K_PURCHASE, K_CART = EVENT_TYPES.index(PURCHASE), EVENT_TYPES.index(ADD_TO_CART)


@dataclass(frozen=True)
class BehaviourConfig:
    """Session, order and timing parameters (x is a member's decline intensity, 0..1)."""

    browse_extra: float = 0.6  # Poisson listing views per session beyond the first
    browse_decline: float = 2.0  # + this × x: browsing without buying grows
    click_drop: float = 0.6  # clicks × (1 - drop · x)
    buy_drop: float = 0.6  # buying-session chance × (1 - drop · x)
    cart_drop: float = 0.5  # cart chance and extra order lines × (1 - drop · x)
    decline_sensitivity: float = 3.0  # price sensitivity + this × x: cheaper items
    abandoned_cart: float = 0.25  # cart chance in sessions that do not buy, relative
    cart_thrift: float = 0.5  # × (price sensitivity + decline): dear items carted less
    click_shown: float = 0.7  # the first click is the last listed item
    p_transition: float = 0.65  # next click follows the last item's transitions
    p_carry: float = 0.4  # a listing view follows the last purchase's transitions
    p_repeat: float = 0.08  # a fresh pick is an item bought before
    off_rhythm: float = 0.1  # sessions at a uniform hour instead of the member's own
    gap_median_s: float = 25.0  # lognormal seconds between events of a session
    gap_sigma: float = 0.9
    checkout_factor: float = 3.0  # purchases come after a longer gap
    session_spacing_s: float = 300.0  # sessions of one member never overlap
    multi_quantity: float = 0.12  # share of cart lines with quantity > 1
    extra_quantity: float = 0.6  # geometric p of the extra units
    promo_day_prob: float = 0.06  # ~2 promotion days a month, shared by all members
    promo_discount: float = 0.2
    promo_buy_per_boost: float = 0.2  # buying chance × (1 + this × promo_boost) on promos
    order_rate_factor: float = 0.2  # purchase-only: orders/day = rate × buy × this
    order_gap_sigma: float = 1.6  # lognormal σ of order gaps (mean 1 in activity time)
    order_extra_lines: float = 0.5  # Poisson extra lines per order


@dataclass(frozen=True, eq=False)
class SimContext:
    """Everything shared by all members of one simulation."""

    seed: int
    start_ms: int
    end_ms: int
    purchase_only: bool
    catalog: Catalog
    members: MemberConfig
    behaviour: BehaviourConfig
    midnight_ms: NDArray[np.int64]  # the calendar days touching the window
    day_start: NDArray[np.float64]  # their midnights in window days
    weekend: NDArray[np.bool_]
    promo: NDArray[np.bool_]

    def to_ms(self, day: float) -> int:
        """Window day (float) → epoch ms."""
        return self.start_ms + round(day * MS_PER_DAY)


@dataclass(frozen=True, eq=False)
class MemberTrace:
    """One member's events as columns, sorted by strictly increasing ts."""

    ts: NDArray[np.int64]
    kind: NDArray[np.int8]  # index into EVENT_TYPES
    item: NDArray[np.int32]
    price: NDArray[np.float64]  # unit price in cents precision
    quantity: NDArray[np.int32]
    session: NDArray[np.int32]  # session (or order) number of the member

    def __len__(self) -> int:
        return len(self.ts)


def member_trace(plan: MemberPlan, ctx: SimContext) -> MemberTrace:
    """All events of one member inside the window, from (seed, index) alone."""
    rng = np.random.default_rng([ctx.seed, BEHAVIOUR_STREAM, plan.index])
    per_day = daily_activity(plan, ctx.members, ctx.day_start, ctx.weekend, ctx.promo)
    if ctx.purchase_only:
        return _order_trace(plan, ctx, per_day, rng)
    return _session_trace(plan, ctx, per_day, rng)


def _session_trace(
    plan: MemberPlan, ctx: SimContext, per_day: NDArray[np.float64], rng: np.random.Generator
) -> MemberTrace:
    cfg, tastes = ctx.behaviour, plan.tastes
    starts = _moments(plan, ctx, per_day, rng)
    n = len(starts)
    x = plan.life.intensity((starts - ctx.start_ms) / MS_PER_DAY)
    promo = ctx.promo[(starts - ctx.midnight_ms[0]) // MS_PER_DAY]
    n_browse = 1 + rng.poisson(cfg.browse_extra + cfg.browse_decline * x)
    n_click = rng.poisson(tastes.click_mean * (1.0 - cfg.click_drop * x))
    keen = np.where(promo, 1.0 + cfg.promo_buy_per_boost * tastes.promo_boost, 1.0)
    buying = rng.random(n) < tastes.buy * (1.0 - cfg.buy_drop * x) * keen
    if plan.archetype == ONE_TIME and n:
        buying = np.arange(n) == rng.integers(n)  # exactly one purchase in its life
    n_click = np.where(buying, np.maximum(n_click, 1), n_click)
    cart = tastes.cart * (1.0 - cfg.cart_drop * x) * np.where(buying, 1.0, cfg.abandoned_cart)
    thrift = cfg.cart_thrift * (tastes.price_sensitivity + cfg.decline_sensitivity * x)
    # Listings are picked by taste alone; clicks also weigh price (more so in a decline).
    click_x = np.repeat(x, n_click)
    step_x = np.concatenate((np.repeat(x, n_browse), click_x))
    click_sensitivity = tastes.price_sensitivity + cfg.decline_sensitivity * click_x
    sensitivity = np.concatenate((np.zeros(n_browse.sum()), click_sensitivity))
    layout = _Layout(
        n_browse.tolist(), n_click.tolist(), buying.tolist(), cart.tolist(), thrift.tolist()
    )
    steps = _walk(
        ctx.catalog, cfg, layout, _fresh(plan, ctx.catalog, step_x, sensitivity, rng), rng
    )
    kind, item, quantity, session = steps.T
    gaps = rng.lognormal(math.log(cfg.gap_median_s * MS_PER_SECOND), cfg.gap_sigma, len(kind))
    gaps = np.maximum(np.where(kind == K_PURCHASE, cfg.checkout_factor, 1.0) * gaps, 1.0)
    spacing = int(cfg.session_spacing_s * MS_PER_SECOND)
    ts = _place(starts, session, gaps.astype(np.int64), spacing)
    return _finish(plan, ctx, ts, kind, item, quantity, session)


class _Layout(NamedTuple):
    """Per-session counts and chances that the item walk follows."""

    n_browse: list[int]
    n_click: list[int]
    buying: list[bool]
    cart: list[float]  # chance to cart a clicked item of the category's price level
    thrift: list[float]  # cart chance × (price / category level)^-thrift


def _walk(
    catalog: Catalog,
    cfg: BehaviourConfig,
    layout: _Layout,
    pool: list[int],
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """The item chain as rows of (kind, item, quantity, session). Plain Python over
    lists: each step depends on the previous item, and numpy scalars cost ~10x more."""
    rows, cdfs = catalog.transition_rows, catalog.transition_cdf_rows
    n_browse, n_click, buying, cart, thrift = layout
    relative = catalog.relative_price_list
    uniforms = rng.random((len(pool), 3)).tolist()
    qty = _quantities(len(pool), cfg, rng)
    out: list[tuple[int, int, int, int]] = []
    bought: list[int] = []
    b, c = 0, sum(n_browse)  # browse steps come first in the pool, then click steps
    for s in range(len(n_browse)):
        last = -1
        for _ in range(n_browse[s]):
            last = _pick(rows, cdfs, bought, pool[b], uniforms[b], cfg)
            out.append((K_BROWSE, last, 1, s))
            b += 1
        basket: list[tuple[int, int]] = []
        clicked: list[int] = []
        for k in range(n_click[s]):
            u_mode, u_pick, u_cart = uniforms[c]
            if k == 0 and u_mode < cfg.click_shown:
                item = last
            elif k > 0 and u_mode < cfg.p_transition:
                item = rows[last][bisect_right(cdfs[last], u_pick)]
            else:
                item = pool[c]
            out.append((K_CLICK, item, 1, s))
            clicked.append(item)
            if u_cart < cart[s] * relative[item] ** -thrift[s]:
                out.append((K_CART, item, qty[c], s))
                basket.append((item, qty[c]))
            last, c = item, c + 1
        if buying[s]:
            if not basket:  # came to buy, carted nothing: takes the cheapest it saw
                cheapest = min(clicked, key=relative.__getitem__)
                out.append((K_CART, cheapest, 1, s))
                basket.append((cheapest, 1))
            out.extend((K_PURCHASE, it, q, s) for it, q in basket)
            bought.extend(it for it, _ in basket)
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def _pick(
    rows: list[list[int]],
    cdfs: list[list[float]],
    bought: list[int],
    fresh: int,
    u: list[float],
    cfg: BehaviourConfig,
) -> int:
    """A first item: follows the last purchase, repeats an old one, or is fresh."""
    if bought and u[0] < cfg.p_carry:
        prev = bought[-1]
        return rows[prev][bisect_right(cdfs[prev], u[1])]
    if bought and u[0] > 1.0 - cfg.p_repeat:
        return bought[int(u[1] * len(bought))]
    return fresh


def _place(
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


def _finish(
    plan: MemberPlan,
    ctx: SimContext,
    ts: NDArray[np.int64],
    kind: NDArray[np.int64],
    item: NDArray[np.int64],
    quantity: NDArray[np.int64],
    session: NDArray[np.int64],
) -> MemberTrace:
    """Drop what spilled out of the window or the member's life; price on the day."""
    keep = _alive(plan, ctx, ts)
    ts, item = ts[keep], item[keep]
    on_promo = ctx.promo[(ts - ctx.midnight_ms[0]) // MS_PER_DAY]
    factor = np.where(on_promo, 1.0 - ctx.behaviour.promo_discount, 1.0)
    price = np.maximum(np.round(ctx.catalog.price[item] * factor, 2), 0.01)
    return MemberTrace(
        ts=ts,
        kind=kind[keep].astype(np.int8),
        item=item.astype(np.int32),
        price=price,
        quantity=quantity[keep].astype(np.int32),
        session=session[keep].astype(np.int32),
    )


def _order_trace(
    plan: MemberPlan, ctx: SimContext, per_day: NDArray[np.float64], rng: np.random.Generator
) -> MemberTrace:
    """Purchase-only: orders at renewal times with heavy-tailed gaps, 1+ lines each."""
    cfg, tastes = ctx.behaviour, plan.tastes
    orders_per_day = per_day * tastes.buy * cfg.order_rate_factor
    clock = np.concatenate(([0.0], np.cumsum(orders_per_day)))  # activity time at each midnight
    sigma = cfg.order_gap_sigma
    span = clock[-1]
    arrivals: list[float] = []
    position = float(rng.random() * rng.lognormal(-(sigma**2) / 2, sigma))
    while position < span:  # a stationary-ish renewal start, then mean-1 gaps
        arrivals.append(position)
        position += float(rng.lognormal(-(sigma**2) / 2, sigma))
    day = np.searchsorted(clock, np.asarray(arrivals), side="right") - 1
    hours = _hours(plan, len(day), cfg.off_rhythm, rng)
    moments = ctx.midnight_ms[day] + (hours * MS_PER_HOUR).astype(np.int64)
    if plan.archetype in (NEW, ONE_TIME):
        first = np.array([ctx.to_ms(plan.life.first_day)], dtype=np.int64)
        moments = first if plan.archetype == ONE_TIME else np.concatenate((first, moments))
    starts = np.sort(moments[_alive(plan, ctx, moments)])
    x = plan.life.intensity((starts - ctx.start_ms) / MS_PER_DAY)
    lines = 1 + rng.poisson(cfg.order_extra_lines * (1.0 - cfg.cart_drop * x))
    line_x = np.repeat(x, lines)
    sensitivity = tastes.price_sensitivity + cfg.decline_sensitivity * line_x
    pool = _fresh(plan, ctx.catalog, line_x, sensitivity, rng)
    item, order = _order_items(ctx.catalog, cfg, lines.tolist(), pool, rng)
    quantity = np.asarray(_quantities(len(item), cfg, rng), dtype=np.int64)
    ts = _place(starts, order, np.ones(len(item), dtype=np.int64), 1)
    kind = np.full(len(item), K_PURCHASE, dtype=np.int64)
    return _finish(plan, ctx, ts, kind, item, quantity, order)


def _order_items(
    catalog: Catalog,
    cfg: BehaviourConfig,
    lines: list[int],
    pool: list[int],
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Order lines: the first follows the last purchase (or repeats one, or is fresh),
    the next ones follow the previous line's transitions."""
    rows, cdfs = catalog.transition_rows, catalog.transition_cdf_rows
    u = rng.random((len(pool), 2)).tolist()
    items: list[int] = []
    orders: list[int] = []
    bought: list[int] = []
    k = 0
    for o, n_lines in enumerate(lines):
        last = _pick(rows, cdfs, bought, pool[k], u[k], cfg)
        items.append(last)
        for j in range(k + 1, k + n_lines):
            if u[j][0] < cfg.p_transition:
                last = rows[last][bisect_right(cdfs[last], u[j][1])]
            else:
                last = pool[j]
            items.append(last)
        orders.extend([o] * n_lines)
        bought.extend(items[k : k + n_lines])
        k += n_lines
    return np.asarray(items, dtype=np.int64), np.asarray(orders, dtype=np.int64)


def _hours(
    plan: MemberPlan, n: int, off_rhythm: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Hours of day: around the preferred hour, some at any hour."""
    around = plan.tastes.preferred_hour + rng.normal(0.0, plan.tastes.hour_sd, n)
    anywhere = rng.uniform(0.0, HOURS_PER_DAY, n)
    return np.where(rng.random(n) < off_rhythm, anywhere, around) % HOURS_PER_DAY


def _alive(plan: MemberPlan, ctx: SimContext, ts: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Inside the window and inside the member's active life (not silent, not churned)."""
    life = plan.life
    keep = (ts >= max(ctx.start_ms, ctx.to_ms(life.first_day))) & (ts < ctx.end_ms)
    if life.churn_day is not None:
        keep &= ts < ctx.to_ms(life.churn_day)
    if life.silence is not None:
        keep &= (ts < ctx.to_ms(life.silence[0])) | (ts >= ctx.to_ms(life.silence[1]))
    return keep


def _moments(
    plan: MemberPlan, ctx: SimContext, per_day: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.int64]:
    """Sorted start moments: a Poisson count per calendar day at diurnal hours; members
    first seen in the window get a session at their first moment."""
    day = np.repeat(np.arange(len(per_day)), rng.poisson(per_day))
    hours = _hours(plan, len(day), ctx.behaviour.off_rhythm, rng)
    ts = ctx.midnight_ms[day] + (hours * MS_PER_HOUR).astype(np.int64)
    if plan.archetype in (NEW, ONE_TIME):
        ts = np.concatenate(([ctx.to_ms(plan.life.first_day)], ts))
    return np.sort(ts[_alive(plan, ctx, ts)])


def _fresh(
    plan: MemberPlan,
    catalog: Catalog,
    x: NDArray[np.float64],
    sensitivity: NDArray[np.float64],
    rng: np.random.Generator,
) -> list[int]:
    """Fresh picks by affinity × popularity; with chance x by the drifted tastes."""
    u = rng.random(len(x))
    usual = plan.tastes.affinity_cdf.searchsorted(u, side="right")
    drifted = plan.tastes.drift_cdf.searchsorted(u, side="right")
    top = len(plan.tastes.affinity_cdf) - 1
    categories = np.minimum(np.where(rng.random(len(x)) < x, drifted, usual), top)
    picks: list[int] = catalog.sample_items(rng, categories, sensitivity).tolist()
    return picks


def _quantities(n: int, cfg: BehaviourConfig, rng: np.random.Generator) -> list[int]:
    """Units per cart line: mostly 1, sometimes 2 or more."""
    extra = rng.geometric(cfg.extra_quantity, n)
    units: list[int] = np.where(rng.random(n) < cfg.multi_quantity, 1 + extra, 1).tolist()
    return units
