"""`memberpulse`: the one front door (typer). Heavy imports happen inside commands.

Without a TTY every command prints plain lines, and each exits non-zero when its job did
not happen. Training and export code (torch) is imported lazily by the commands that
need it, so serving installs without the `train` extra.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from memberpulse.streams.console import Reporter
from memberpulse.streams.errors import MemberPulseError
from memberpulse.streams.settings import Settings, load_settings

app = typer.Typer(
    name="memberpulse",
    help="Streaming real-time member scoring: churn alerts, recommendations, coupons, tiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local stack: tansu broker + redis-server under MEMBERPULSE_HOME.")
config_app = typer.Typer(help="Inspect configuration.")
bench_app = typer.Typer(help="Benchmarks (figures for BENCHMARKS.md).")
app.add_typer(stack_app, name="stack", no_args_is_help=True)
app.add_typer(config_app, name="config", no_args_is_help=True)
app.add_typer(bench_app, name="bench", no_args_is_help=True)


@dataclass
class CliState:
    """Global options, turned into `Settings` once a command needs them."""

    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The settings (env + overrides), pointed at a running local stack if any."""
        if self._settings is None:
            from memberpulse.streams.discovery import with_local_stack

            self._settings = with_local_stack(load_settings(self.overrides))
        return self._settings


def _state(ctx: typer.Context) -> CliState:
    state = ctx.find_root().obj
    assert isinstance(state, CliState)
    return state


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key.strip().lower().replace("-", "_")] = value
    return overrides


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path | None, typer.Option(help="Local files root (default ~/.memberpulse).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting, KEY=VALUE (repeatable)."),
    ] = None,
) -> None:
    """MemberPulse: every setting also reads MEMBERPULSE_<NAME> from the environment."""
    overrides = _parse_overrides(set_ or [])
    if home is not None:
        overrides["home"] = home
    ctx.obj = CliState(overrides)


# --- stack -----------------------------------------------------------------------------


@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Start the broker and redis-server (free ports), create topics, return when ready."""
    from memberpulse.streams import launcher

    settings = load_settings(_state(ctx).overrides)
    info = launcher.up(settings)
    out = Reporter()
    verb = "already running" if info.already_running else "started"
    out.line(f"stack {verb} under {settings.home}")
    for name, record in info.records.items():
        out.line(f"  {name:<6} pid {record.pid:<8} port {record.port}")
    out.line(f"  MEMBERPULSE_KAFKA_BOOTSTRAP={info.kafka_bootstrap()}")
    out.line(f"  MEMBERPULSE_REDIS_URL={info.redis_url()}")


@stack_app.command("down")
def stack_down(ctx: typer.Context) -> None:
    """Stop the stack's processes (SIGTERM, then SIGKILL after a grace)."""
    from memberpulse.streams import launcher

    settings = load_settings(_state(ctx).overrides)
    stopped = launcher.down(settings)
    Reporter().line(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status(ctx: typer.Context) -> None:
    """Report whether each component runs and answers; exit 1 unless all are healthy."""
    from memberpulse.streams import launcher

    settings = load_settings(_state(ctx).overrides)
    components = launcher.status(settings)
    out = Reporter()
    if not components:
        out.line(f"no stack under {settings.home}")
        raise typer.Exit(1)
    for item in components:
        health = "healthy" if item.answering else ("not answering" if item.running else "down")
        out.line(f"{item.name:<6} pid {item.pid:<8} port {item.port:<6} {health}")
    if not all(item.answering for item in components):
        raise typer.Exit(1)


# --- config ------------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Print the effective settings, secrets masked."""
    shown = _state(ctx).settings().redacted()
    if as_json:
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    out = Reporter(interactive=False)
    for key, value in shown.items():
        out.line(f"{key} = {value}")


# --- bench -------------------------------------------------------------------------------


@bench_app.command("decode")
def bench_decode(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1000, help="Events per pass.")] = 200_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Decoder + validation throughput on one core (valid, small events)."""
    from memberpulse.streams.bench import bench_decode as run

    result = run(_state(ctx).settings(), events)
    if as_json:
        print(orjson.dumps(result.as_dict()).decode())
        return
    Reporter().line(
        f"decoded {result.events:,} events ({result.mean_bytes:.0f} B mean) in "
        f"{result.seconds:.3f} s: {result.events_per_s:,.0f} events/s on one core"
    )


@bench_app.command("features")
def bench_features(
    batch: Annotated[int, typer.Option(min=1, help="Members per encode call.")] = 512,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Feature encoding time for a batch of simulated members (fold excluded)."""
    from memberpulse.streams.bench import bench_features as run

    report = run(batch=batch)
    if as_json:
        print(orjson.dumps(report).decode())
        return
    Reporter().line(
        f"encode of {report['batch']} members: {report['median_ms']:.1f} ms median "
        f"({report['best_ms']:.1f} best), {report['members_per_s']:,.0f} members/s"
    )


