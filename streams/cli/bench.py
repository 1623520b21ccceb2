"""`memberpulse bench …`: the benchmarks behind BENCHMARKS.md (decode, features, state,
startup, e2e, fuzz, bounds; `bench model` is registered by the export commands)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter
from memberpulse.streams.settings import Settings

bench_app = typer.Typer(help="Benchmarks (figures for BENCHMARKS.md).")


@bench_app.command("decode")
def bench_decode(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1000, help="Events per pass.")] = 200_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Decoder + validation throughput on one core (valid, small events)."""
    from memberpulse.streams.bench.decode import bench_decode as run

    result = run(context.state(ctx).settings(), events)
    if as_json:
        context.print_json(result.as_dict())
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
    from memberpulse.streams.bench.decode import bench_features as run

    report = run(batch=batch)
    if as_json:
        context.print_json(report)
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
    from memberpulse.streams.bench.state import bench_state as run
    from memberpulse.streams.local import launcher

    state = context.state(ctx)
    settings = state.settings()
    started = None
    if not settings.is_set("redis_url") and not _redis_up(settings):
        base = state.base_settings()
        started = launcher.up(base, components=["redis"])
        settings = started.apply_to(settings)
    try:
        report = run(settings, members, days, seed)
    finally:
        if started is not None and not started.already_running:
            launcher.down(state.base_settings())
    if as_json:
        context.print_json(report)
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
    from memberpulse.streams.bench.startup import bench_startup as run
    from memberpulse.streams.local import launcher
    from memberpulse.streams.local.default_model import model_ready

    state = context.state(ctx)
    base = state.base_settings()
    info = launcher.up(base)
    try:
        settings = info.apply_to(base)
        model_ready(Reporter(interactive=False, to_stderr=as_json), settings)
        report = run(settings, rounds)
    finally:
        if not info.already_running:
            launcher.down(base)
    if as_json:
        context.print_json(report)
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
    from memberpulse.streams.bench.e2e import bench_e2e as run
    from memberpulse.streams.bench.e2e import summary_lines
    from memberpulse.streams.local import launcher
    from memberpulse.streams.local.default_model import model_ready

    state = context.state(ctx)
    base = state.base_settings()
    notes = Reporter(interactive=False, to_stderr=as_json)
    model_ready(notes, base)
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
        notes.line(f"private stack: kafka {settings.kafka.bootstrap}, redis {info.redis_url()}")
        report = run(
            settings, events, workers, load, latency_seconds, naive_seconds, soak_seconds,
            target, say=notes.line,
        )  # fmt: skip
    finally:
        launcher.down(private)
    if as_json:
        context.print_json(report)
        return
    reporter = Reporter()
    for line in summary_lines(report):
        reporter.line(line)


@bench_app.command("bounds")
def bench_bounds(
    ctx: typer.Context,
    members: Annotated[int, typer.Option(min=1, help="Distinct members applied.")] = 1_000_000,
    flood_events: Annotated[
        int, typer.Option(min=1, help="Events of the one flooding member.")
    ] = 1_000_000,
    rate: Annotated[
        float, typer.Option(min=10, help="Ordinary members' offered load, events/s.")
    ] = 300.0,
    latency_seconds: Annotated[float, typer.Option(min=5, help="Seconds a load phase.")] = 30.0,
    out: Annotated[
        Path | None, typer.Option(help="Where logs go (default: under the home).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Resource bounds: Redis memory and TTLs over many members, one member flooding, and
    the other members' latency while one floods. Runs on a private, fresh local stack;
    serves the registry's current model, or the default one.
    """
    from memberpulse.streams.bench.bounds import bench_bounds as run
    from memberpulse.streams.local import launcher
    from memberpulse.streams.local.default_model import model_ready

    state = context.state(ctx)
    base = state.base_settings()
    notes = Reporter(interactive=False, to_stderr=as_json)
    model_ready(notes, base)
    target = out or base.home / "bench" / time.strftime("bounds-%Y%m%d-%H%M%S")
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
        report = run(settings, members, flood_events, rate, latency_seconds, target, notes.line)
    finally:
        launcher.down(private)
    if as_json:
        context.print_json(report)
        return
    many, flood = report["many_members"], report["one_member_flood"]
    out_ = Reporter()
    out_.line(f"{many['members']:,} members: {many['bytes_per_member']:,.0f} bytes each, "
              f"{many['member_keys_without_ttl']} of {many['member_keys']:,} member keys "
              f"without a TTL ({many['ttl_days']} days)")  # fmt: skip
    out_.line(f"one member, {flood['events']:,} events: state key "
              f"{flood['state_key_bytes_by_events'][-1]['state_key_bytes']:,} bytes, "
              f"{flood['ms_per_batch']:.1f} ms a batch")  # fmt: skip
    for phase, row in report["flood_latency"].items():
        out_.line(f"{phase}: others' p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")


@bench_app.command("fuzz")
def bench_fuzz(
    ctx: typer.Context,
    inputs: Annotated[int, typer.Option(min=100, help="Generated input records.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the generator (a run repeats).")] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Hostile inputs among valid events through a real worker on a private local stack:
    every input must be applied, skipped as a duplicate or dead-lettered with a reason,
    and the worker must stay up. Serves the registry's current model, or the default one.
    """
    from memberpulse.streams.bench.fuzz import bench_fuzz as run
    from memberpulse.streams.local import launcher
    from memberpulse.streams.local.default_model import model_ready

    state = context.state(ctx)
    base = state.base_settings()
    notes = Reporter(interactive=False, to_stderr=as_json)
    model_ready(notes, base)
    target = base.home / "bench" / time.strftime("fuzz-%Y%m%d-%H%M%S")
    private = base.model_copy(
        update={"home": target / "stack-home", "model_registry": base.registry_root,
                "stack_kafka_port": 0, "stack_redis_port": 0}
    )  # fmt: skip
    info = launcher.up(private)
    try:
        report = run(info.apply_to(private), inputs, seed)
    finally:
        launcher.down(private)
    if as_json:
        context.print_json(report)
        return
    out = Reporter()
    out.line(
        f"{report['inputs']:,} inputs ({report['applied']:,} applied, {report['duplicates']:,} "
        f"duplicates, {sum(report['dlq_by_reason'].values()):,} dead-lettered): "
        f"{report['crashes']} crashes, {report['unaccounted']} unaccounted, "
        f"{report['inputs_per_s']:,} inputs/s"
    )
    for reason, count in report["dlq_by_reason"].items():
        out.line(f"  {reason:<18} {count:>8,}")
    if report["refused_at_produce"]:
        out.line(f"refused by the producer (over the broker limit): {report['refused_at_produce']}")
    if report["crashes"] or report["unaccounted"]:
        raise typer.Exit(1)


def _redis_up(settings: Settings) -> bool:
    import redis

    from memberpulse.streams.state.client import make_redis

    try:
        return bool(make_redis(settings.redis).ping())
    except redis.RedisError:
        return False


def register(app: typer.Typer) -> typer.Typer:
    """Add `bench` to the CLI; returns its group, which other modules add to."""
    app.add_typer(bench_app, name="bench", no_args_is_help=True)
    return bench_app
