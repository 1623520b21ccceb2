"""The wire contract shared by the decoder, the simulator, state and training: the input
event, its JSON bytes, and the reason codes of the dead-letter topic.

An `Event` is what survives validation: ids are strings (numeric ids from order logs are
normalised to their decimal text), `ts` is epoch milliseconds UTC, money is a unit price.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, NamedTuple

import orjson

CLICK: Final = "click"
BROWSE: Final = "browse"
PURCHASE: Final = "purchase"
ADD_TO_CART: Final = "add_to_cart"
SEARCH: Final = "search"

#: Every event type the contract accepts, in a fixed order (the order is part of the
#: feature schema: the encoder maps a type to its index here).
EVENT_TYPES: Final[tuple[str, ...]] = (CLICK, BROWSE, PURCHASE, ADD_TO_CART, SEARCH)

#: Field names of the JSON wire format, in the order they are documented.
WIRE_FIELDS: Final[tuple[str, ...]] = (
    "event_id",
    "member_id",
    "type",
    "item_id",
    "ts",
    "category",
    "price",
    "quantity",
    "session_id",
)


class Event(NamedTuple):
    """One validated member event (click, browse, purchase, ...).

    A NamedTuple rather than a frozen dataclass: it is built once per decoded event, and
    construction costs 0.5 µs against 2.7 µs for a frozen slotted dataclass (measured on
    this project's CI machine); immutability and typed fields are the same.
    """

    event_id: str
    member_id: str
    type: str
    item_id: str
    ts: int
    category: str | None = None
    price: float | None = None
    quantity: int = 1
    session_id: str | None = None

    def to_wire(self) -> dict[str, object]:
        """The JSON object for this event, optional fields left out when unset."""
        wire: dict[str, object] = {
            "event_id": self.event_id,
            "member_id": self.member_id,
            "type": self.type,
            "item_id": self.item_id,
            "ts": self.ts,
        }
        if self.category is not None:
            wire["category"] = self.category
        if self.price is not None:
            wire["price"] = self.price
        if self.quantity != 1:
            wire["quantity"] = self.quantity
        if self.session_id is not None:
            wire["session_id"] = self.session_id
        return wire

    @property
    def amount(self) -> float:
        """Money spent by this event: unit price times quantity for purchases, else 0."""
        if self.type != PURCHASE or self.price is None:
            return 0.0
        return self.price * self.quantity


class Reason(StrEnum):
    """Why a record was dead-lettered (the `reason` field of a DLQ record): an input's, or
    an output the broker refused for good (`output_refused`)."""

    OVERSIZE = "oversize"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NON_FINITE = "non_finite"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_ID = "empty_id"
    ID_TOO_LONG = "id_too_long"
    UNKNOWN_TYPE = "unknown_type"
    NEGATIVE_VALUE = "negative_value"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TS_TOO_OLD = "ts_too_old"
    TS_IN_FUTURE = "ts_in_future"
    TOO_LATE = "too_late"
    KEY_MISMATCH = "key_mismatch"
    OUTPUT_REFUSED = "output_refused"  # an output the broker refused for good (too large)
    PROCESSING_FAILED = "processing_failed"  # the member's batch failed, the rest did not


def encode_event(event: Event) -> bytes:
    """The wire bytes of an event (what producers send and the decoder accepts)."""
    return orjson.dumps(event.to_wire())
