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
PINNED_SCHEMA_HASH = "abd525568c80ef96"


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
