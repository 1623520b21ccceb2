"""The decoder: every valid event round-trips, every bad record becomes a dead letter."""

from __future__ import annotations

import base64
import math

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from memberpulse.models.contract import EVENT_TYPES, Event, Reason, encode_event
from memberpulse.models.timeutil import MS_PER_DAY, parse_ts
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate.bad import CORRUPTIONS, corrupt
from memberpulse.streams.worker.decode import DeadLetter, EventDecoder, Origin
from tests.helpers import NOW_MS, make_event

SETTINGS = Settings()
DECODER = EventDecoder(SETTINGS.worker)
HISTORICAL = EventDecoder(SETTINGS.worker, live=False)


def decode(raw: bytes, **origin: object) -> Event | DeadLetter:
    return DECODER.decode(raw, Origin(**origin), received_at=NOW_MS)  # type: ignore[arg-type]


def reason_of(raw: bytes) -> Reason:
    result = decode(raw)
    assert isinstance(result, DeadLetter), f"expected a dead letter, got {result}"
    return result.reason


def with_fields(**changes: object) -> bytes:
    wire = make_event().to_wire() | changes
    return orjson.dumps({k: v for k, v in wire.items() if v is not ...})


def test_valid_event_round_trips() -> None:
    event = make_event()
    assert decode(encode_event(event)) == event


def test_optional_fields_default() -> None:
    raw = orjson.dumps(
        {"event_id": "e", "member_id": "m", "type": "click", "item_id": "i", "ts": NOW_MS}
    )
    assert decode(raw) == Event("e", "m", "click", "i", NOW_MS, None, None, 1, None)


def test_numeric_ids_become_text_and_iso_ts_is_parsed() -> None:
    raw = with_fields(member_id=123, item_id=7, ts="2026-11-26T11:00:00Z")
    event = decode(raw)
    assert isinstance(event, Event)
    assert (event.member_id, event.item_id, event.ts) == ("123", "7", parse_ts("2026-11-26T11:00"))


def test_unknown_fields_are_ignored_not_rejected() -> None:
    assert decode(with_fields(coupon_code="X", nested={"a": 1})) == make_event()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", Reason.MALFORMED_JSON),
        (b"", Reason.MALFORMED_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'"text"', Reason.NOT_AN_OBJECT),
        (b"\xff\xfe\x00", Reason.NOT_UTF8),
        (b'{"price": NaN}', Reason.NON_FINITE),
        (b'{"price": Infinity}', Reason.NON_FINITE),
        (b'{"price": 1e999}', Reason.NON_FINITE),
        (with_fields(member_id=...), Reason.MISSING_FIELD),
        (with_fields(ts=...), Reason.MISSING_FIELD),
        (with_fields(type=...), Reason.MISSING_FIELD),
        (with_fields(member_id=None), Reason.MISSING_FIELD),
        (with_fields(member_id=""), Reason.EMPTY_ID),
        (with_fields(member_id="m" * 5000), Reason.ID_TOO_LONG),
        (with_fields(member_id=1.5), Reason.WRONG_TYPE),
        (with_fields(member_id=True), Reason.WRONG_TYPE),
        (with_fields(item_id=["a"]), Reason.WRONG_TYPE),
        (with_fields(type=3), Reason.WRONG_TYPE),
        (with_fields(type="teleport"), Reason.UNKNOWN_TYPE),
        (with_fields(price="12.50"), Reason.WRONG_TYPE),
        (with_fields(price=True), Reason.WRONG_TYPE),
        (with_fields(price=-0.01), Reason.NEGATIVE_VALUE),
        (with_fields(quantity=-1), Reason.NEGATIVE_VALUE),
        (with_fields(quantity=0), Reason.NEGATIVE_VALUE),
        (with_fields(quantity=1.5), Reason.WRONG_TYPE),
        (with_fields(quantity=65_536), Reason.OUT_OF_RANGE),
        (with_fields(price=21_474_836.48), Reason.OUT_OF_RANGE),
        (with_fields(ts=True), Reason.WRONG_TYPE),
        (with_fields(ts="yesterday"), Reason.BAD_TIMESTAMP),
        (with_fields(ts=2**62), Reason.BAD_TIMESTAMP),
        (b'{"ts": 123456789012345678901234567890}', Reason.MISSING_FIELD),
        (with_fields(ts=parse_ts("1999-12-31")), Reason.TS_TOO_OLD),
        (with_fields(ts=NOW_MS // 1000), Reason.TS_TOO_OLD),
        (with_fields(ts=NOW_MS + SETTINGS.worker.future_tolerance_ms + 1), Reason.TS_IN_FUTURE),
        (with_fields(pad="x" * SETTINGS.worker.max_event_bytes), Reason.OVERSIZE),
    ],
)
def test_bad_input_gets_its_reason(raw: bytes, reason: Reason) -> None:
    assert reason_of(raw) is reason


