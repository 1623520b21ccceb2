"""Fitting and scoring the strong baselines on the model's own split.

`train` fits them on exactly what the model may see and saves them in the model
directory; `evaluate` scores them on the same samples as the model, so every report
compares like with like:

- next item: SASRec (`models/sasrec.py`), a first-order Markov chain
  (`baselines.MarkovChain`), popularity and "recent items" (always);
- churn: the RFM logistic regression (always) and BG/NBD (`models/clv.py`);
- spend: BG/NBD × Gamma-Gamma.

What the next-item baselines see, in log rows: each member's visible rows end at `stop`
(exclusive; `visible_stops`). The last visible row is their validation target, the rows
before it are trained on, as SASRec's reference code splits a sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from memberpulse.models import metrics as m
from memberpulse.models import sasrec
from memberpulse.models.baselines import MarkovChain
from memberpulse.models.clv import CustomerBase, summarise
from memberpulse.models.config import Protocol, SASRecConfig
from memberpulse.models.dataset import RFM_COLUMNS, Samples
from memberpulse.models.eventlog import EventLog
from memberpulse.models.features import FeatureSpec

ARRAYS_FILE: Final = "baselines.npz"
MARKOV_TOP_M: Final = 100  # follow-ups kept per item; beyond them popularity ranks
HAS_PURCHASE: Final = RFM_COLUMNS.index("has_purchase")


@dataclass
class NextItemBaselines:
    """The trained next-item baselines (either may be absent)."""

    markov: MarkovChain | None = None
    sasrec: sasrec.FittedSASRec | None = None

    def save(self, directory: Path) -> None:
        """`baselines.npz` (Markov) and `sasrec.pt` in a model directory."""
        if self.markov is not None:
            arrays: dict[str, Any] = self.markov.to_arrays()
            np.savez_compressed(directory / ARRAYS_FILE, allow_pickle=False, **arrays)
        if self.sasrec is not None:
            self.sasrec.save(directory)

    @classmethod
    def load(cls, directory: Path) -> NextItemBaselines:
        """What a model directory holds (nothing for a model trained without them)."""
        markov = None
        if (directory / ARRAYS_FILE).exists():
            with np.load(directory / ARRAYS_FILE) as arrays:
                markov = MarkovChain.from_arrays(arrays)
        return cls(markov, sasrec.FittedSASRec.load(directory))


def catalogue_positions(log: EventLog, spec: FeatureSpec) -> NDArray[np.int64]:
    """Every log row's catalogue position (−1: outside the catalogue)."""
    position = {item: i for i, item in enumerate(spec.items)}
    per_name = np.array([position.get(name, -1) for name in log.item_names], dtype=np.int64)
    return per_name[log.items]


def visible_stops(log: EventLog, until: int | None, protocol: Protocol) -> NDArray[np.int64]:
    """Per member, the exclusive end row of what a model may see: everything but the last
    event (leave-one-out) or every event before `until` (time)."""
    if protocol == "leave-one-out":
        return np.maximum(log.offsets[1:] - 1, log.offsets[:-1])
    return rows_before(log, until if until is not None else log.end + 1)


def rows_before(log: EventLog, at: int) -> NDArray[np.int64]:
    """Per member, the exclusive end row of its events with ts < `at`."""
    before = np.concatenate(([0], np.cumsum(log.ts < at)))
    counts = before[log.offsets[1:]] - before[log.offsets[:-1]]
    stops: NDArray[np.int64] = log.offsets[:-1] + counts
    return stops


