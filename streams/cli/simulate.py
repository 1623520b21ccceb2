"""`memberpulse simulate`: simulated members into files or, live, into Kafka."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from memberpulse.models.contract import Event
from memberpulse.models.timeutil import parse_ts, to_iso
from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter
from memberpulse.streams.settings import Settings

if TYPE_CHECKING:
    from memberpulse.streams.local.live import LiveSummary

Members = Annotated[int, typer.Option(min=1, help="Number of simulated members.")]
Seed = Annotated[int, typer.Option(help="Random seed (same seed, same members and events).")]
BadFraction = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Fraction of events corrupted on purpose.")
]


def _ts_option(value: str | None) -> int | None:
    return None if value is None else parse_ts(value)


def simulate(
    ctx: typer.Context,
    to_file: Annotated[
        Path | None,
        typer.Option(help="Write events here (.parquet or .csv) + <stem>.truth.parquet."),
    ] = None,
    to_kafka: Annotated[
        bool, typer.Option(help="Produce keyed events to the input topics.")
    ] = False,
    members: Members = 20_000,
    days: Annotated[int, typer.Option(min=1, help="Days of history (file mode).")] = 120,
    seed: Seed = 0,
    purchase_only: Annotated[bool, typer.Option(help="Only purchases, like an order log.")] = False,
    bad_fraction: BadFraction = 0.0,
    end: Annotated[
        str | None, typer.Option(help="End of the window (ISO-8601 or epoch ms); file mode.")
    ] = None,
    rate: Annotated[float, typer.Option(min=1, help="Kafka mode: at most R events/s.")] = 1000.0,
    seconds: Annotated[float, typer.Option(min=0.1, help="Kafka mode: run length.")] = 60.0,
    speed: Annotated[
        float, typer.Option(min=1, help="Kafka mode: simulated seconds per wall second.")
    ] = 3600.0,
) -> None:
    """Simulate members: to a file (history ending at a fixed date) or live into Kafka."""
    if (to_file is None) == (not to_kafka):
        raise typer.BadParameter("give exactly one of --to-file PATH or --to-kafka")
    out = Reporter()
    if to_file is not None:
        _to_file(out, to_file, members, days, seed, purchase_only, bad_fraction, _ts_option(end))
        return
    settings = context.settings(ctx)
    summary = _to_kafka(
        out, settings, members, seed, purchase_only, bad_fraction, rate, seconds, speed
    )
    if summary.sent == 0:
        raise typer.Exit(1)


def _to_file(
    out: Reporter,
    path: Path,
    members: int,
    days: int,
    seed: int,
    purchase_only: bool,
    bad_fraction: float,
    end_ms: int | None,
) -> None:
    from memberpulse.streams.simulate import (
        DEFAULT_END_MS,
        SimConfig,
        Simulator,
        simulate_to_file,
        write_events,
        write_truth,
    )

    config = SimConfig(
        members=members,
        days=days,
        seed=seed,
        purchase_only=purchase_only,
        end_ms=DEFAULT_END_MS if end_ms is None else end_ms,
    )
    started = time.perf_counter()
    if bad_fraction > 0:
        simulator = Simulator(config)
        events = _with_bad_rows(simulator.iter_events(), bad_fraction, seed)
        written = sum(write_events(path, events).values())
        truth = write_truth(path, simulator.truth())
    else:
        summary = simulate_to_file(config, path)
        written, truth = summary.events, summary.truth_path
    out.line(
        f"wrote {written:,} events of {members:,} members over {days} days ending "
        f"{to_iso(config.end_ms)} to {path} in {time.perf_counter() - started:.1f} s"
    )
    out.line(f"ground truth: {truth}")


def _with_bad_rows(events: Iterator[Event], fraction: float, seed: int) -> Iterator[Event]:
    if fraction <= 0:
        yield from events
        return
    from memberpulse.streams.simulate.bad import corrupt_event

    rng = np.random.default_rng([seed, 0xBAD])
    for event in events:
        yield corrupt_event(event, rng) if rng.random() < fraction else event


def _to_kafka(
    out: Reporter,
    settings: Settings,
    members: int,
    seed: int,
    purchase_only: bool,
    bad_fraction: float,
    rate: float,
    seconds: float,
    speed: float,
) -> LiveSummary:
    from memberpulse.streams.local.live import plan_live, stream_members
    from memberpulse.streams.worker.kafka import wait_for_broker

    wait_for_broker(settings.kafka)
    plan = plan_live(seconds=seconds, speed=speed, rate=rate)
    out.line(
        f"producing to {settings.kafka.bootstrap}: {members:,} members, simulated "
        f"{to_iso(plan.sim_start_ms)} → {to_iso(plan.sim_end_ms)} ({speed:g}× real time), "
        f"at most {rate:g} events/s for {seconds:g} s"
    )
    with out.progress("events", total=None) as progress:
        summary = stream_members(
            settings, plan, members, seed, purchase_only, bad_fraction, progress
        )
    out.line(
        f"sent {summary.sent:,} events ({summary.sent / max(summary.elapsed_s, 1e-9):,.0f}/s), "
        f"delivered {summary.delivered:,}, failed {summary.failed}, "
        f"corrupted on purpose {sum(summary.bad.values()):,}"
        + (
            f"; rate cap reached, behind by up to {summary.max_lag_s:.1f} s"
            if summary.cut_short
            else ""
        )
    )
    return summary


def register(app: typer.Typer) -> None:
    """Add `simulate` to the CLI."""
    app.command("simulate")(simulate)
