"""What members pick and pay: fresh picks by taste and price, the walk from an item to
its neighbours, the first item of a session or order, units per line, and the day's price
of each event.

A fresh pick chooses a category by the member's affinity (by its drifted affinity with
chance x, the decline intensity), then candidates there by popularity, one of which wins
with weight (price / category level)^-sensitivity × exp(sharpness × cosine(taste, item)).
A step from an item picks one of its neighbours with the catalog's base weight × the same
taste factor (`TasteWalk`). The taste drifts over the member's life, so what it picked
weeks ago says something, not everything, about what it picks now.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate.archetypes import MemberConfig
from memberpulse.streams.simulate.catalog import Catalog
from memberpulse.streams.simulate.context import BehaviourConfig, MemberTrace, SimContext
from memberpulse.streams.simulate.members import MemberPlan
from memberpulse.streams.simulate.timing import alive


class TasteWalk:
    """One member's taste over the catalog: log-weights per item at each drift level, and
    steps from an item to one of its neighbours weighed by them."""

    def __init__(self, plan: MemberPlan, catalog: Catalog, config: MemberConfig) -> None:
        tastes, levels = plan.tastes, config.taste_levels
        start = config.taste_sharpness * (catalog.latent @ tastes.taste_start)
        end = config.taste_sharpness * (catalog.latent @ tastes.taste_end)
        share = np.linspace(0.0, 1.0, levels)[:, None]
        #: (levels, n_items): the log-weight taste adds to an item at each drift level.
        self.scores: NDArray[np.float64] = (1.0 - share) * start + share * end
        self._plan, self._levels, self._n = plan, levels, catalog.n_items
        self._rows = catalog.neighbour_rows
        self._neighbours, self._log_weight = catalog.neighbours, catalog.neighbour_log_weight
        self._cdfs: dict[int, list[float]] = {}

    def levels(self, day: NDArray[np.float64]) -> NDArray[np.int64]:
        """The drift level on each window day."""
        return self._plan.tastes.taste_level(day, self._levels)

    def follow(self, item: int, level: int, u: float) -> int:
        """The neighbour of `item` that the uniform `u` picks at drift `level`."""
        key = level * self._n + item
        cdf = self._cdfs.get(key)
        if cdf is None:  # a member meets ~10² (level, item) pairs: cache their rows
            log_weight = self._log_weight[item] + self.scores[level, self._neighbours[item]]
            weight = np.cumsum(np.exp(log_weight - log_weight.max()))
            cdf = (weight / weight[-1]).tolist()
            cdf[-1] = 1.0
            self._cdfs[key] = cdf
        return self._rows[item][bisect_right(cdf, u)]


def fresh_picks(
    plan: MemberPlan,
    catalog: Catalog,
    walk: TasteWalk,
    x: NDArray[np.float64],
    level: NDArray[np.int64],
    sensitivity: NDArray[np.float64],
    rng: np.random.Generator,
) -> list[int]:
    """Fresh picks by affinity × popularity × taste; with chance x the category comes
    from the drifted affinity."""
    u = rng.random(len(x))
    usual = plan.tastes.affinity_cdf.searchsorted(u, side="right")
    drifted = plan.tastes.drift_cdf.searchsorted(u, side="right")
    top = len(plan.tastes.affinity_cdf) - 1
    categories = np.minimum(np.where(rng.random(len(x)) < x, drifted, usual), top)
    chosen = catalog.sample_items(rng, categories, sensitivity, (walk.scores, level))
    picks: list[int] = chosen.tolist()
    return picks


def first_item(
    walk: TasteWalk,
    level: int,
    bought: list[int],
    fresh: int,
    u: list[float],
    p_repeat: float,
    cfg: BehaviourConfig,
) -> int:
    """A first item: follows the last purchase, repeats an old one (chance `p_repeat`),
    or is fresh."""
    if bought and u[0] < cfg.p_carry:
        return walk.follow(bought[-1], level, u[1])
    if bought and u[0] > 1.0 - p_repeat:
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
