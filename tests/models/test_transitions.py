"""The item-to-item transition table: counting, ranking, point-in-time, and its use."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from memberpulse.models.config import DatasetConfig, NetworkConfig
from memberpulse.models.dataset import build_samples, build_vocabulary
from memberpulse.models.eventlog import EventLog, from_table
from memberpulse.models.features import FeatureSpec
from memberpulse.models.network import MemberTransformer, Vocabulary
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.models.transitions import (
    build_transitions,
    last_purchases,
    table_scores,
    transition_pairs,
)

T0 = 1_780_000_000_000 - 1_780_000_000_000 % MS_PER_DAY
STATE = StateSpec(sequence_length=8)
CONFIG = DatasetConfig(horizon_days=5, sequence_length=8, min_item_count=1)


def _log(events: list[tuple[str, int, str, str]]) -> EventLog:
    """(member, minute, type, item) → a log."""
    return from_table(
        pa.table(
            {
                "event_id": [f"e{i}" for i in range(len(events))],
                "member_id": [e[0] for e in events],
                "ts": [T0 + e[1] * 60_000 for e in events],
                "type": [e[2] for e in events],
                "item_id": [e[3] for e in events],
            }
        )
    )


def _names(log: EventLog, codes: np.ndarray) -> list[str]:
    return [log.item_names[c] for c in codes.tolist()]


LOG = _log(
    [
        ("A", 1, "purchase", "x"),
        ("A", 2, "click", "y"),
        ("A", 3, "purchase", "z"),
        ("A", 4, "browse", "w"),
        ("B", 1, "click", "q"),  # no purchase before it: no pair
        ("B", 2, "purchase", "r"),  # A's purchases never count for B
        ("B", 3, "click", "s"),
        ("B", 9, "click", "t"),
    ]
)


def test_pairs_follow_each_members_latest_purchase_only() -> None:
    previous, following = transition_pairs(LOG, until=T0 + 10 * 60_000)
    pairs = set(zip(_names(LOG, previous), _names(LOG, following), strict=True))
    assert pairs == {("x", "y"), ("x", "z"), ("z", "w"), ("r", "s"), ("r", "t")}


def test_pairs_stop_at_until_and_keep_only_the_chosen_members() -> None:
    previous, following = transition_pairs(LOG, until=T0 + 4 * 60_000)  # strictly before
    assert set(zip(_names(LOG, previous), _names(LOG, following), strict=True)) == {
        ("x", "y"),
        ("x", "z"),
        ("r", "s"),
    }
    b = LOG.members.index("B")
    previous, following = transition_pairs(LOG, until=T0 + 10 * 60_000, members={b})
    assert set(_names(LOG, following)) == {"s", "t"}


def _spec(log: EventLog) -> FeatureSpec:
    return build_vocabulary(log, log.end + 1, CONFIG, STATE)


def test_table_ranks_follow_ups_by_count_with_log_weights() -> None:
    events = [("A", 0, "purchase", "p")]
    for minute, item in enumerate(["a", "b", "a", "c", "a", "b"], start=1):
        events.append(("A", minute, "click", item))
    log = _log(events)
    spec = _spec(log)
    table = build_transitions(log, log.end + 1, spec, top_m=2)
    row = spec.first_item + spec.items.index("p")
    assert [spec.items[i] for i in table.items[row]] == ["a", "b"]  # c (once) is cut
    np.testing.assert_allclose(table.weights[row], np.log1p([3, 2]), rtol=1e-6)
    others = np.delete(np.arange(spec.n_item_ids), row)
    assert (table.items[others] == -1).all()
    assert (table.weights[others] == 0).all()


def test_network_adds_the_weighted_row_of_the_latest_purchase() -> None:
    steps = [("purchase", "p"), ("click", "a"), ("purchase", "q"), ("click", "b"), ("click", "a")]
    events = [("A", minute, kind, item) for minute, (kind, item) in enumerate(steps)]
    log = _log([*events, ("B", 1, "click", "a"), ("B", 2, "click", "b")])
    spec = _spec(log)
    table = build_transitions(log, log.end + 1, spec, top_m=3)
    samples = build_samples(log, [log.end + 1], CONFIG.horizon_days, spec, STATE)
    features = samples.features
    last = last_purchases(features)
    rows = samples.member.tolist()
    member_a, member_b = rows.index(log.members.index("A")), rows.index(log.members.index("B"))
    assert spec.items[int(last[member_a]) - spec.first_item] == "q"  # the latest, not "p"
    assert last[member_b] == 0  # no purchase: PAD, an all-zero row
    network = NetworkConfig(hidden=8, heads=2, ffn=8, transitions=3)
    model = MemberTransformer(network, Vocabulary.of(spec))
    model.set_transitions(table.items, table.weights, weight=2.5)
    columns = [torch.as_tensor(c) for c in features]
    with torch.no_grad():
        added = model.transition_scores(columns[0], columns[1], columns[6]).numpy()
    expected = 2.5 * table_scores(table, features, len(spec.items))
    np.testing.assert_allclose(added, expected, rtol=1e-6)
    assert added[member_a, spec.items.index("b")] > 0  # q → b was seen
    assert not added[member_b].any()
    model.set_transitions(table.items, table.weights, weight=0.0)
    with torch.no_grad():
        assert not model.transition_scores(columns[0], columns[1], columns[6]).any()
