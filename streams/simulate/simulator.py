"""The simulator's front: `SimConfig`, `Simulator` and per-member `GroundTruth`.

A member's events depend on (seed, member index) and the window only, so members are
generated one at a time and merged by timestamp: `iter_events` holds each member's events
as compact columns (~30 bytes per event) and builds `Event` tuples only as they stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final

import numpy as np

from memberpulse.models.contract import EVENT_TYPES, PURCHASE, Event
from memberpulse.models.timeutil import MS_PER_DAY, parse_ts
from memberpulse.streams.simulate.archetypes import ArchetypeMix, MemberConfig
from memberpulse.streams.simulate.behaviour import member_trace
from memberpulse.streams.simulate.catalog import Catalog, CatalogConfig, build_catalog
from memberpulse.streams.simulate.context import BehaviourConfig, MemberTrace, SimContext
from memberpulse.streams.simulate.members import MemberPlan, draw_plan

#: The reference end of the default window (exclusive).
DEFAULT_END: Final = "2026-10-01T00:00:00Z"
DEFAULT_END_MS: Final = parse_ts(DEFAULT_END)
_TS: Final = itemgetter(4)  # Event.ts, as a C-level key for heapq.merge
_K_PURCHASE: Final = EVENT_TYPES.index(PURCHASE)
PROMO_STREAM: Final = 3
STREAM_SLICE: Final = 16


@dataclass(frozen=True)
class SimConfig:
    """One simulation: who, how long, which seed, and the model's knobs."""

    members: int = 20_000
    days: int = 120
    seed: int = 0
    end_ms: int = DEFAULT_END_MS  # the window is [end_ms - days, end_ms)
    purchase_only: bool = False  # emit only purchases, like an order log
    mixture: ArchetypeMix = field(default_factory=ArchetypeMix)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    population: MemberConfig = field(default_factory=MemberConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)

    def __post_init__(self) -> None:
        if self.members < 1 or self.days < 1:
            raise ValueError(f"members and days must be >= 1, got {self.members}, {self.days}")

    @property
    def start_ms(self) -> int:
        """Inclusive start of the window."""
        return self.end_ms - self.days * MS_PER_DAY


@dataclass(frozen=True)
class GroundTruth:
    """What was true of a member (epoch ms; None where it did not happen)."""

    member_id: str
    archetype: str
    first_ts: int | None  # first event in the window; None if the member emitted nothing
    churn_ts: int | None  # silent for good from here (may lie after the window)
    reactivation_ts: int | None  # dormant_reactivated: back after a long silence
    silence_ts: int | None  # dormant_reactivated: start of the silence
    decline_start_ts: int | None  # precursors start (churners, and some who recover)
    decline_end_ts: int | None  # the decline faded without churn (None: ran into churn)
    lull_start_ts: int | None  # a temporary lull (vacation) that is not churn
    lull_end_ts: int | None
    sessions_per_day: float  # base rate before multipliers
    purchase_propensity: float
    price_sensitivity: float
    preferred_hour: float
    n_events: int
    n_purchases: int


