"""`memberpulse stack up|down|status`: the local stack (tansu + redis-server)."""

from __future__ import annotations

import typer

from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter

stack_app = typer.Typer(help="The local stack: tansu broker + redis-server under MEMBERPULSE_HOME.")


@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Start the broker and redis-server (free ports), create topics, return when ready."""
    from memberpulse.streams.local import launcher

    settings = context.state(ctx).base_settings()
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
    from memberpulse.streams.local import launcher

    settings = context.state(ctx).base_settings()
    stopped = launcher.down(settings)
    Reporter().line(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status(ctx: typer.Context) -> None:
    """Report whether each component runs and answers; exit 1 unless all are healthy."""
    from memberpulse.streams.local import launcher

    settings = context.state(ctx).base_settings()
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


def register(app: typer.Typer) -> None:
    """Add `stack` to the CLI."""
    app.add_typer(stack_app, name="stack", no_args_is_help=True)
