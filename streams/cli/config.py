"""`memberpulse config show`: the effective settings, secrets masked."""

from __future__ import annotations

from typing import Annotated

import typer

from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter

config_app = typer.Typer(help="Inspect configuration.")


@config_app.command("show")
def config_show(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Print the effective settings, secrets masked."""
    shown = context.state(ctx).settings().redacted()
    if as_json:
        context.print_json(shown, indent=True)
        return
    out = Reporter(interactive=False)
    for key, value in shown.items():
        out.line(f"{key} = {value}")


def register(app: typer.Typer) -> None:
    """Add `config` to the CLI."""
    app.add_typer(config_app, name="config", no_args_is_help=True)
