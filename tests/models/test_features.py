"""The feature encoder: shapes, padding, unseen items, schema hash, determinism."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberpulse.models import features
from memberpulse.models.contract import EVENT_TYPES, Event
from memberpulse.models.features import (
    AGGREGATES,
    FIRST_ID,
    NO_PRICE,
    PAD,
    UNK,
    FeatureSpec,
    encode,
    schema_hash,
    time_bucket,
)
from memberpulse.models.fold import fold
from memberpulse.models.snapshot import MemberSnapshot, StateSpec
from memberpulse.models.timeutil import MS_PER_DAY
from tests.helpers import NOW_MS, make_event

L = 8
STATE = StateSpec(sequence_length=L)
#: Pinned: a change here means the encoding changed; bump SCHEMA["version"] and retrain.
PINNED_SCHEMA_HASH = "30c7bee97527c87a"


def make_spec(**overrides: object) -> FeatureSpec:
    fields: dict[str, object] = {
        "sequence_length": L,
        "hash_buckets": 16,
        "items": ("I1", "I2", "I3"),
        "categories": ("C1", "C2"),
        "price_edges": (5.0, 10.0, 20.0),
        "agg_mean": (0.0,) * len(AGGREGATES),
        "agg_std": (1.0,) * len(AGGREGATES),
        "schema": schema_hash(),
    }
    return FeatureSpec(**(fields | overrides))  # type: ignore[arg-type]


def member(n: int, member_id: str = "M1", **overrides: object) -> MemberSnapshot:
    events = [
        make_event(
            event_id=f"{member_id}-{i}",
            member_id=member_id,
            ts=NOW_MS - (n - i) * 60_000,
            item_id=f"I{i % 4 + 1}",
            type=EVENT_TYPES[i % 4],
            **overrides,
        )
        for i in range(n)
    ]
    return fold(events, NOW_MS, STATE)


def test_shapes_dtypes_and_left_padding() -> None:
    batch = encode([member(3), member(12, "M2")], NOW_MS, make_spec())
    for column in batch[:6]:
        assert column.shape == (2, L)
        assert column.dtype == np.int32
    assert batch.mask.dtype == np.bool_
    assert batch.aggregates.shape == (2, len(AGGREGATES))
    assert batch.aggregates.dtype == np.float32
    assert batch.mask[0].tolist() == [False] * 5 + [True] * 3  # right-aligned
    assert batch.mask[1].all()  # 12 events, the last L kept
    for column in batch[:6]:
        assert (column[0, :5] == PAD).all()
        assert (column[0, 5:] != PAD).all()


def test_item_ids_vocab_hash_buckets_and_unk() -> None:
    spec = make_spec()
    snap = member(4)  # items I1, I2, I3, I4; I4 is not in the vocabulary
    row = encode([snap], NOW_MS, spec).items[0, -4:].tolist()
    first = FIRST_ID + spec.hash_buckets
    assert row[:3] == [first, first + 1, first + 2]
    assert row[3] == FIRST_ID + zlib.crc32(b"I4") % spec.hash_buckets
    assert FIRST_ID <= row[3] < first
    no_buckets = encode([snap], NOW_MS, make_spec(hash_buckets=0)).items[0, -1]
    assert no_buckets == UNK


def test_prices_categories_types_and_times() -> None:
    spec = make_spec()
    priced = member(3, price=7.5, category="C2")
    unpriced = member(3, price=None, category="C9")
    batch = encode([priced, unpriced], NOW_MS, spec)
    assert batch.prices[0, -1] == FIRST_ID + 1  # 5 <= 7.5 < 10
    assert batch.prices[1, -1] == NO_PRICE
    assert batch.categories[0, -1] == FIRST_ID + 1
    assert batch.categories[1, -1] == UNK
    assert batch.types[0, -3:].tolist() == [1, 2, 3]  # 1 + index in EVENT_TYPES
    assert batch.ages[0, -1] == time_bucket(np.array([60_000]))[0]
    assert batch.gaps[0, -3] == 1  # the first event of a member has no gap
    assert batch.gaps[0, -1] == time_bucket(np.array([60_000]))[0]


def test_time_buckets_are_monotone_and_capped() -> None:
    ms = np.array([-5, 0, 999, 1_000, 60_000, MS_PER_DAY, 10**13], dtype=np.int64)
    buckets = time_bucket(ms)
    assert buckets.tolist() == sorted(buckets.tolist())
    assert buckets[0] == buckets[1] == 1
    assert buckets[-1] == features.TIME_BUCKETS - 1


def test_aggregates_are_normalised_with_the_spec() -> None:
    snap = member(5)
    raw = features.raw_aggregates([snap], NOW_MS)[0]
    mean = tuple(float(v) for v in raw)
    spec = make_spec(agg_mean=mean, agg_std=(2.0,) * len(AGGREGATES))
    assert np.allclose(encode([snap], NOW_MS, spec).aggregates, 0.0)
    shifted = make_spec(agg_mean=(0.0,) * len(AGGREGATES), agg_std=(2.0,) * len(AGGREGATES))
    assert np.allclose(encode([snap], NOW_MS, shifted).aggregates[0], raw / 2, rtol=1e-6)


def test_spec_round_trips_and_rejects_wrong_stats(tmp_path: pytest.TempPathFactory) -> None:
    spec = make_spec()
    path = tmp_path / "spec.json"  # type: ignore[operator]
    spec.save(path)
    assert FeatureSpec.load(path) == spec
    with pytest.raises(ValueError, match="normalisation stats"):
        make_spec(agg_mean=(0.0,))


def test_schema_hash_is_pinned_and_tracks_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    assert schema_hash() == PINNED_SCHEMA_HASH
    changed = dict(features.SCHEMA, time_buckets=features.TIME_BUCKETS + 1)
    monkeypatch.setattr(features, "SCHEMA", changed)
    assert schema_hash() != PINNED_SCHEMA_HASH


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 40 * MS_PER_DAY),
        st.sampled_from(EVENT_TYPES),
        st.sampled_from(["I1", "I2", "I7", "x{y}"]),
        st.one_of(st.none(), st.floats(0.01, 500, allow_nan=False)),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(events_strategy, min_size=1, max_size=5))
def test_batch_encoding_equals_row_by_row_and_is_deterministic(
    members: list[list[tuple[int, str, str, float | None]]],
) -> None:
    snaps = []
    for m, rows in enumerate(members):
        events = [
            Event(f"{m}-{i}", f"M{m}", kind, item, NOW_MS - back, "C1", price)
            for i, (back, kind, item, price) in enumerate(rows)
        ]
        snaps.append(fold(events, NOW_MS, STATE))
    spec = make_spec()
    batch = encode(snaps, NOW_MS, spec)
    again = encode(snaps, NOW_MS, replace(spec))  # an equal spec, not the same object
    for a, b in zip(batch, again, strict=True):
        assert np.array_equal(a, b)
    for row, snap in enumerate(snaps):
        alone = encode([snap], NOW_MS, spec)
        for column, single in zip(batch, alone, strict=True):
            assert np.array_equal(column[row], single[0])


# --- weeks and session content ------------------------------------------------------------

LONG = StateSpec(sequence_length=64)


def content_of(snap: MemberSnapshot) -> dict[str, float]:
    row = features.session_content([snap])[0]
    return dict(zip(features.CONTENT, row.tolist(), strict=True))


def test_weeks_are_whole_days_back_from_now_oldest_first() -> None:
    today_start = NOW_MS - NOW_MS % MS_PER_DAY
    backs = {0: 2, 6: 1, 7: 1, 55: 1, 56: 1}  # days back → events that day
    events = [
        make_event(event_id=f"e{d}-{k}", ts=today_start - d * MS_PER_DAY + 1_000 * k, type="click")
        for d, n in backs.items()
        for k in range(n)
    ]
    snap = fold(events, NOW_MS, LONG)
    clicks = [week[EVENT_TYPES.index("click")] for week in snap.week_counts]
    assert len(snap.week_counts) == features.WEEKS == 8
    assert clicks == [1, 0, 0, 0, 0, 0, 1, 3]  # day 56 is outside; days 0 and 6 are week 0
    assert snap.week_active_days == (1, 0, 0, 0, 0, 0, 1, 2)
    raw = dict(zip(AGGREGATES, features.raw_aggregates([snap], NOW_MS)[0].tolist(), strict=True))
    assert raw["week0_click"] == pytest.approx(np.log1p(3))
    assert raw["week7_click"] == pytest.approx(np.log1p(1))
    assert raw["week0_active_days"] == pytest.approx(np.log1p(2))


def test_session_content_compares_the_latest_sessions_with_the_earlier_ones() -> None:
    hour = 3_600_000
    start = NOW_MS - 10 * hour
    plan = [  # (session, type, price, category)
        (0, "click", 10.0, "C1"),
        (0, "browse", None, "C1"),
        (0, "purchase", 10.0, "C1"),
        (1, "click", 3.0, "C2"),
        (1, "browse", None, "C2"),
        (1, "browse", None, "C2"),
        (2, "browse", None, "C1"),
        (3, "click", 1.0, "C3"),
    ]
    events = [
        make_event(
            event_id=f"e{i}",
            ts=start + session * 2 * hour + i * 60_000,
            type=kind,
            price=price,
            category=category,
        )
        for i, (session, kind, price, category) in enumerate(plan)
    ]
    got = content_of(fold(events, NOW_MS, LONG))
    assert features.RECENT_SESSIONS == 3  # sessions 1-3 are recent, session 0 earlier
    expected = {
        "recent_clicks_per_session": 2 / 3,
        "recent_browses_per_session": 3 / 3,
        "recent_sessions_without_purchase": 1.0,
        "recent_log_price_clicked": (np.log1p(3.0) + np.log1p(1.0)) / 2,
        "recent_log_price_bought": 0.0,
        "earlier_clicks_per_session": 1.0,
        "earlier_browses_per_session": 1.0,
        "earlier_sessions_without_purchase": 0.0,
        "earlier_log_price_clicked": np.log1p(10.0),
        "earlier_log_price_bought": np.log1p(10.0),
        "earlier_sessions": np.log1p(1),
        "novel_category_share": 0.0,  # 8 events: no earlier block to compare with
        "events_since_purchase": np.log1p(5),
        "sessions_since_purchase": np.log1p(3),
        "no_purchase_in_sequence": 0.0,
        "sequence_span_days": np.log1p((events[-1].ts - events[0].ts) / MS_PER_DAY),
        "sequence_sessions": np.log1p(4),
    }
    assert got == pytest.approx(expected)


def test_category_novelty_and_a_sequence_without_purchases() -> None:
    n = features.RECENT_EVENTS + 4
    categories = ["C1"] * 4 + ["C1", "C2"] * (features.RECENT_EVENTS // 2)
    events = [
        make_event(event_id=f"e{i}", ts=NOW_MS - (n - i) * 60_000, type="browse", category=c)
        for i, c in enumerate(categories)
    ]
    got = content_of(fold(events, NOW_MS, LONG))
    assert got["novel_category_share"] == pytest.approx(0.5)  # the C2 half is new
    assert got["no_purchase_in_sequence"] == 1.0
    assert got["events_since_purchase"] == pytest.approx(np.log1p(n))
    assert got["sequence_sessions"] == pytest.approx(np.log1p(1))
    assert got["earlier_sessions"] == 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(0, 20 * MS_PER_DAY),
                st.sampled_from(EVENT_TYPES),
                st.sampled_from([None, "C1", "C2", "C3"]),
                st.one_of(st.none(), st.floats(0.0, 500, allow_nan=False)),
            ),
            min_size=1,
            max_size=40,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_session_content_of_a_batch_equals_member_by_member(
    members: list[list[tuple[int, str, str | None, float | None]]],
) -> None:
    snaps = [
        fold(
            [
                Event(f"{m}-{i}", f"M{m}", kind, "I1", NOW_MS - back, category, price)
                for i, (back, kind, category, price) in enumerate(rows)
            ],
            NOW_MS,
            LONG,
        )
        for m, rows in enumerate(members)
    ]
    batch = features.session_content(snaps)
    assert np.isfinite(batch).all()
    for row, snap in enumerate(snaps):
        assert np.array_equal(batch[row], features.session_content([snap])[0])


def test_one_now_per_member_equals_encoding_each_at_its_own_now() -> None:
    spec = make_spec()
    snaps = [member(5, "M1"), member(9, "M2"), member(2, "M3")]
    nows = [NOW_MS, NOW_MS + 3 * MS_PER_DAY, NOW_MS + 40 * MS_PER_DAY]
    together = encode(snaps, nows, spec)
    for row, (snap, now) in enumerate(zip(snaps, nows, strict=True)):
        alone = encode([snap], now, spec)
        for column, single in zip(together, alone, strict=True):
            assert np.array_equal(column[row], single[0])
    same = member(5, "M1")
    twice = encode([same, same], [NOW_MS, NOW_MS + 40 * MS_PER_DAY], spec)
    assert not np.array_equal(twice.ages[0], twice.ages[1])  # each row's own time is used
    with pytest.raises(ValueError, match="one time per member"):
        encode(snaps, nows[:2], spec)
