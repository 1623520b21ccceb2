"""`memberpulse demo` (what `make run` runs): the whole pipeline, live, for a minute.

The steps are in streams/local/demo.py; this command brings up the stack and a model,
runs them, stops what it started, and exits 1 when the demo found a problem.
"""

from __future__ import annotations

from typing import Annotated

import typer

from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter


def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(min=1, help="How long to stream.")] = 60.0,
    rate: Annotated[float, typer.Option(min=1, help="At most this many events/s.")] = 1000.0,
    speed: Annotated[
        float, typer.Option(min=1, help="Simulated seconds per wall second (a day: 86400).")
    ] = 86_400.0,
    members: Annotated[int, typer.Option(min=1, help="Simulated members.")] = 1_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    bad_fraction: Annotated[
        float, typer.Option(min=0, max=1, help="Fraction corrupted on purpose.")
    ] = 0.01,
    keep_stack: Annotated[bool, typer.Option(help="Leave the stack running afterwards.")] = False,
) -> None:
    """Run the local demo: stack, model, worker and simulated members, live for a minute."""
    from memberpulse.streams.local import launcher
    from memberpulse.streams.local.default_model import model_ready
    from memberpulse.streams.local.demo import run_demo

    base = context.state(ctx).base_settings()
    out = Reporter()
    info = launcher.up(base)
    settings = info.apply_to(base)
    out.line(
        f"stack {'reused' if info.already_running else 'up'} under {base.home}: "
        f"kafka {settings.kafka.bootstrap}, redis {info.redis_url()}"
    )
    problems: list[str] = []
    try:
        version = model_ready(out, settings)
        problems = run_demo(
            out,
            settings,
            version,
            seconds,
            speed,
            rate,
            members,
            seed,
            bad_fraction,
        )
    finally:
        if not info.already_running and not keep_stack:
            launcher.down(base)
            out.line("stack stopped")
    if problems:
        for problem in problems:
            out.error(f"demo: {problem}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `demo` to the CLI."""
    app.command("demo")(demo)