def test_seconds_timestamp_hint() -> None:
    result = decode(with_fields(ts=NOW_MS // 1000))
    assert isinstance(result, DeadLetter)
    assert "epoch seconds" in result.message


def test_future_tolerance_boundary_is_inclusive() -> None:
    edge = NOW_MS + SETTINGS.worker.future_tolerance_ms
    assert isinstance(decode(with_fields(ts=edge)), Event)


def test_historical_logs_keep_old_and_future_timestamps() -> None:
    old = with_fields(ts=parse_ts("1997-10-01"))
    assert reason_of(old) is Reason.TS_TOO_OLD
    event = HISTORICAL.decode(old)
    assert isinstance(event, Event)
    assert event.ts == parse_ts("1997-10-01")


def test_floor_is_configurable() -> None:
    decoder = EventDecoder(Settings(ts_floor="1990-01-01").worker)
    result = decoder.decode(with_fields(ts=parse_ts("1997-10-01")), received_at=NOW_MS)
    assert isinstance(result, Event)


def test_key_must_match_member_when_present() -> None:
    raw = encode_event(make_event())
    assert isinstance(decode(raw, key=b"M0000001"), Event)
    assert decode(raw, key=None) == make_event()
    result = decode(raw, key=b"someone-else")
    assert isinstance(result, DeadLetter)
    assert result.reason is Reason.KEY_MISMATCH


def test_dead_letter_wire_keeps_bytes_origin_and_reason() -> None:
    raw = b'{"member_id": "\xff"}'
    origin = Origin("member.clicks", 3, 1234, b"\xff\x01")
    result = DECODER.decode(raw, origin, received_at=NOW_MS)
    assert isinstance(result, DeadLetter)
    wire = orjson.loads(result.to_wire())
    assert wire["reason"] == "not_utf8"
    assert wire["message"]
    assert (wire["topic"], wire["partition"], wire["offset"]) == ("member.clicks", 3, 1234)
    assert wire["raw_encoding"] == "base64"
    assert base64.b64decode(wire["raw"]) == raw
    assert (wire["key_encoding"], base64.b64decode(wire["key"])) == ("base64", b"\xff\x01")
    assert wire["received_at"] == NOW_MS


def test_dead_letter_wire_keeps_text_payloads_readable() -> None:
    result = decode(with_fields(price=-5))
    assert isinstance(result, DeadLetter)
    wire = orjson.loads(result.to_wire())
    assert wire["raw_encoding"] == "utf-8"
    assert orjson.loads(wire["raw"])["price"] == -5


@pytest.mark.parametrize("reason", list(CORRUPTIONS))
def test_every_simulated_corruption_is_caught_for_its_reason(reason: Reason) -> None:
    raw = CORRUPTIONS[reason](make_event().to_wire(), SETTINGS.worker.max_event_bytes)
    assert reason_of(raw) is reason


def test_random_corruption_reports_the_reason_the_decoder_gives() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        raw, reason = corrupt(make_event(), rng, SETTINGS.worker.max_event_bytes)
        assert reason_of(raw) is reason


# --- property-based ---------------------------------------------------------------------

ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
prices = st.one_of(
    st.none(), st.floats(min_value=0, max_value=2e7, allow_nan=False, allow_infinity=False)
)


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    return Event(
        event_id=str(draw(ids)),
        member_id=str(draw(ids)),
        type=draw(st.sampled_from(EVENT_TYPES)),
        item_id=str(draw(ids)),
        ts=draw(
            st.integers(SETTINGS.worker.ts_floor, NOW_MS + SETTINGS.worker.future_tolerance_ms)
        ),
        category=draw(st.none() | st.text(min_size=1, max_size=20)),
        price=draw(prices),
        quantity=draw(st.integers(1, 65_535)),
        session_id=draw(st.none() | st.text(min_size=1, max_size=20)),
    )


@given(valid_events())
@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_every_valid_event_round_trips(event: Event) -> None:
    assert decode(encode_event(event)) == event


@given(st.binary(max_size=2_000))
@hsettings(max_examples=500)
def test_decoder_never_raises_on_any_bytes(raw: bytes) -> None:
    result = decode(raw)
    assert isinstance(result, Event | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.raw == raw
        assert isinstance(orjson.loads(result.to_wire()), dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)


@given(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("event_id", "member_id", "type", "item_id", "ts", "price", "quantity"), json_values
        ),
    )
)
@hsettings(max_examples=500)
def test_decoder_never_raises_on_any_json_object(obj: dict[str, object]) -> None:
    try:
        raw = orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return  # not representable as JSON (e.g. integers beyond 64 bits)
    result = decode(raw)
    if isinstance(result, Event):
        # whatever passed satisfies the contract
        assert result.type in EVENT_TYPES
        assert result.event_id
        assert result.member_id
        assert result.item_id
        assert SETTINGS.worker.ts_floor <= result.ts <= NOW_MS + SETTINGS.worker.future_tolerance_ms
        assert result.price is None or (math.isfinite(result.price) and result.price >= 0)
        assert 1 <= result.quantity <= 65_535
    else:
        assert isinstance(result.reason, Reason)


def test_events_are_not_rejected_for_being_a_day_old() -> None:
    assert isinstance(decode(with_fields(ts=NOW_MS - MS_PER_DAY)), Event)


def test_a_dead_letter_cuts_long_text_at_a_character_boundary_and_says_so() -> None:
    raw = ("é" * 100).encode()  # two bytes each: a cut at 51 bytes splits one
    letter = DeadLetter(Reason.OVERSIZE, "too big", raw, Origin("t", 0, 1, b"k"), NOW_MS)
    wire = orjson.loads(letter.to_wire(51))
    assert (wire["raw"], wire["raw_encoding"]) == ("é" * 25, "utf-8")
    assert (wire["raw_bytes"], wire["raw_truncated"]) == (200, True)
    assert wire["key"] == "k"
    assert "key_truncated" not in wire
    assert "raw_truncated" not in orjson.loads(letter.to_wire(200))  # exactly at the cap


def test_a_dead_letter_cuts_binary_before_base64_and_caps_its_record_key() -> None:
    raw, key = bytes(range(256)) * 4, b"\xff" * 300
    letter = DeadLetter(Reason.NOT_UTF8, "binary", raw, Origin("t", 0, 1, key), NOW_MS)
    wire = orjson.loads(letter.to_wire(256))
    assert (wire["raw_encoding"], base64.b64decode(wire["raw"])) == ("base64", raw[:256])
    assert (wire["key_encoding"], base64.b64decode(wire["key"])) == ("base64", key[:256])
    assert (wire["raw_bytes"], wire["key_bytes"]) == (1024, 300)
    assert letter.record_key(256) == key[:256]
    assert letter.record_key(300) == key
