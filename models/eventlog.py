"""Event logs on disk (Parquet, CSV, JSONL) → one columnar, member-grouped `EventLog`.

Required columns: member_id, ts, type, item_id; optional: event_id, category, price,
quantity, session_id. `ts` may be epoch milliseconds, an Arrow timestamp or ISO-8601 text.
Rows that cannot be events (no member, unknown type, negative price, ...) are skipped and
counted per reason, never silently: `EventLog.skipped` says what was dropped and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from numpy.typing import NDArray

from memberpulse.models.contract import EVENT_TYPES, Event
from memberpulse.models.timeutil import parse_ts

REQUIRED: Final = ("member_id", "ts", "type", "item_id")
OPTIONAL: Final = ("event_id", "category", "price", "quantity")
READERS: Final = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}


@dataclass(frozen=True, eq=False)
class EventLog:
    """All events of a log, sorted by (member, ts); member m owns rows offsets[m]:offsets[m+1]."""

    members: list[str]
    offsets: NDArray[np.int64]
    ts: NDArray[np.int64]
    types: NDArray[np.int8]  # index into EVENT_TYPES
    items: NDArray[np.int32]  # index into item_names
    item_names: list[str]
    categories: NDArray[np.int32]  # index into category_names, -1 = none
    category_names: list[str]
    prices: NDArray[np.float64]  # NaN = none
    quantities: NDArray[np.int32]
    event_ids: list[str]
    skipped: dict[str, int]

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def start(self) -> int:
        """Earliest event time."""
        return int(self.ts.min())

    @property
    def end(self) -> int:
        """Latest event time."""
        return int(self.ts.max())

    def rows(self, member: int) -> slice:
        """The row range of member index `member`."""
        return slice(int(self.offsets[member]), int(self.offsets[member + 1]))

    def events(self, member: int, stop: int | None = None) -> list[Event]:
        """Member `member`'s events (rows up to `stop`, exclusive) as `Event`s, in ts order."""
        rows = self.rows(member)
        end = rows.stop if stop is None else stop
        name, items, cats = self.members[member], self.item_names, self.category_names
        return [
            Event(
                self.event_ids[row],
                name,
                EVENT_TYPES[self.types[row]],
                items[self.items[row]],
                int(self.ts[row]),
                None if self.categories[row] < 0 else cats[self.categories[row]],
                None if np.isnan(self.prices[row]) else float(self.prices[row]),
                int(self.quantities[row]),
            )
            for row in range(rows.start, end)
        ]

    def without_last(self, n: int) -> EventLog:
        """The log without each member's last `n` events (members left empty disappear)."""
        counts = np.diff(self.offsets)
        keep_counts = np.maximum(counts - n, 0)
        rank = np.arange(len(self)) - np.repeat(self.offsets[:-1], counts)
        keep = rank < np.repeat(keep_counts, counts)
        kept_members = np.flatnonzero(keep_counts > 0)
        return replace(
            self,
            members=[self.members[m] for m in kept_members.tolist()],
            offsets=np.concatenate(([0], np.cumsum(keep_counts[kept_members]))).astype(np.int64),
            ts=self.ts[keep],
            types=self.types[keep],
            items=self.items[keep],
            categories=self.categories[keep],
            prices=self.prices[keep],
            quantities=self.quantities[keep],
            event_ids=[e for e, k in zip(self.event_ids, keep.tolist(), strict=True) if k],
        )

    def iter_members(self) -> Iterator[int]:
        """Member indexes 0 … n − 1."""
        return iter(range(len(self.members)))


