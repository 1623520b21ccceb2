"""What every member's events share: the behaviour knobs, the window's calendar and the
columnar `MemberTrace` a member's events are built into.

`BehaviourConfig` holds the session, restock and order parameters; `SimContext` the
settings and calendar (weekends, promotion days) of one simulation. Event kinds are
indexes into the contract's EVENT_TYPES (the feature schema's order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.contract import ADD_TO_CART, BROWSE, CLICK, EVENT_TYPES, PURCHASE
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate.archetypes import MemberConfig
from memberpulse.streams.simulate.catalog import Catalog

BEHAVIOUR_STREAM = 2
K_CLICK, K_BROWSE = EVENT_TYPES.index(CLICK), EVENT_TYPES.index(BROWSE)
K_PURCHASE, K_CART = EVENT_TYPES.index(PURCHASE), EVENT_TYPES.index(ADD_TO_CART)


@dataclass(frozen=True)
class BehaviourConfig:
    """Session, order and timing parameters (x is a member's decline intensity, 0..1)."""

    browse_extra: float = 0.6  # Poisson listing views per session beyond the first
    browse_decline: float = 3.5  # + this × x: browsing without buying grows
    click_drop: float = 0.75  # clicks × (1 - drop · x)
    buy_stop: float = 0.6  # no purchase once x reaches this: visits go on, buying stops
    cycle_shape: float = 6.0  # gamma shape of restock gaps: regular (CV 0.41), not Poisson
    catch_up: float = 0.1  # a restock due in a lull or silence comes this × its delay after
    cart_drop: float = 0.5  # cart chance and extra order lines × (1 - drop · x)
    decline_sensitivity: float = 5.0  # price sensitivity + this × x: cheaper items
    abandoned_cart: float = 0.25  # cart chance in sessions that do not buy, relative
    cart_thrift: float = 0.5  # × (price sensitivity + decline): dear items carted less
    click_shown: float = 0.7  # the first click is the last listed item
    p_transition: float = 0.65  # next click follows the last item's neighbours
    p_carry: float = 0.4  # a listing view follows the last purchase's neighbours
    p_repeat: float = 0.08  # a fresh pick is an item bought before
    p_restock_repeat: float = 0.35  # the same in a restock visit: members rebuy staples
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
    # Purchase-only: an order log is sparser than the sessions behind it; orders follow
    # the member's restock rhythm stretched by this factor × lognormal(0, order_cycle_sigma).
    order_cycle_factor: float = 2.0
    order_cycle_sigma: float = 1.0  # extra lognormal spread of order rhythms: heavy tails
    order_stop: float = 0.9  # purchase-only: orders stop at this x (sparse logs need them late)
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
