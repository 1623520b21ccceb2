"""`memberpulse evaluate`: score every member as of time T with events before T only.

Labels come from [T, T + H). `active_days` D adds the same report restricted to members
active in the D days before T. With the `leave-one-out` protocol the next-item metrics
follow the sequential-recommendation literature instead (each member's last event is the
target, full ranking over the catalogue); churn and spend stay on the time protocol.
`exclude_seen` leaves each member's earlier items out of every next-item ranking.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from memberpulse.models import baseline_suite
from memberpulse.models.bundle import Bundle
from memberpulse.models.config import Protocol, TrainConfig
from memberpulse.models.dataset import Samples, build_prefix_samples, build_samples
from memberpulse.models.eventlog import EventLog
from memberpulse.models.metrics import SeenItems
from memberpulse.models.report import External, evaluate_samples
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY, to_iso
from memberpulse.models.train import pick_device

LOO_TARGET: Final = 1  # leave-one-out: the last event is the test target


def default_at(log: EventLog, horizon_days: int) -> int:
    """The log's last timestamp minus the horizon: the latest T with a full label window."""
    return log.end - horizon_days * MS_PER_DAY


def evaluate(
    bundle: Bundle,
    log: EventLog,
    at: int | None = None,
    horizon_days: int | None = None,
    active_days: float | None = None,
    protocol: Protocol = "time",
    exclude_seen: bool = False,
) -> dict[str, Any]:
    """The evaluation report (the JSON of `memberpulse evaluate --json`).

    `exclude_seen`: every next-item ranking leaves out the items the member had before
    the target (the full-sort convention of RecBole and of SASRec's own evaluation, for
    logs where an item is never a member's target twice); by default everything is
    ranked, repeats included."""
    horizon = bundle.horizon_days if horizon_days is None else horizon_days
    at = default_at(log, horizon) if at is None else at
    until = int(bundle.config["until"])
    if at < until and protocol == "time":
        raise ValueError(
            f"--at {to_iso(at)} is before the end of the model's training data "
            f"({to_iso(until)}): its features or labels were seen in training"
        )
    if at + horizon * MS_PER_DAY > log.end + 1:
        raise ValueError(
            f"the log ends at {to_iso(log.end)}, before T + H = "
            f"{to_iso(at + horizon * MS_PER_DAY)}: the label window is incomplete"
        )
    state = StateSpec(**bundle.config["state"])
    config = TrainConfig()  # evaluation batch size only
    device = pick_device()
    next_baselines = baseline_suite.NextItemBaselines.load(bundle.path)
    counts = np.asarray(bundle.baselines["item_counts"], dtype=np.int64)
    samples = build_samples(log, [at], horizon, bundle.spec, state)
    external = _external(bundle, log, samples, at, horizon)
    stops = baseline_suite.rows_before(log, at)[samples.member]
    seen = _seen(log, bundle, samples, stops) if exclude_seen else None
    external.ranks.update(
        baseline_suite.next_item_ranks(
            next_baselines,
            log,
            bundle.spec,
            samples,
            stops,
            np.where(samples.next_item >= 0, samples.next_item, -1),
            counts,
            seen,
        )
    )
    if next_baselines.sasrec is not None:
        external.info["sasrec"] = {"epochs_run": next_baselines.sasrec.epochs_run}
    report, _ = evaluate_samples(
        bundle.model, samples, bundle.spec, bundle.baselines, config, device, external, seen
    )
    if active_days is not None:
        rows = np.flatnonzero(samples.idle_days <= active_days)
        sub, _ = evaluate_samples(
            bundle.model,
            samples.take(rows),
            bundle.spec,
            bundle.baselines,
            config,
            device,
            external.take(rows),
            None if seen is None else seen.take(rows),
        )
        report["active"] = {"days": active_days, **sub}
    if protocol == "leave-one-out":
        loo = leave_one_out_samples(log, bundle, state)
        loo_external = External(info=external.info)
        loo_stops = log.offsets[1:][loo.member] - LOO_TARGET
        loo_seen = _seen(log, bundle, loo, loo_stops) if exclude_seen else None
        loo_external.ranks.update(
            baseline_suite.next_item_ranks(
                next_baselines,
                log,
                bundle.spec,
                loo,
                loo_stops,
                np.where(loo.next_item >= 0, loo.next_item, -1),
                counts,
                loo_seen,
            )
        )
        loo_report, _ = evaluate_samples(
            bundle.model,
            loo,
            bundle.spec,
            bundle.baselines,
            config,
            device,
            loo_external,
            loo_seen,
        )
        report["next_item"] = loo_report["next_item"]
        if at < until:  # the model saw [T, until): churn and spend there would flatter it
            for task in ("churn", "spend"):
                report[task] = {"skipped": f"T {to_iso(at)} lies in the training window"}
        report["verdicts"] = [v for v in loo_report["verdicts"] if v.startswith("next item")] + [
            v for v in report["verdicts"] if not v.startswith("next item") and at >= until
        ]
    report["next_item"]["exclude_seen"] = exclude_seen
    report.update(at=to_iso(at), horizon_days=horizon, protocol=protocol, model=str(bundle.path))
    return report


def _seen(log: EventLog, bundle: Bundle, samples: Samples, stops: NDArray[np.int64]) -> SeenItems:
    """Per sample, the catalogue items of its member's log rows before `stops`."""
    positions = baseline_suite.catalogue_positions(log, bundle.spec)
    return SeenItems.of_rows(positions, log.offsets[:-1][samples.member], stops)


def _external(bundle: Bundle, log: EventLog, samples: Samples, at: int, horizon: int) -> External:
    """BG/NBD churn and BG/NBD × Gamma-Gamma spend at `at`, when the model has them."""
    external = External()
    base = baseline_suite.load_customer_base(bundle.baselines)
    if base is not None:
        scores = baseline_suite.customer_base_scores(base, log, at, samples, horizon)
        external.churn["bgnbd"] = scores["churn"]  # type: ignore[assignment]
        if scores["spend"] is not None:
            external.spend["bgnbd_gg"] = scores["spend"]
    return external


def leave_one_out_samples(log: EventLog, bundle: Bundle, state: StateSpec) -> Samples:
    """One sample per member with ≥ 2 events: its events before the last (log order), as
    of the last one's time; the last one is the target. (Training's windows are built the
    same way, `dataset.build_prefix_samples`.)"""
    lengths = np.diff(log.offsets)
    members = np.flatnonzero(lengths > LOO_TARGET)
    if not len(members):
        raise ValueError("leave-one-out needs members with at least two events")
    return build_prefix_samples(
        log, members, lengths[members] - LOO_TARGET, bundle.horizon_days, bundle.spec, state
    )