class Simulator:
    """Deterministic synthetic member events for `config`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.catalog: Catalog = build_catalog(config.catalog, config.seed)
        self.context: SimContext = make_context(config, self.catalog)
        categories = self.catalog.category_ids
        self._item_category_ids = [categories[c] for c in self.catalog.item_category.tolist()]

    def plan(self, index: int) -> MemberPlan:
        """Member `index`'s parameters and dated life."""
        if not 0 <= index < self.config.members:
            raise ValueError(f"member index must be in [0, {self.config.members}), got {index}")
        cfg = self.config
        return draw_plan(index, cfg.seed, cfg.days, cfg.population, cfg.mixture, self.catalog)

    def trace(self, index: int) -> MemberTrace:
        """Member `index`'s events as columns."""
        return member_trace(self.plan(index), self.context)

    def members(self) -> Iterator[tuple[MemberPlan, MemberTrace]]:
        """Every member's plan and events as columns, in member order."""
        for index in range(self.config.members):
            plan = self.plan(index)
            yield plan, member_trace(plan, self.context)

    def iter_member_events(self, index: int) -> list[Event]:
        """One member's events over the window, sorted by ts."""
        plan = self.plan(index)
        trace = member_trace(plan, self.context)
        return self._events(plan.member_id, trace, 0, len(trace))

    def iter_events(
        self, start_ms: int | None = None, end_ms: int | None = None
    ) -> Iterator[Event]:
        """All members' events in [start_ms, end_ms) ∩ window, in global ts order.

        Lazy: nothing runs before the first event is asked for; then every member's
        events are generated as columns and turned into `Event`s only as they stream.
        """
        lo = self.config.start_ms if start_ms is None else max(start_ms, self.config.start_ms)
        hi = self.config.end_ms if end_ms is None else min(end_ms, self.config.end_ms)
        if hi < lo:
            raise ValueError(f"end_ms must be >= start_ms, got [{start_ms}, {end_ms})")
        streams = [self._member_stream(i, lo, hi) for i in range(self.config.members)]
        # Ties across members go to the lower member index (merge is stable), like files.py.
        return heapq.merge(*streams, key=_TS)

    def truth(self) -> list[GroundTruth]:
        """Per-member ground truth, in member order."""
        return [ground_truth(plan, trace, self.context) for plan, trace in self.members()]

    def _member_stream(self, index: int, lo: int, hi: int) -> Iterator[Event]:
        plan = self.plan(index)
        trace = member_trace(plan, self.context)
        first, stop = (int(i) for i in trace.ts.searchsorted([lo, hi]))
        # Small slices: heapq.merge holds one pending slice per member, so Event objects
        # in memory stay ~members × STREAM_SLICE instead of every event of the window.
        for a in range(first, stop, STREAM_SLICE):
            yield from self._events(plan.member_id, trace, a, min(a + STREAM_SLICE, stop))

    def _events(self, member: str, trace: MemberTrace, a: int, b: int) -> list[Event]:
        """`Event`s of trace rows [a, b); ids count from the member's first event."""
        item_ids, categories = self.catalog.item_ids, self._item_category_ids
        return [
            Event(f"{member}-{n}", member, EVENT_TYPES[k], item_ids[i], t, categories[i], p, q,
                  f"{member}-s{s}")
            for n, k, i, t, p, q, s in zip(
                range(a, b), trace.kind[a:b].tolist(), trace.item[a:b].tolist(),
                trace.ts[a:b].tolist(), trace.price[a:b].tolist(),
                trace.quantity[a:b].tolist(), trace.session[a:b].tolist(), strict=True,
            )
        ]  # fmt: skip


def make_context(config: SimConfig, catalog: Catalog) -> SimContext:
    """The window's calendar (weekends, promotion days) and the shared settings."""
    start_ms, end_ms = config.start_ms, config.end_ms
    days = np.arange(start_ms // MS_PER_DAY, (end_ms - 1) // MS_PER_DAY + 1, dtype=np.int64)
    # Promotion days hang on the calendar date, so overlapping windows agree on them.
    draws = [np.random.default_rng([config.seed, PROMO_STREAM, d]).random() for d in days.tolist()]
    return SimContext(
        seed=config.seed,
        start_ms=start_ms,
        end_ms=end_ms,
        purchase_only=config.purchase_only,
        catalog=catalog,
        members=config.population,
        behaviour=config.behaviour,
        midnight_ms=days * MS_PER_DAY,
        day_start=(days * MS_PER_DAY - start_ms) / MS_PER_DAY,
        weekend=(days + 3) % 7 >= 5,  # 1970-01-01 was a Thursday; Monday is 0
        promo=np.asarray(draws) < config.behaviour.promo_day_prob,
    )


def ground_truth(plan: MemberPlan, trace: MemberTrace, ctx: SimContext) -> GroundTruth:
    """The truth of one member from its plan and its events."""
    life, tastes = plan.life, plan.tastes

    def moment(day: float | None) -> int | None:
        return None if day is None else ctx.to_ms(day)

    return GroundTruth(
        member_id=plan.member_id,
        archetype=plan.archetype,
        first_ts=int(trace.ts[0]) if len(trace) else None,
        churn_ts=moment(life.churn_day),
        reactivation_ts=moment(life.silence[1] if life.silence else None),
        silence_ts=moment(life.silence[0] if life.silence else None),
        decline_start_ts=moment(life.decline.start if life.decline else None),
        decline_end_ts=moment(life.decline.end if life.decline else None),
        lull_start_ts=moment(life.lull[0] if life.lull else None),
        lull_end_ts=moment(life.lull[1] if life.lull else None),
        sessions_per_day=tastes.rate,
        purchase_propensity=tastes.buy,
        price_sensitivity=tastes.price_sensitivity,
        preferred_hour=tastes.preferred_hour,
        n_events=len(trace),
        n_purchases=int((trace.kind == _K_PURCHASE).sum()),
    )
