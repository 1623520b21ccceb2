"""Event logs and point-in-time samples: no label event is ever visible to features."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from memberpulse.models.config import DatasetConfig
from memberpulse.models.dataset import (
    NO_NEXT,
    OUTSIDE,
    Samples,
    build_prefix_samples,
    build_samples,
    build_vocabulary,
    sequence_windows,
    split,
    time_split,
    with_normalisation,
)
from memberpulse.models.eventlog import EventLog, from_table, load_events
from memberpulse.models.features import FeatureSpec, encode
from memberpulse.models.fold import fold
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY, to_iso

DAY = MS_PER_DAY
T0 = 1_780_000_000_000 - 1_780_000_000_000 % DAY
STATE = StateSpec(sequence_length=16)
CONFIG = DatasetConfig(horizon_days=10, stride_days=5, min_history_days=5, min_item_count=1)


def rows(events: list[tuple[str, int, str, str, float | None]]) -> pa.Table:
    """(member, day offset in ms, type, item, price) → an event table."""
    return pa.table(
        {
            "event_id": [f"{m}-{i}" for i, (m, *_rest) in enumerate(events)],
            "member_id": [e[0] for e in events],
            "ts": [T0 + e[1] for e in events],
            "type": [e[2] for e in events],
            "item_id": [e[3] for e in events],
            "price": [e[4] for e in events],
        }
    )


def history() -> pa.Table:
    events = []
    for day in range(40):
        events.append(("A", day * DAY + 3_600_000, "click", f"I{day % 3}", 5.0))
        if day % 4 == 0:
            events.append(("A", day * DAY + 7_200_000, "purchase", f"I{day % 3}", 5.0))
        if day < 12:
            events.append(("B", day * DAY + 3_600_000, "browse", "I9", None))
    return rows(events)


def test_formats_load_the_same_log(tmp_path: Path) -> None:
    table = history()
    pq.write_table(table, tmp_path / "log.parquet")
    pa_csv.write_csv(table, tmp_path / "log.csv")
    lines = [orjson.dumps(r) for r in table.to_pylist()]
    (tmp_path / "log.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    logs = [load_events(tmp_path / f"log.{suffix}") for suffix in ("parquet", "csv", "jsonl")]
    for log in logs[1:]:
        assert log.members == logs[0].members
        assert np.array_equal(log.ts, logs[0].ts)
        assert log.event_ids == logs[0].event_ids
        assert log.events(0) == logs[0].events(0)


def test_iso_timestamps_numeric_ids_and_bad_rows_are_counted() -> None:
    table = pa.table(
        {
            "member_id": [7, 7, None, 8, 8],
            "ts": [to_iso(T0), to_iso(T0 + 1000), to_iso(T0), to_iso(T0), to_iso(T0)],
            "type": ["click", "purchase", "click", "teleport", "click"],
            "item_id": ["I1", "I1", "I1", "I1", "I2"],
            "price": [1.0, -2.0, 1.0, 1.0, 3.0],
        }
    )
    log = from_table(table)
    assert log.members == ["7", "8"]
    assert log.skipped == {"no member_id": 1, "unknown type": 1, "bad price": 1}
    assert log.events(0)[0].ts == T0
    assert log.events(0)[0].event_id == "7-row0"


def test_missing_columns_and_unknown_formats_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['item_id'\]"):
        from_table(pa.table({"member_id": ["A"], "ts": [T0], "type": ["click"]}))
    (tmp_path / "log.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown event log format"):
        load_events(tmp_path / "log.txt")


def test_without_last_drops_each_members_tail() -> None:
    log = from_table(history())
    cut = log.without_last(2)
    for member in range(len(log.members)):
        assert cut.events(member) == log.events(member)[:-2]


def test_time_split_keeps_labels_apart() -> None:
    log = from_table(history())
    until = T0 + 40 * DAY
    train, valid = time_split(log, until, CONFIG)
    horizon = CONFIG.horizon_days * DAY
    assert valid + horizon == until
    assert max(train) + horizon <= valid
    assert min(train) >= log.start + 5 * DAY
    with pytest.raises(ValueError, match="training needs at least"):
        time_split(log, T0 + 20 * DAY, CONFIG)


def _samples(log: EventLog, cutoff: int) -> tuple[FeatureSpec, Samples]:
    spec = build_vocabulary(log, cutoff, CONFIG, STATE)
    return spec, build_samples(log, [cutoff], CONFIG.horizon_days, spec, STATE)


def test_features_never_see_label_events() -> None:
    """Rewriting everything at or after the cutoff changes labels, never features."""
    table = history()
    cutoff = T0 + 20 * DAY
    log = from_table(table)
    spec, samples = _samples(log, cutoff)
    ts = np.asarray(table["ts"])
    after = ts >= cutoff
    altered = table.set_column(
        table.column_names.index("item_id"),
        "item_id",
        pa.array(np.where(after, "LEAK", np.asarray(table["item_id"])).tolist()),
    ).set_column(
        table.column_names.index("type"),
        "type",
        pa.array(np.where(after, "click", np.asarray(table["type"])).tolist()),
    )
    other = build_samples(from_table(altered), [cutoff], CONFIG.horizon_days, spec, STATE)
    for mine, theirs in zip(samples.features, other.features, strict=True):
        assert np.array_equal(mine, theirs)
    assert samples.churn[0] == 0.0
    assert other.churn[0] == 1.0
    # And the features are exactly the serving encoder's output of the fold before T.
    member_a = [e for e in log.events(0) if e.ts < cutoff]
    expected = encode([fold(member_a, cutoff, STATE)], cutoff, spec)
    assert np.array_equal(samples.features.items[0], expected.items[0])
    assert np.array_equal(samples.features.aggregates[0], expected.aggregates[0])


def test_labels_churn_spend_and_next_item() -> None:
    log = from_table(history())
    cutoff = T0 + 20 * DAY
    spec, samples = _samples(log, cutoff)
    a, b = log.members.index("A"), log.members.index("B")
    by_member = dict(zip(samples.member.tolist(), range(len(samples)), strict=True))
    row_a, row_b = by_member[a], by_member[b]
    # A buys on days 20, 24, 28 (horizon [20, 30)): 3 × 5.0; its next event is day 20's click.
    assert samples.churn[row_a] == 0.0
    assert samples.spend[row_a] == pytest.approx(15.0)
    assert samples.next_item[row_a] == spec.items.index("I2")
    # B stopped on day 11: churned, nothing spent, no next event.
    assert samples.churn[row_b] == 1.0
    assert samples.spend[row_b] == 0.0
    assert samples.next_item[row_b] == NO_NEXT
    assert samples.idle_days[row_b] == pytest.approx(20 - 11 - 1 / 24)
    # Days to the first purchase (the shorter-horizon targets): A buys at 02:00 on day 20.
    assert samples.wait_days[row_a] == pytest.approx(2 / 24)
    assert samples.wait_days[row_b] == np.inf


def test_unknown_next_item_counts_as_outside_and_normalisation() -> None:
    log = from_table(history())
    cutoff = T0 + 20 * DAY
    spec = build_vocabulary(log, T0 + 2 * DAY, CONFIG, STATE)  # only I0, I1, I9 seen
    samples = build_samples(log, [cutoff], CONFIG.horizon_days, spec, STATE)
    assert OUTSIDE in samples.next_item.tolist()  # I2 is outside that vocabulary
    normalised = samples.normalised(with_normalisation(spec, samples.raw))
    assert np.allclose(normalised.features.aggregates.mean(axis=0), 0.0, atol=1e-5)


def test_member_split_holds_out_whole_members_at_the_last_cutoff() -> None:
    table = history()
    ids = table["member_id"].to_pylist()
    copies = [
        table.set_column(1, "member_id", pa.array([f"{m}{k}" for m in ids])) for k in range(30)
    ]
    many = pa.concat_tables(copies)
    log = from_table(many)
    until = T0 + 40 * DAY
    config = replace(CONFIG, validation="members", valid_share=0.2)
    design = split(log, until, config)
    assert design.valid_cutoff == until - CONFIG.horizon_days * DAY
    assert max(design.train_cutoffs) == design.valid_cutoff  # as deep as the test's history
    assert design.train_members is not None
    assert design.valid_members is not None
    assert not design.train_members & design.valid_members
    assert design.train_members | design.valid_members == set(log.iter_members())
    assert 0 < len(design.valid_members) < len(log.members) / 2
    time_design = split(log, until, replace(CONFIG, validation="time"))
    assert time_design.train_members is None  # the time split keeps everyone


def test_sequence_windows_never_target_the_held_out_events_and_tile_the_rest() -> None:
    log = from_table(history())
    lengths = np.diff(log.offsets)
    members, counts = sequence_windows(log, held_out=2, windows=3, stride=4)
    for member in range(len(log.members)):
        mine = counts[members == member]
        latest = lengths[member] - 2 - 1  # the label of the latest window: the event before
        assert mine.max() == latest  # the two held-out ones
        assert np.array_equal(np.sort(mine)[::-1], latest - 4 * np.arange(len(mine)))
        assert len(mine) == min(3, (latest - 1) // 4 + 1)


def test_prefix_samples_label_the_event_after_the_prefix_as_of_its_time() -> None:
    log = from_table(history())
    spec = build_vocabulary(log, log.end + 1, CONFIG, STATE)
    a = log.members.index("A")
    samples = build_prefix_samples(
        log, np.array([a, a]), np.array([1, 10]), CONFIG.horizon_days, spec, STATE
    )
    for row, count in enumerate((1, 10)):
        target = log.offsets[a] + count
        assert samples.cutoff[row] == log.ts[target]
        item = log.item_names[log.items[target]]
        assert samples.next_item[row] == spec.items.index(item)
        events = log.events(a, int(target))
        expected = encode([fold(events, int(log.ts[target]), STATE)], int(log.ts[target]), spec)
        assert np.array_equal(samples.features.items[row], expected.items[0])
    assert samples.churn.tolist() == [0.0, 0.0]  # A buys every 4 days


def test_prefix_samples_built_in_small_chunks_equal_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from memberpulse.models import dataset

    log = from_table(history())
    spec = build_vocabulary(log, log.end + 1, CONFIG, STATE)
    members, counts = sequence_windows(log, held_out=1, windows=4, stride=3)
    whole = build_prefix_samples(log, members, counts, CONFIG.horizon_days, spec, STATE)
    monkeypatch.setattr(dataset, "PREFIX_ROWS_PER_CHUNK", 7)  # most chunks: one sample
    chunked = build_prefix_samples(log, members, counts, CONFIG.horizon_days, spec, STATE)
    for name, column in zip(whole.features._fields, whole.features, strict=True):
        assert np.array_equal(column, getattr(chunked.features, name)), name
    assert np.array_equal(whole.next_item, chunked.next_item)
