"""Purchase-only mode: an order log. Orders follow the member's restock rhythm, stretched
(an order log is sparser than the sessions behind it) and spread wider across members
(heavy tails); each order has 1 + Poisson lines, the first following the last purchase
(or rebuying one), the next ones the previous line's neighbours, weighed by the member's
taste. A decline shrinks and cheapens orders, drifts their categories, and stops them at
x >= `order_stop`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate.archetypes import NEW, ONE_TIME
from memberpulse.streams.simulate.context import (
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
from memberpulse.streams.simulate.timing import alive, place, restock_moments


def order_trace(plan: MemberPlan, ctx: SimContext, rng: np.random.Generator) -> MemberTrace:
    """Purchase-only: orders on the member's stretched restock rhythm, 1+ lines each."""
    cfg, tastes = ctx.behaviour, plan.tastes
    stretch = cfg.order_cycle_factor * float(rng.lognormal(0.0, cfg.order_cycle_sigma))
    restocks, buys = restock_moments(plan, ctx, stretch, cfg.order_stop, rng)
    moments = restocks[buys]
    if plan.archetype in (NEW, ONE_TIME):
        first = np.array([ctx.to_ms(plan.life.first_day)], dtype=np.int64)
        moments = first if plan.archetype == ONE_TIME else np.concatenate((first, moments))
    starts = np.sort(moments[alive(plan, ctx, moments)])
    x = plan.life.intensity((starts - ctx.start_ms) / MS_PER_DAY)
    lines = 1 + rng.poisson(cfg.order_extra_lines * (1.0 - cfg.cart_drop * x))
    line_x = np.repeat(x, lines)
    sensitivity = tastes.price_sensitivity + cfg.decline_sensitivity * line_x
    walk = TasteWalk(plan, ctx.catalog, ctx.members)
    level = walk.levels((starts - ctx.start_ms) / MS_PER_DAY)
    line_level = np.repeat(level, lines)
    pool = fresh_picks(plan, ctx.catalog, walk, line_x, line_level, sensitivity, rng)
    item, order = _order_items(walk, cfg, lines.tolist(), level.tolist(), pool, rng)
    quantity = np.asarray(quantities(len(item), cfg, rng), dtype=np.int64)
    ts = place(starts, order, np.ones(len(item), dtype=np.int64), 1)
    kind = np.full(len(item), K_PURCHASE, dtype=np.int64)
    return finish(plan, ctx, ts, kind, item, quantity, order)


def _order_items(
    walk: TasteWalk,
    cfg: BehaviourConfig,
    lines: list[int],
    levels: list[int],
    pool: list[int],
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Order lines: the first follows the last purchase (or repeats one, or is fresh),
    the next ones follow the previous line's neighbours, weighed by the member's taste."""
    u = rng.random((len(pool), 2)).tolist()
    items: list[int] = []
    orders: list[int] = []
    bought: list[int] = []
    k = 0
    for o, n_lines in enumerate(lines):
        level = levels[o]
        last = first_item(walk, level, bought, pool[k], u[k], cfg.p_restock_repeat, cfg)
        items.append(last)
        for j in range(k + 1, k + n_lines):
            follows = u[j][0] < cfg.p_transition
            last = walk.follow(last, level, u[j][1]) if follows else pool[j]
            items.append(last)
        orders.extend([o] * n_lines)
        bought.extend(items[k : k + n_lines])
        k += n_lines
    return np.asarray(items, dtype=np.int64), np.asarray(orders, dtype=np.int64)
