"""Synthetic member events with learnable structure: the data MemberPulse trains, tests
and demos on. See SIMULATOR.md for the model (archetypes, transitions, churn precursors).

>>> sim = Simulator(SimConfig(members=3, days=7))
>>> events = list(sim.iter_events())
>>> all(a.ts <= b.ts for a, b in zip(events, events[1:]))
True
"""

from memberpulse.streams.simulate.archetypes import (
    ARCHETYPES,
    BARGAIN_HUNTER,
    DECLINING,
    DORMANT_REACTIVATED,
    LOYAL,
    NEW,
    ONE_TIME,
    ArchetypeMix,
    MemberConfig,
    Traits,
)
from memberpulse.streams.simulate.catalog import Catalog, CatalogConfig, build_catalog
from memberpulse.streams.simulate.context import BehaviourConfig, MemberTrace
from memberpulse.streams.simulate.files import (
    SimSummary,
    simulate_to_file,
    truth_path,
    write_events,
    write_truth,
)
from memberpulse.streams.simulate.members import MemberPlan
from memberpulse.streams.simulate.simulator import (
    DEFAULT_END,
    DEFAULT_END_MS,
    GroundTruth,
    SimConfig,
    Simulator,
)

__all__ = [
    "ARCHETYPES",
    "BARGAIN_HUNTER",
    "DECLINING",
    "DEFAULT_END",
    "DEFAULT_END_MS",
    "DORMANT_REACTIVATED",
    "LOYAL",
    "NEW",
    "ONE_TIME",
    "ArchetypeMix",
    "BehaviourConfig",
    "Catalog",
    "CatalogConfig",
    "GroundTruth",
    "MemberConfig",
    "MemberPlan",
    "MemberTrace",
    "SimConfig",
    "SimSummary",
    "Simulator",
    "Traits",
    "build_catalog",
    "simulate_to_file",
    "truth_path",
    "write_events",
    "write_truth",
]
