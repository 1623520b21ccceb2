"""What members pick and pay: fresh picks by taste and price, the first item of a session
or order, units per line, and the day's price of each event.

A fresh pick chooses a category by the member's affinity (by its drifted affinity with
chance x, the decline intensity), then an item there by popularity, cheaper candidates
favoured by (price / category level)^-sensitivity.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate.catalog import Catalog
from memberpulse.streams.simulate.context import BehaviourConfig, MemberTrace, SimContext
from memberpulse.streams.simulate.members import MemberPlan
from memberpulse.streams.simulate.timing import alive


def fresh_picks(
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


def first_item(
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


def quantities(n: int, cfg: BehaviourConfig, rng: np.random.Generator) -> list[int]:
    """Units per cart line: mostly 1, sometimes 2 or more."""
    extra = rng.geometric(cfg.extra_quantity, n)
    units: list[int] = np.where(rng.random(n) < cfg.multi_quantity, 1 + extra, 1).tolist()
    return units


def finish(
    plan: MemberPlan,
    ctx: SimContext,
    ts: NDArray[np.int64],
    kind: NDArray[np.int64],
    item: NDArray[np.int64],
    quantity: NDArray[np.int64],
    session: NDArray[np.int64],
) -> MemberTrace:
    """Drop what spilled out of the window or the member's life; price on the day."""
    keep = alive(plan, ctx, ts)
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
