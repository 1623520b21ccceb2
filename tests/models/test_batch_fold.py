"""The vectorised fold equals the reference fold, snapshot for snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from memberpulse.models.batch_fold import LogIndex, snapshots_at, snapshots_of_prefixes
from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.eventlog import EventLog, from_table, load_events
from memberpulse.models.fold import fold
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.simulate import SimConfig, simulate_to_file

START = 1_700_000_000_000  # mid-November 2023: histories cross month and year ends
STATE = StateSpec(sequence_length=8, max_recent_purchases=3, exclusion_days=10)


def _adversarial(seed: int) -> EventLog:
    """Ties in ts, one member of one event, prices missing or with half cents, quantities,
    items bought twice, a member with hundreds of events on one day."""
    rng = np.random.default_rng(seed)
    columns = ("member_id", "ts", "type", "item_id", "event_id", "price", "quantity", "category")
    rows: dict[str, list[object]] = {k: [] for k in columns}
    for member in range(60):
        n = int(rng.choice([1, 2, 5, 40, 300]))
        base = START + int(rng.integers(0, 90)) * MS_PER_DAY
        times = base + np.sort(rng.integers(0, 80 * MS_PER_DAY, n))
        if n > 3:
            times[1:3] = times[0]  # equal timestamps: the id hash orders them
        if member == 7:
            times = np.full(n, base)  # everything at one instant
        for i, ts in enumerate(times.tolist()):
            kind = EVENT_TYPES[int(rng.integers(0, len(EVENT_TYPES)))]
            rows["member_id"].append(f"m{member}")
            rows["ts"].append(ts)
            rows["type"].append(kind)
            rows["item_id"].append(f"i{int(rng.integers(0, 12))}")
            rows["event_id"].append(f"e{member}-{i}-{int(rng.integers(0, 10**6))}")
            rows["price"].append(None if rng.random() < 0.2 else float(rng.integers(0, 2000)) / 200)
            rows["quantity"].append(int(rng.integers(1, 4)))
            rows["category"].append(None if rng.random() < 0.3 else f"c{int(rng.integers(0, 4))}")
    return from_table(pa.table(rows))


def _assert_equal_to_fold(log: EventLog, cutoffs: list[int], members: list[int] | None) -> int:
    index = LogIndex.of(log)
    compared = 0
    for cutoff in cutoffs:
        fast = dict(snapshots_at(index, cutoff, STATE, members))
        expected_members = []
        for member in log.iter_members() if members is None else members:
            rows = log.rows(member)
            k = int(np.searchsorted(log.ts[rows], cutoff, side="left"))
            if k:
                expected_members.append(member)
                assert fast[member] == fold(log.events(member, rows.start + k), cutoff, STATE)
                compared += 1
        assert sorted(fast) == expected_members
    return compared


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_fold_equals_fold_on_adversarial_logs(seed: int) -> None:
    log = _adversarial(seed)
    cutoffs = [log.start + 1, log.start + 45 * MS_PER_DAY + 7, log.end, log.end + 1]
    assert _assert_equal_to_fold(log, cutoffs, None) > 100


def test_batch_fold_equals_fold_for_a_subset_of_members(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    simulate_to_file(SimConfig(members=150, days=70, seed=9), path)
    log = load_events(path)
    cutoffs = [log.end - d * MS_PER_DAY for d in (40, 10)]
    assert _assert_equal_to_fold(log, cutoffs, list(range(0, 150, 3))) > 50


def test_batch_fold_of_a_cutoff_before_every_event_is_empty() -> None:
    log = _adversarial(3)
    assert snapshots_at(LogIndex.of(log), log.start, STATE) == []


@pytest.mark.parametrize("seed", [0, 4])
def test_batch_fold_of_log_prefixes_equals_fold_of_the_same_events(seed: int) -> None:
    """Leave-one-out samples: a member's first c events in log order (ties at the last
    one included), as of the next event's time; one member may appear several times."""
    log = _adversarial(seed)
    rng = np.random.default_rng(seed)
    lengths = np.diff(log.offsets)
    members = np.repeat(np.arange(len(log.members)), 3)
    counts = np.array([int(rng.integers(1, n + 1)) for n in lengths[members].tolist()])
    nows = log.ts[log.offsets[members] + counts - 1] + rng.integers(0, 3 * MS_PER_DAY, len(counts))
    fast = snapshots_of_prefixes(LogIndex.of(log), members, counts, nows, STATE)
    assert len(fast) == len(members) > 100
    for member, count, now, snap in zip(members, counts, nows, fast, strict=True):
        events = log.events(int(member), int(log.offsets[member] + count))
        assert snap == fold(events, int(now), STATE)


def test_batch_fold_refuses_an_empty_prefix() -> None:
    log = _adversarial(5)
    with pytest.raises(ValueError, match="between 1 and all"):
        snapshots_of_prefixes(LogIndex.of(log), np.array([0]), np.array([0]), np.array([0]), STATE)
