"""Simulated events and ground truth to Parquet or CSV, streamed in chunks with pyarrow.

Two paths to the same bytes: a `Simulator` is written from its members' columns, sorted
once with numpy and cut into record batches (no `Event` objects at all, ~10x faster);
any other iterable of `Event`s is batched `chunk_rows` at a time. Both write rows in ts
order, ties by member index, so `write_events(path, sim)` equals
`write_events(path, sim.iter_events())`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from memberpulse.models.contract import EVENT_TYPES, WIRE_FIELDS, Event
from memberpulse.streams.simulate.members import member_id
from memberpulse.streams.simulate.simulator import (
    GroundTruth,
    SimConfig,
    Simulator,
    ground_truth,
)

#: Rows per record batch (and Parquet row group): ~10 MB of columns at a time.
CHUNK_ROWS: Final = 262_144
TRUTH_SUFFIX: Final = ".truth.parquet"

EVENT_SCHEMA: Final = pa.schema(
    [
        ("event_id", pa.string()),
        ("member_id", pa.string()),
        ("type", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("quantity", pa.int32()),
        ("session_id", pa.string()),
    ]
)
assert tuple(EVENT_SCHEMA.names) == WIRE_FIELDS  # the file columns are the wire fields

# Typed from GroundTruth's annotations, so all-null columns still read back as int64.
_ARROW_TYPES: Final = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
TRUTH_SCHEMA: Final = pa.schema(
    [(f.name, _ARROW_TYPES[str(f.type).removesuffix(" | None")]) for f in fields(GroundTruth)]
)


@dataclass(frozen=True)
class SimSummary:
    """What `simulate_to_file` wrote."""

    path: Path
    truth_path: Path
    events: int
    members: int
    per_type: dict[str, int]
    start_ms: int
    end_ms: int
    purchase_only: bool


class _Sink:
    """A Parquet or CSV writer chosen by the path's suffix."""

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise ValueError(f"expected a .parquet or .csv path, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Any = (
            pq.ParquetWriter(path, EVENT_SCHEMA)
            if suffix == ".parquet"
            else pa_csv.CSVWriter(path, EVENT_SCHEMA)
        )

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


def write_events(
    path: str | Path,
    events: Simulator | Iterable[Event],
    *,
    chunk_rows: int = CHUNK_ROWS,
    require_sorted: bool = True,
) -> Counter[str]:
    """Write events to `.parquet` or `.csv`; return the count per event type.

    With `require_sorted`, an iterable whose ts goes backwards raises ValueError.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if isinstance(events, Simulator):
        return _write(Path(path), _simulator_batches(events, chunk_rows))
    return _write(Path(path), _event_batches(iter(events), chunk_rows, require_sorted))


def truth_path(events_path: str | Path) -> Path:
    """Where the truth of an events file lives: `<stem>.truth.parquet` beside it."""
    path = Path(events_path)
    if path.name.endswith(TRUTH_SUFFIX):
        return path
    return path.with_name(path.stem + TRUTH_SUFFIX)


def write_truth(path: str | Path, truths: Iterable[GroundTruth]) -> Path:
    """Write ground truth beside the events file `path`; return the truth file's path."""
    target = truth_path(path)
    rows = [astuple(t) for t in truths]
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(TRUTH_SCHEMA)
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, TRUTH_SCHEMA, strict=True)]
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=TRUTH_SCHEMA), target)
    return target


def simulate_to_file(config: SimConfig, path: str | Path) -> SimSummary:
    """Run `config`, write its events to `path` and its truth beside them."""
    truths: list[GroundTruth] = []
    counts = _write(Path(path), _simulator_batches(Simulator(config), CHUNK_ROWS, truths))
    return SimSummary(
        path=Path(path),
        truth_path=write_truth(path, truths),
        events=sum(counts.values()),
        members=config.members,
        per_type={name: counts[name] for name in EVENT_TYPES if counts[name]},
        start_ms=config.start_ms,
        end_ms=config.end_ms,
        purchase_only=config.purchase_only,
    )


def _write(path: Path, batches: Iterator[pa.RecordBatch]) -> Counter[str]:
    """Stream batches into the file; a failed write leaves no partial file behind."""
    sink = _Sink(path)
    counts: Counter[str] = Counter()
    try:
        for batch in batches:
            counts.update(_type_counts(batch))
            sink.write(batch)
    except BaseException:
        sink.close()
        path.unlink(missing_ok=True)
        raise
    sink.close()
    return counts


def _type_counts(batch: pa.RecordBatch) -> dict[str, int]:
    counted = pc.value_counts(batch.column("type")).to_pylist()
    return {entry["values"]: entry["counts"] for entry in counted}


def _event_batches(
    events: Iterator[Event], chunk_rows: int, require_sorted: bool
) -> Iterator[pa.RecordBatch]:
    last_ts: int | None = None
    written = 0
    while chunk := list(islice(events, chunk_rows)):
        columns = list(zip(*chunk, strict=True))
        ts = np.asarray(columns[4], dtype=np.int64)
        if require_sorted:
            backwards = np.flatnonzero(
                np.diff(ts, prepend=ts[0] if last_ts is None else last_ts) < 0
            )
            if len(backwards):
                at = int(backwards[0])
                raise ValueError(
                    f"events must be in ts order: event {written + at} "
                    f"({chunk[at].event_id}) has ts {ts[at]} before its predecessor"
                )
        last_ts = int(ts[-1])
        written += len(chunk)
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, EVENT_SCHEMA, strict=True)]
        yield pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


def _simulator_batches(
    sim: Simulator, chunk_rows: int, truths: list[GroundTruth] | None = None
) -> Iterator[pa.RecordBatch]:
    """All members' columns, one stable sort by ts (ties keep member order, as in
    `heapq.merge`), then record batches built with pyarrow kernels, not Python loops."""
    traces = []
    for plan, trace in sim.members():
        traces.append(trace)
        if truths is not None:
            truths.append(ground_truth(plan, trace, sim.context))
    lengths = np.array([len(t) for t in traces], dtype=np.int64)
    member = np.repeat(np.arange(len(traces)), lengths)
    local = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ts = np.concatenate([t.ts for t in traces])
    order = np.argsort(ts, kind="stable")
    columns = {
        name: np.concatenate([getattr(t, name) for t in traces])
        for name in ("kind", "item", "price", "quantity", "session")
    }
    del traces
    member_ids = pa.array([member_id(i) for i in range(sim.config.members)])
    types, item_ids = pa.array(EVENT_TYPES), pa.array(sim.catalog.item_ids)
    categories = pa.array(sim.catalog.category_ids).take(pa.array(sim.catalog.item_category))
    for start in range(0, len(order), chunk_rows):
        rows = order[start : start + chunk_rows]
        who, what = member_ids.take(member[rows]), columns["item"][rows]
        session = pc.binary_join_element_wise("s", _text(columns["session"][rows]), "")
        yield pa.RecordBatch.from_arrays(
            [
                pc.binary_join_element_wise(who, _text(local[rows]), "-"),
                who,
                types.take(columns["kind"][rows]),
                item_ids.take(what),
                pa.array(ts[rows]),
                categories.take(what),
                pa.array(columns["price"][rows]),
                pa.array(columns["quantity"][rows]),
                pc.binary_join_element_wise(who, session, "-"),
            ],
            schema=EVENT_SCHEMA,
        )


def _text(numbers: np.ndarray[Any, Any]) -> pa.Array:
    return pa.array(numbers).cast(pa.string())