def read_table(path: str | Path) -> pa.Table:
    """Read a Parquet, CSV or JSON-lines file into an Arrow table."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown event log format; expected one of {sorted(READERS)}")
    if not path.exists():
        raise FileNotFoundError(f"event log {path} does not exist")
    if kind == "parquet":
        return pq.read_table(path)
    if kind == "csv":
        strings = dict.fromkeys(("member_id", "item_id", "event_id", "category"), pa.string())
        return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(column_types=strings))
    return pa_json.read_json(path)


def load_events(path: str | Path) -> EventLog:
    """Load and validate an event log file."""
    return from_table(read_table(path), source=str(path))


def from_table(table: pa.Table, source: str = "table") -> EventLog:
    """Validate an Arrow table of events and group it by member."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; an event log needs {list(REQUIRED)} "
            f"(optional: {list(OPTIONAL)}), found {table.column_names}"
        )
    n = table.num_rows
    member = _text(table["member_id"])
    item = _text(table["item_id"])
    kind = _text(table["type"])
    ts = _epoch_ms(table["ts"])
    price = _column(table, "price", pa.float64(), n)
    quantity = _column(table, "quantity", pa.int64(), n)
    checks = {
        "no member_id": pc.invert(pc.fill_null(pc.greater(pc.utf8_length(member), 0), False)),
        "no item_id": pc.is_null(item),
        "no ts": pc.is_null(ts),
        "unknown type": pc.invert(pc.fill_null(pc.is_in(kind, pa.array(EVENT_TYPES)), False)),
        "bad price": pc.fill_null(
            pc.or_(pc.less(price, 0.0), pc.invert(pc.is_finite(price))), False
        ),
        "bad quantity": pc.fill_null(pc.less(quantity, 1), False),
    }
    bad = np.zeros(n, dtype=bool)
    skipped: dict[str, int] = {}
    for reason, mask in checks.items():
        flags = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) & ~bad
        if flags.any():
            skipped[reason] = int(flags.sum())
        bad |= flags
    keep = pa.array(~bad)
    member, item, kind = (pc.filter(c, keep) for c in (member, item, kind))
    ts_np = pc.filter(ts, keep).to_numpy().astype(np.int64)
    if ts_np.size == 0:
        raise ValueError(f"{source}: no valid events (skipped: {skipped or 'none'})")

    member_codes, member_names = _codes(member)
    order = np.lexsort((ts_np, member_codes))
    counts = np.bincount(member_codes, minlength=len(member_names))
    item_codes, item_names = _codes(item)
    category = pc.filter(_column(table, "category", pa.string(), n), keep)
    category_codes, category_names = _codes(category)
    event_ids = _event_ids(table, keep, member)
    type_codes = pc.index_in(kind, pa.array(EVENT_TYPES)).to_numpy().astype(np.int8)
    prices = pc.filter(price, keep).to_numpy(zero_copy_only=False).astype(np.float64)
    quantities = pc.fill_null(pc.filter(quantity, keep), 1).to_numpy().astype(np.int32)
    return EventLog(
        members=member_names,
        offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        ts=ts_np[order],
        types=type_codes[order],
        items=item_codes[order],
        item_names=item_names,
        categories=category_codes[order],
        category_names=category_names,
        prices=prices[order],
        quantities=quantities[order],
        event_ids=[event_ids[i] for i in order.tolist()],
        skipped=skipped,
    )


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids as text (numeric ids of order logs become their decimal text)."""
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _column(table: pa.Table, name: str, kind: pa.DataType, n: int) -> pa.ChunkedArray:
    if name in table.column_names:
        return pc.cast(table[name], kind)
    return pa.chunked_array([pa.nulls(n, kind)])


def _epoch_ms(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), pa.int64())
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    texts = column.to_pylist()
    return pa.chunked_array([pa.array([None if t is None else parse_ts(t) for t in texts])])


def _codes(column: pa.ChunkedArray) -> tuple[NDArray[np.int32], list[str]]:
    """Dictionary codes (−1 for null) and the dictionary."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(pc.is_null(encoded.indices).to_numpy(zero_copy_only=False), -1, codes)
    return codes.astype(np.int32), encoded.dictionary.to_pylist()


def _event_ids(table: pa.Table, keep: pa.Array, member: pa.ChunkedArray) -> list[str]:
    if "event_id" in table.column_names:
        ids: list[str | None] = pc.filter(_text(table["event_id"]), keep).to_pylist()
    else:
        ids = [None] * len(member)
    members: list[str] = member.to_pylist()
    # A log without event ids gets stable ones: "<member>-row<n>" (n-th valid row).
    return [i if i else f"{m}-row{n}" for n, (i, m) in enumerate(zip(ids, members, strict=True))]
