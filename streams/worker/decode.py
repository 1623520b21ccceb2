"""Decoding and validating input events; every rejected record becomes a dead letter.

The decoder never raises on input: any bytes give back either an `Event` or a
`DeadLetter` holding the original bytes, where they came from, a machine-readable
reason and a human message. The hot path is orjson plus a handful of type checks
(measured in BENCHMARKS.md, `memberpulse bench decode`).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, Final

import orjson

from memberpulse.models.contract import EVENT_TYPES, Event, Reason
from memberpulse.models.timeutil import parse_ts, to_iso
from memberpulse.streams.settings import WorkerSettings

#: The widest range of epoch-ms that maps onto a calendar date (years 1..9999).
_TS_MIN: Final = parse_ts("0001-01-01")
_TS_MAX: Final = parse_ts("9999-12-31T23:59:59.999Z")
#: What the state's fixed-width sequence records hold (unit price in cents as i32).
MAX_QUANTITY: Final = 65_535
MAX_PRICE: Final = (2**31 - 1) / 100
#: Epoch *seconds* for 2001..2100 land here when read as milliseconds: a hint worth giving.
_LOOKS_LIKE_SECONDS: Final = range(978_307_200, 4_102_444_800)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record was read: topic, partition, offset, key (all optional for files)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input record with everything needed to inspect and replay it."""

    reason: Reason
    message: str
    raw: bytes
    origin: Origin
    received_at: int | None

    def to_wire(self, max_bytes: int | None = None) -> bytes:
        """The DLQ record as JSON bytes (raw and key as UTF-8 text, else base64).

        With `max_bytes`, `raw` and `key` keep at most that many bytes of the original each
        (`raw_bytes` / `key_bytes` give the full sizes, `raw_truncated` / `key_truncated`
        say a cut was made), so a dead letter always fits the broker's record limit; the
        whole record stays in its input topic at `topic`/`partition`/`offset`.
        """
        raw_text, raw_encoding, raw_cut = _text_or_base64(self.raw, max_bytes)
        record: dict[str, Any] = {
            "reason": self.reason.value,
            "message": self.message,
            "topic": self.origin.topic,
            "partition": self.origin.partition,
            "offset": self.origin.offset,
            "raw": raw_text,
            "raw_encoding": raw_encoding,
            "received_at": self.received_at,
        }
        if raw_cut:
            record["raw_bytes"], record["raw_truncated"] = len(self.raw), True
        if self.origin.key is not None:
            key_text, key_encoding, key_cut = _text_or_base64(self.origin.key, max_bytes)
            record["key"], record["key_encoding"] = key_text, key_encoding
            if key_cut:
                record["key_bytes"], record["key_truncated"] = len(self.origin.key), True
        return orjson.dumps(record)

    def record_key(self, max_bytes: int) -> bytes | None:
        """The DLQ record's Kafka key: the input's key, its first `max_bytes` at most."""
        key = self.origin.key
        return key if key is None or len(key) <= max_bytes else key[:max_bytes]


def _text_or_base64(data: bytes, max_bytes: int | None = None) -> tuple[str, str, bool]:
    """(text, encoding, cut): `data` as UTF-8 text when it is, else base64; with `max_bytes`,
    only its first `max_bytes` bytes (text cut at a character boundary)."""
    cut = max_bytes is not None and len(data) > max_bytes
    head = data[:max_bytes] if cut else data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(head).decode("ascii"), "base64", cut
    # valid UTF-8 whole: a cut can split only its last character, which "ignore" drops
    return head.decode("utf-8", "ignore"), "utf-8", cut