def fit_next_item(
    log: EventLog,
    spec: FeatureSpec,
    stops: NDArray[np.int64],
    item_counts: NDArray[np.int64],
    config: SASRecConfig,
    device: torch.device,
    with_sasrec: bool,
    report: Callable[[str], None] | None = None,
) -> NextItemBaselines:
    """Markov chain (always) and SASRec (when asked) on the visible rows."""
    positions = catalogue_positions(log, spec)
    starts = log.offsets[:-1]
    n_items = len(spec.items)
    # Markov: consecutive pairs whose second row is trained on (before the validation row).
    owner = np.repeat(np.arange(len(log.members)), np.diff(log.offsets))
    nxt = np.arange(1, len(log))
    trained = (owner[nxt] == owner[nxt - 1]) & (nxt < stops[owner[nxt]] - 1)
    markov = MarkovChain.fit(
        positions[nxt - 1][trained], positions[nxt][trained], n_items, MARKOV_TOP_M, item_counts
    )
    if not with_sasrec:
        return NextItemBaselines(markov, None)
    # Members with at least two visible events: the last one validates, the rest train
    # (`fit` drops windows left without a target).
    valid_members = np.flatnonzero(stops - starts >= 2)
    train_windows = sasrec.windows(
        positions,
        starts[valid_members],
        stops[valid_members] - 1,
        config.max_length + 1,
        n_items,
    )
    valid_inputs = sasrec.windows(
        positions, starts[valid_members], stops[valid_members] - 1, config.max_length, n_items
    )
    valid_targets = positions[stops[valid_members] - 1]
    fitted = sasrec.fit(train_windows, valid_inputs, valid_targets, n_items, config, device, report)
    return NextItemBaselines(markov, fitted)


def next_item_ranks(
    baselines: NextItemBaselines,
    log: EventLog,
    spec: FeatureSpec,
    samples: Samples,
    input_stops: NDArray[np.int64],
    targets: NDArray[np.int64],
    item_counts: NDArray[np.int64],
    seen: m.SeenItems | None = None,
) -> dict[str, NDArray[np.int64]]:
    """Target ranks of each trained next-item baseline for `samples` (their rows).

    `input_stops`: per sample, the exclusive end row of its input sequence in `log`;
    `seen`: per sample, items left out of the rankings.
    """
    out: dict[str, NDArray[np.int64]] = {}
    if baselines.markov is not None:
        items = samples.features.items[:, -1].astype(np.int64)
        present = samples.features.mask[:, -1]
        last = np.where(present & (items >= spec.first_item), items - spec.first_item, -1)
        markov = baselines.markov
        out["markov"] = markov.ranks(last, targets, item_counts)
        if seen is not None:
            out["markov"] = m.ranks_without_seen(
                out["markov"],
                targets,
                seen,
                lambda rows, items: markov.ranks(last[rows], items, item_counts),
            )
    if baselines.sasrec is not None:
        positions = catalogue_positions(log, spec)
        length = baselines.sasrec.model.config.max_length
        starts = log.offsets[:-1][samples.member]
        inputs = sasrec.windows(positions, starts, input_stops, length, len(spec.items))
        out["sasrec"] = baselines.sasrec.ranks(inputs, targets, seen)
    return out


def fit_customer_base(
    log: EventLog, until: int, train_set: Samples, members: NDArray[np.int64]
) -> CustomerBase | None:
    """BG/NBD + Gamma-Gamma on `members`' purchases before `until`, with the training
    samples' churn rate and spend of members who never bought (None: nobody bought)."""
    never = train_set.rfm[:, HAS_PURCHASE] == 0
    churn = float(train_set.churn[never].mean()) if never.any() else 1.0
    spend = float(train_set.spend[never].mean()) if never.any() else 0.0
    try:
        return CustomerBase.fit(log, until, members, churn, spend)
    except ValueError:
        return None


def customer_base_scores(
    base: CustomerBase, log: EventLog, at: int, samples: Samples, horizon_days: float
) -> dict[str, NDArray[np.float64] | None]:
    """BG/NBD churn probabilities and BG/NBD × Gamma-Gamma spend for `samples` at `at`."""
    summary = summarise(log, at, samples.member)
    return {"churn": base.churn(summary, horizon_days), "spend": base.spend(summary, horizon_days)}


def load_customer_base(baselines: dict[str, Any]) -> CustomerBase | None:
    """The fitted BG/NBD stored in `baselines.json`, if any."""
    data = baselines.get("bgnbd")
    return None if data is None else CustomerBase.from_dict(data)
