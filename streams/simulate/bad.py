"""Bad input on purpose: corrupt a valid event in one of the ways the decoder must catch.

Each corruption returns the bytes and the `Reason` the decoder must give them, so the
simulator's `--bad-fraction` doubles as an end-to-end check of the dead-letter path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson

from memberpulse.models.contract import Event, Reason
from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_SECOND

Corruption = Callable[[dict[str, Any], int], bytes]


def _dumps(wire: dict[str, Any]) -> bytes:
    return orjson.dumps(wire)


def _truncated(wire: dict[str, Any], _: int) -> bytes:
    raw = _dumps(wire)
    return raw[: len(raw) // 2]


def _not_utf8(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire).replace(b'"item_id":"', b'"item_id":"\xff\xfe', 1)


def _nan_price(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire | {"price": 0.0}).replace(b'"price":0.0', b'"price":NaN', 1)


def _missing_member(wire: dict[str, Any], _: int) -> bytes:
    return _dumps({k: v for k, v in wire.items() if k != "member_id"})


def _wrong_type(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire | {"price": "12.50"})


def _negative_price(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire | {"price": -abs(float(wire.get("price") or 1.0))})


def _unknown_type(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire | {"type": "teleport"})


def _seconds_not_ms(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire | {"ts": int(wire["ts"]) // MS_PER_SECOND})


def _in_future(wire: dict[str, Any], _: int) -> bytes:
    # In the future of the wall clock, which is what the decoder checks against: in
    # compressed time the simulated clock runs weeks behind it, and "ts + 30 days" alone
    # was a valid event a month ahead of the member's others, making every later event of
    # theirs too late (~1-2% of a demo's events).
    return _dumps(
        wire | {"ts": max(int(wire["ts"]), int(time.time() * MS_PER_SECOND)) + 30 * MS_PER_DAY}
    )


def _oversize(wire: dict[str, Any], max_bytes: int) -> bytes:
    return _dumps(wire | {"note": "x" * max_bytes})


def _empty_member(wire: dict[str, Any], _: int) -> bytes:
    return _dumps(wire | {"member_id": ""})


def _array(wire: dict[str, Any], _: int) -> bytes:
    return orjson.dumps([wire])


CORRUPTIONS: Final[dict[Reason, Corruption]] = {
    Reason.MALFORMED_JSON: _truncated,
    Reason.NOT_UTF8: _not_utf8,
    Reason.NON_FINITE: _nan_price,
    Reason.MISSING_FIELD: _missing_member,
    Reason.WRONG_TYPE: _wrong_type,
    Reason.NEGATIVE_VALUE: _negative_price,
    Reason.UNKNOWN_TYPE: _unknown_type,
    Reason.TS_TOO_OLD: _seconds_not_ms,
    Reason.TS_IN_FUTURE: _in_future,
    Reason.OVERSIZE: _oversize,
    Reason.EMPTY_ID: _empty_member,
    Reason.NOT_AN_OBJECT: _array,
}


def corrupt(event: Event, rng: np.random.Generator, max_bytes: int) -> tuple[bytes, Reason]:
    """A corrupted encoding of `event` and the reason the decoder must reject it for."""
    reasons = list(CORRUPTIONS)
    reason = reasons[int(rng.integers(len(reasons)))]
    return CORRUPTIONS[reason](event.to_wire(), max_bytes), reason


def corrupt_event(event: Event, rng: np.random.Generator) -> Event:
    """An event with an invalid value that still fits typed file columns (what a
    dataset loader must refuse): empty member, unknown type, negative price, zero quantity.
    """
    kind = int(rng.integers(4))
    if kind == 0:
        return event._replace(member_id="")
    if kind == 1:
        return event._replace(type="teleport")
    if kind == 2:
        return event._replace(price=-abs(event.price or 1.0))
    return event._replace(quantity=0)
