"""`memberpulse demo` (what `make run` runs): the stack, simulated members, events flowing.

Brings the local stack up (or reuses a running one), streams simulated members into the
input topics in compressed time, and watches them arrive: per-second lines of what was
sent, what was read back, and which records the decoder dead-letters and why. It checks
that every record sent was read back and every corrupted one was caught, then stops the
stack it started. Before that it makes sure a model is ready (the cached default model,
trained once on simulated members). Later issues extend it into the full scoring demo.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_SECOND, to_iso
from memberpulse.streams import launcher
from memberpulse.streams.console import Reporter
from memberpulse.streams.flow import FlowCounts, FlowWatcher
from memberpulse.streams.settings import Settings, load_settings

_READBACK_TIMEOUT_S = 30.0


class _FlowLines:
    """A progress sink printing one line per report: sent vs read back, by topic."""

    def __init__(self, out: Reporter, watcher: FlowWatcher, settings: Settings) -> None:
        self._out = out
        self._watcher = watcher
        self._settings = settings
        self._sent = 0
        self._started = time.monotonic()

    def advance(self, amount: int, note: str = "") -> None:
        self._sent += amount
        elapsed = time.monotonic() - self._started
        self._out.line(
            f"t+{elapsed:4.1f}s  sent {self._sent:>7,}  "
            + _describe(self._watcher.snapshot(), self._settings)
        )


def _describe(counts: FlowCounts, settings: Settings) -> str:
    topics = "  ".join(
        f"{name.rsplit('.', 1)[-1]} {counts.per_topic[name]:>6,}" for name in settings.input_topics
    )
    rejected = sum(counts.rejected.values())
    return f"read {counts.total:>7,} ({topics})  valid {counts.valid:,}  dead-lettered {rejected:,}"


def _model_ready(out: Reporter, settings: Settings) -> None:
    from memberpulse.streams.default_model import (
        READY_FILE,
        default_model_dir,
        ensure_default_model,
    )

    if not (default_model_dir(settings) / READY_FILE).exists():
        out.line("no default model yet: simulating members and training a small one (once)")
    model = ensure_default_model(settings, on_progress=lambda p: _epoch_line(out, p))
    how = f"trained in {model.seconds:.0f} s" if model.trained_now else "cached"
    out.line(f"model ready ({how}): {model.path}")


def _epoch_line(out: Reporter, progress: Any) -> None:
    if progress.step == progress.steps:
        out.line(f"  {progress.message}")


def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(min=1, help="How long to stream.")] = 20.0,
    rate: Annotated[float, typer.Option(min=1, help="At most this many events/s.")] = 5000.0,
    speed: Annotated[
        float, typer.Option(min=1, help="Simulated seconds per wall second.")
    ] = 60_480.0,
    members: Annotated[int, typer.Option(min=1, help="Simulated members.")] = 3_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    bad_fraction: Annotated[
        float, typer.Option(min=0, max=1, help="Fraction corrupted on purpose.")
    ] = 0.01,
    keep_stack: Annotated[bool, typer.Option(help="Leave the stack running afterwards.")] = False,
) -> None:
    """Run the local demo: stack up, simulated members streaming through it, stack down."""
    from memberpulse.streams.cli import CliState
    from memberpulse.streams.cli_simulate import stream_members
    from memberpulse.streams.simulate.live import plan_live

    state = ctx.find_root().obj
    assert isinstance(state, CliState)
    base = load_settings(state.overrides)
    out = Reporter(interactive=False)
    _model_ready(out, base)
    info = launcher.up(base)
    settings = info.apply_to(base)
    out.line(
        f"stack {'reused' if info.already_running else 'up'} under {base.home}: "
        f"kafka {settings.kafka_bootstrap}, redis {info.redis_url()}"
    )
    ok = False
    try:
        plan = plan_live(seconds=seconds, speed=speed, rate=rate)
        span_days = (plan.sim_end_ms - plan.sim_start_ms) / MS_PER_DAY
        out.line(
            f"streaming {members:,} simulated members: {span_days:.1f} days of behaviour "
            f"({to_iso(plan.sim_start_ms)} → now) in {seconds:g} s, ≤ {rate:g} events/s"
        )
        watcher = FlowWatcher(settings, since_ms=int(plan.wall_start_s * MS_PER_SECOND) - 1)
        watcher.start()
        lines = _FlowLines(out, watcher, settings)
        summary = stream_members(settings, plan, members, seed, False, bad_fraction, lines)
        complete = watcher.wait_for_total(summary.sent, _READBACK_TIMEOUT_S)
        watcher.stop()
        counts = watcher.snapshot()
        out.line(f"done: sent {summary.sent:,}, " + _describe(counts, settings))
        for reason, count in sorted(counts.rejected.items()):
            out.line(
                f"  dead-letter reason {reason:<16} {count:>5}  (injected {summary.bad[reason]})"
            )
        ok = complete and counts.total == summary.sent and counts.rejected == summary.bad
        out.line(
            "every record sent was read back and every corrupted one was caught"
            if ok
            else "MISMATCH between what was sent and what was read back"
        )
    finally:
        if not info.already_running and not keep_stack:
            launcher.down(base)
            out.line("stack stopped")
    if not ok:
        raise typer.Exit(1)