class _Invalid(Exception):
    """Internal signal from a field check; becomes a DeadLetter, never escapes."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_NO_ORIGIN: Final = Origin()
_KNOWN_TYPES: Final = frozenset(EVENT_TYPES)


class EventDecoder:
    """Validates raw JSON bytes into `Event`s under the limits in `Settings`.

    `live=True` (the stream) also rejects timestamps before `ts_floor` or later than
    the receive time plus `future_tolerance_ms`; historical logs use `live=False`.
    """

    def __init__(self, worker: WorkerSettings, *, live: bool = True) -> None:
        self._max_bytes = worker.max_event_bytes
        self._max_id = worker.max_id_chars
        self._floor = worker.ts_floor
        self._tolerance = worker.future_tolerance_ms
        self._live = live

    def decode(
        self, raw: bytes, origin: Origin = _NO_ORIGIN, received_at: int | None = None
    ) -> Event | DeadLetter:
        """One record to an `Event`, or to a `DeadLetter` saying why not. Never raises."""
        if len(raw) > self._max_bytes:
            return DeadLetter(
                Reason.OVERSIZE,
                f"payload is {len(raw)} bytes, limit is {self._max_bytes}",
                raw,
                origin,
                received_at,
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            reason, message = _classify_json_error(raw, exc)
            return DeadLetter(reason, message, raw, origin, received_at)
        if type(obj) is not dict:
            message = f"expected a JSON object, got {type(obj).__name__}"
            return DeadLetter(Reason.NOT_AN_OBJECT, message, raw, origin, received_at)
        try:
            event = self._build(obj, received_at)
            if origin.key is not None and origin.key != event.member_id.encode():
                raise _Invalid(
                    Reason.KEY_MISMATCH,
                    f"record key {origin.key[:64]!r} is not member_id {event.member_id[:64]!r}",
                )
        except _Invalid as bad:
            return DeadLetter(bad.reason, bad.message, raw, origin, received_at)
        return event

    def _build(self, obj: dict[str, Any], received_at: int | None) -> Event:
        event_type = obj.get("type")
        if type(event_type) is not str or event_type not in _KNOWN_TYPES:
            if event_type is None:
                raise _Invalid(Reason.MISSING_FIELD, "field 'type' is required")
            if type(event_type) is not str:
                raise _Invalid(
                    Reason.WRONG_TYPE, f"'type' must be a string, got {type(event_type).__name__}"
                )
            raise _Invalid(
                Reason.UNKNOWN_TYPE, f"'type' {event_type[:64]!r} is not one of {EVENT_TYPES}"
            )
        return Event(
            event_id=self._id(obj, "event_id"),
            member_id=self._id(obj, "member_id"),
            type=event_type,
            item_id=self._id(obj, "item_id"),
            ts=self._ts(obj.get("ts"), received_at),
            category=self._optional_id(obj, "category"),
            price=_price(obj.get("price")),
            quantity=_quantity(obj.get("quantity")),
            session_id=self._optional_id(obj, "session_id"),
        )

    def _id(self, obj: dict[str, Any], name: str) -> str:
        value = obj.get(name)
        if value is None:
            raise _Invalid(Reason.MISSING_FIELD, f"field {name!r} is required")
        return self._id_value(name, value)

    def _optional_id(self, obj: dict[str, Any], name: str) -> str | None:
        value = obj.get(name)
        return None if value is None else self._id_value(name, value)

    def _id_value(self, name: str, value: Any) -> str:
        kind = type(value)
        if kind is int:
            return str(value)
        if kind is not str:
            raise _Invalid(
                Reason.WRONG_TYPE, f"{name!r} must be a string or integer, got {kind.__name__}"
            )
        if not value:
            raise _Invalid(Reason.EMPTY_ID, f"{name!r} is empty")
        if len(value) > self._max_id:
            raise _Invalid(
                Reason.ID_TOO_LONG, f"{name!r} has {len(value)} characters, limit {self._max_id}"
            )
        return str(value)

    def _ts(self, value: Any, received_at: int | None) -> int:
        ts = _ts_value(value)
        if not self._live:
            return ts
        if ts < self._floor:
            hint = " (epoch seconds? ts must be milliseconds)" if ts in _LOOKS_LIKE_SECONDS else ""
            raise _Invalid(
                Reason.TS_TOO_OLD, f"ts {ts} is before the floor {to_iso(self._floor)}{hint}"
            )
        if received_at is not None and ts > received_at + self._tolerance:
            raise _Invalid(
                Reason.TS_IN_FUTURE,
                f"ts {to_iso(ts)} is more than {self._tolerance} ms after "
                f"the receive time {to_iso(received_at)}",
            )
        return ts


def _ts_value(value: Any) -> int:
    kind = type(value)
    ts: int
    if value is None:
        raise _Invalid(Reason.MISSING_FIELD, "field 'ts' is required")
    if kind is int or kind is float:
        ts = int(value)
    elif kind is str:
        try:
            ts = parse_ts(value)
        except ValueError as exc:
            raise _Invalid(Reason.BAD_TIMESTAMP, str(exc)) from None
    else:
        raise _Invalid(
            Reason.WRONG_TYPE, f"'ts' must be epoch ms or ISO-8601 text, got {kind.__name__}"
        )
    if not _TS_MIN <= ts <= _TS_MAX:
        raise _Invalid(Reason.BAD_TIMESTAMP, f"ts {ts} is outside the calendar (years 1..9999)")
    return ts


def _price(value: Any) -> float | None:
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:
        raise _Invalid(Reason.WRONG_TYPE, f"'price' must be a number, got {kind.__name__}")
    price = float(value)
    if not math.isfinite(price):
        raise _Invalid(Reason.NON_FINITE, f"'price' must be finite, got {value!r}")
    if price < 0:
        raise _Invalid(Reason.NEGATIVE_VALUE, f"'price' must be >= 0, got {value!r}")
    if price > MAX_PRICE:
        raise _Invalid(Reason.OUT_OF_RANGE, f"'price' must be <= {MAX_PRICE}, got {value!r}")
    return price


def _quantity(value: Any) -> int:
    if value is None:
        return 1
    if type(value) is not int:
        raise _Invalid(
            Reason.WRONG_TYPE, f"'quantity' must be an integer, got {type(value).__name__}"
        )
    if value < 1:
        raise _Invalid(Reason.NEGATIVE_VALUE, f"'quantity' must be >= 1, got {value}")
    if value > MAX_QUANTITY:
        raise _Invalid(Reason.OUT_OF_RANGE, f"'quantity' must be <= {MAX_QUANTITY}, got {value}")
    return int(value)


def _classify_json_error(raw: bytes, exc: orjson.JSONDecodeError) -> tuple[Reason, str]:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Reason.NOT_UTF8, f"payload is not UTF-8: {bad.reason} at byte {bad.start}"
    text = str(exc)
    if "infinity" in text or b"NaN" in raw or b"Infinity" in raw:
        return Reason.NON_FINITE, f"NaN and Infinity are not JSON numbers ({text})"
    return Reason.MALFORMED_JSON, f"not valid JSON: {text}"