@bench_app.command("state")
def bench_state(
    ctx: typer.Context,
    members: Annotated[int, typer.Option(min=1, help="Simulated members.")] = 5_000,
    days: Annotated[int, typer.Option(min=1, help="Days of simulated history.")] = 30,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Redis state: events applied/s and round trips per batch (1, 64, 512), bytes/member.

    Uses the Redis of a running local stack, else MEMBERPULSE_REDIS_URL when set, else
    starts a local redis-server under MEMBERPULSE_HOME for the run.
    """
    from memberpulse.streams import launcher
    from memberpulse.streams.bench_state import bench_state as run

    state = _state(ctx)
    settings = state.settings()
    started = None
    if "redis_url" not in settings.model_fields_set and not _redis_up(settings):
        base = load_settings(state.overrides)
        started = launcher.up(base, components=["redis"])
        settings = started.apply_to(settings)
    try:
        report = run(settings, members, days, seed)
    finally:
        if started is not None and not started.already_running:
            launcher.down(load_settings(state.overrides))
    if as_json:
        print(orjson.dumps(report).decode())
        return
    out = Reporter()
    out.line(f"redis {report['redis_version']}, {report['events']:,} simulated events")
    rows = report["results"]
    assert isinstance(rows, list)
    for row in rows:
        out.line(
            f"batch {row['batch_size']:>4}: {row['events_per_s']:>9,.0f} events/s "
            f"({row['overlapped_events_per_s']:,.0f} overlapped), "
            f"{row['round_trips_per_batch']:.2f} round trips per batch"
        )
    out.line(f"bytes per member (L={report['sequence_length']}, all fields): "
             f"{report['bytes_per_member']:,.0f}; with "
             f"{report['dense_events_per_day']} events a day: "
             f"{report['bytes_per_member_dense']:,.0f}")  # fmt: skip


@bench_app.command("startup")
def bench_startup(
    ctx: typer.Context,
    rounds: Annotated[int, typer.Option(min=1, help="Start/stop cycles.")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Seconds from starting a worker to ready and to its first event, and to exit after
    SIGTERM (a fresh consumer group each round). Starts the local stack when none runs;
    serves the registry's current model, or the default one (trained once when missing).
    """
    from memberpulse.streams import launcher
    from memberpulse.streams.bench_startup import bench_startup as run
    from memberpulse.streams.demo import _model_ready

    state = _state(ctx)
    base = load_settings(state.overrides)
    info = launcher.up(base)
    try:
        settings = info.apply_to(base)
        _model_ready(Reporter(interactive=False, to_stderr=as_json), settings)
        report = run(settings, rounds)
    finally:
        if not info.already_running:
            launcher.down(base)
    if as_json:
        print(orjson.dumps(report).decode())
        return
    out = Reporter()
    for i, row in enumerate(report["rounds"], 1):
        out.line(
            f"round {i}: ready {row['ready_s']:.2f} s, first event {row['first_event_s']:.2f} s, "
            f"exit {row['exit_after_sigterm_s']:.2f} s after SIGTERM (code {row['exit_code']})"
        )
    out.line(
        f"median: ready {report['ready_s']:.2f} s, first event {report['first_event_s']:.2f} s, "
        f"exit after SIGTERM {report['exit_after_sigterm_s']:.2f} s "
        f"(kafka_profile={report['kafka_profile']})"
    )


@bench_app.command("e2e")
def bench_e2e(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1000, help="Events pre-loaded.")] = 100_000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes in one group.")] = 1,
    load: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Offered load for latency, × max.")
    ] = 0.5,
    latency_seconds: Annotated[
        float, typer.Option(min=5, help="Seconds at the fixed load.")
    ] = 30.0,
    naive_seconds: Annotated[
        float, typer.Option(min=5, help="Seconds of the one-event-at-a-time run.")
    ] = 20.0,
    soak_seconds: Annotated[
        float | None, typer.Option(min=10, help="Run the fixed load this long, sampling RSS.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where JSON and plots go (default: under the home).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The whole pipeline against two bare Faust agents (consume, naive forward) on the same
    broker and events; one event at a time; latency at a fixed load. Runs on a private,
    fresh local stack (a broker that served earlier runs is slower: tansu keeps every
    topic in memory); serves the registry's current model, or the default one.
    """
    from memberpulse.streams import launcher
    from memberpulse.streams.bench_e2e import bench_e2e as run
    from memberpulse.streams.bench_e2e import summary_lines
    from memberpulse.streams.demo import _model_ready

    state = _state(ctx)
    base = load_settings(state.overrides)
    notes = Reporter(interactive=False, to_stderr=as_json)
    _model_ready(notes, base)
    target = out or base.home / "bench" / time.strftime("e2e-%Y%m%d-%H%M%S")
    private = base.model_copy(
        update={
            "home": target / "stack-home",
            "model_registry": base.registry_root,
            "stack_kafka_port": 0,
            "stack_redis_port": 0,
        }
    )
    info = launcher.up(private)
    try:
        settings = info.apply_to(private)
        notes.line(f"private stack: kafka {settings.kafka_bootstrap}, redis {info.redis_url()}")
        report = run(
            settings, events, workers, load, latency_seconds, naive_seconds, soak_seconds,
            target, say=notes.line,
        )  # fmt: skip
    finally:
        launcher.down(private)
    if as_json:
        print(orjson.dumps(report).decode())
        return
    reporter = Reporter()
    for line in summary_lines(report):
        reporter.line(line)


def _redis_up(settings: Settings) -> bool:
    import redis

    from memberpulse.streams.redis_client import make_redis

    try:
        return bool(make_redis(settings).ping())
    except redis.RedisError:
        return False


def register_commands() -> None:
    """Attach the commands that live in their own modules."""
    from memberpulse.streams import cli_export, cli_models, cli_simulate, cli_worker

    cli_simulate.register(app)
    cli_worker.register(app)
    cli_models.register(app)
    cli_export.register(app, bench_app)


register_commands()


def main() -> None:
    """Entry point: run the app, turning our errors into a one-line message and exit 1."""
    try:
        app()
    except MemberPulseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
