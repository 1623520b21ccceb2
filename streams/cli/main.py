"""`memberpulse`: the one front door (typer). Heavy imports happen inside commands.

Without a TTY every command prints plain lines, and each exits non-zero when its job did
not happen. Training and export code (torch) is imported lazily by the commands that
need it, so serving installs without the `train` extra. Every command module imports only
`cli/context.py`; this module imports and registers them all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from memberpulse.models.errors import MemberPulseError
from memberpulse.streams.cli import (
    bench,
    config,
    context,
    demo,
    export,
    models,
    simulate,
    stack,
    worker,
)

#: The exit code of an error MemberPulse raises on purpose (as for a usage error).
ERROR_EXIT: int = 2

app = typer.Typer(
    name="memberpulse",
    help="Streaming real-time member scoring: churn alerts, recommendations, coupons, tiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    overrides = context.parse_overrides(set_ or [])
    if home is not None:
        overrides["home"] = home
    ctx.obj = context.CliState(overrides)


stack.register(app)
config.register(app)
bench_app = bench.register(app)
simulate.register(app)
demo.register(app)
worker.register(app)
models.register(app)
export.register(app, bench_app)


def main() -> None:
    """Entry point: run the app, turning our errors (and bad values) into a one-line
    `error: …` and exit code 2, never a traceback."""
    try:
        app()
    except (MemberPulseError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(ERROR_EXIT) from None
