"""What members do in full mode: sessions of browse → click → add_to_cart → purchase.

Sessions are browsing visits (a Poisson count per calendar day, rate × the member's
activity multiplier) and restock visits (the member's regular buying rhythm, see
`timing.py`). Restock visits buy; browsing visits buy on impulse now and then. Inside a
session the member views listings, clicks items (mostly following the neighbours of the
last item, weighed by the member's drifting taste, else fresh picks by affinity ×
popularity × taste, weighed by price; a restock visit often starts from an item bought
before), carts some
and buys the cart when the session is a buying one. A decline of intensity x shifts the
content: more browsing, fewer clicks, smaller baskets, cheaper items, drifted categories,
and no purchase at all once x reaches `buy_stop`. Purchase-only mode is `orders.py`.
Output is a columnar `MemberTrace`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_SECOND
from memberpulse.streams.simulate.archetypes import ONE_TIME
from memberpulse.streams.simulate.catalog import Catalog
from memberpulse.streams.simulate.context import (
    BEHAVIOUR_STREAM,
    K_BROWSE,
    K_CART,
    K_CLICK,
    K_PURCHASE,
    BehaviourConfig,
    MemberTrace,
    SimContext,
)
from memberpulse.streams.simulate.items import (
    TasteWalk,
    finish,
    first_item,
    fresh_picks,
    quantities,
)
from memberpulse.streams.simulate.members import MemberPlan
from memberpulse.streams.simulate.orders import order_trace
from memberpulse.streams.simulate.timing import (
    daily_activity,
    place,
    restock_moments,
    visit_moments,
)


def member_trace(plan: MemberPlan, ctx: SimContext) -> MemberTrace:
    """All events of one member inside the window, from (seed, index) alone."""
    rng = np.random.default_rng([ctx.seed, BEHAVIOUR_STREAM, plan.index])
    if ctx.purchase_only:
        return order_trace(plan, ctx, rng)
    return _session_trace(plan, ctx, rng)


def _session_trace(plan: MemberPlan, ctx: SimContext, rng: np.random.Generator) -> MemberTrace:
    cfg, tastes = ctx.behaviour, plan.tastes
    per_day = daily_activity(plan, ctx.members, ctx.day_start, ctx.weekend, ctx.promo)
    visits = visit_moments(plan, ctx, per_day, rng)
    restocks, restock_buys = restock_moments(plan, ctx, 1.0, cfg.buy_stop, rng)
    # Browsing visits and restock visits, one session list in time order.
    order = np.argsort(np.concatenate((visits, restocks)), kind="stable")
    starts = np.concatenate((visits, restocks))[order]
    is_restock = order >= len(visits)
    buys_if_restock = np.concatenate((np.zeros(len(visits), dtype=bool), restock_buys))[order]
    n = len(starts)
    x = plan.life.intensity((starts - ctx.start_ms) / MS_PER_DAY)
    promo = ctx.promo[(starts - ctx.midnight_ms[0]) // MS_PER_DAY]
    n_browse = 1 + rng.poisson(cfg.browse_extra + cfg.browse_decline * x)
    n_click = rng.poisson(tastes.click_mean * (1.0 - cfg.click_drop * x))
    keen = np.where(promo, 1.0 + cfg.promo_buy_per_boost * tastes.promo_boost, 1.0)
    impulse = (rng.random(n) < tastes.buy * keen) & (x < cfg.buy_stop)
    buying = np.where(is_restock, buys_if_restock, impulse)
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
    walk = TasteWalk(plan, ctx.catalog, ctx.members)
    level = walk.levels((starts - ctx.start_ms) / MS_PER_DAY)
    step_level = np.concatenate((np.repeat(level, n_browse), np.repeat(level, n_click)))
    repeat = np.where(is_restock, cfg.p_restock_repeat, cfg.p_repeat)
    layout = _Layout(
        n_browse.tolist(),
        n_click.tolist(),
        buying.tolist(),
        cart.tolist(),
        thrift.tolist(),
        level.tolist(),
        repeat.tolist(),
    )
    pool = fresh_picks(plan, ctx.catalog, walk, step_x, step_level, sensitivity, rng)
    steps = _walk(ctx.catalog, cfg, layout, walk, pool, rng)
    kind, item, quantity, session = steps.T
    gaps = rng.lognormal(math.log(cfg.gap_median_s * MS_PER_SECOND), cfg.gap_sigma, len(kind))
    gaps = np.maximum(np.where(kind == K_PURCHASE, cfg.checkout_factor, 1.0) * gaps, 1.0)
    spacing = int(cfg.session_spacing_s * MS_PER_SECOND)
    ts = place(starts, session, gaps.astype(np.int64), spacing)
    return finish(plan, ctx, ts, kind, item, quantity, session)


class _Layout(NamedTuple):
    """Per-session counts and chances that the item walk follows."""

    n_browse: list[int]
    n_click: list[int]
    buying: list[bool]
    cart: list[float]  # chance to cart a clicked item of the category's price level
    thrift: list[float]  # cart chance × (price / category level)^-thrift
    level: list[int]  # the member's taste drift level
    repeat: list[float]  # chance that the first listing is an item bought before


def _walk(
    catalog: Catalog,
    cfg: BehaviourConfig,
    layout: _Layout,
    walk: TasteWalk,
    pool: list[int],
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """The item chain as rows of (kind, item, quantity, session). Plain Python over
    lists: each step depends on the previous item, and numpy scalars cost ~10x more."""
    n_browse, n_click, buying, cart, thrift, levels, repeats = layout
    relative = catalog.relative_price_list
    uniforms = rng.random((len(pool), 3)).tolist()
    qty = quantities(len(pool), cfg, rng)
    out: list[tuple[int, int, int, int]] = []
    bought: list[int] = []
    b, c = 0, sum(n_browse)  # browse steps come first in the pool, then click steps
    for s in range(len(n_browse)):
        last, level = -1, levels[s]
        for _ in range(n_browse[s]):
            last = first_item(walk, level, bought, pool[b], uniforms[b], repeats[s], cfg)
            out.append((K_BROWSE, last, 1, s))
            b += 1
        basket: list[tuple[int, int]] = []
        clicked: list[int] = []
        for k in range(n_click[s]):
            u_mode, u_pick, u_cart = uniforms[c]
            if k == 0 and u_mode < cfg.click_shown:
                item = last
            elif k > 0 and u_mode < cfg.p_transition:
                item = walk.follow(last, level, u_pick)
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
