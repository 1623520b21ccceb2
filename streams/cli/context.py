"""What every command module shares: the global options (`CliState`, turned into
`Settings` once a command needs them), `--set KEY=VALUE` parsing and JSON output.

Command modules import this module and nothing else of the CLI: `main.py` imports and
registers them, so no import runs back up to the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import typer

from memberpulse.streams.settings import Settings, load_settings


@dataclass
class CliState:
    """Global options, turned into `Settings` once a command needs them."""

    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The settings (env + overrides), pointed at a running local stack if any."""
        if self._settings is None:
            from memberpulse.streams.local.discovery import with_local_stack

            self._settings = with_local_stack(self.base_settings())
        return self._settings

    def base_settings(self) -> Settings:
        """The settings from env + overrides alone (no running stack looked up)."""
        return load_settings(self.overrides)


def state(ctx: typer.Context) -> CliState:
    """The root command's `CliState`."""
    root = ctx.find_root().obj
    assert isinstance(root, CliState)
    return root


def settings(ctx: typer.Context) -> Settings:
    """`state(ctx).settings()`: env + overrides, pointed at a running local stack if any."""
    return state(ctx).settings()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs as setting overrides (keys lower-cased, `-` as `_`)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key.strip().lower().replace("-", "_")] = value
    return overrides


def print_json(value: Any, *, indent: bool = False, numpy: bool = False) -> None:
    """One JSON document on stdout (what `--json` prints; progress goes to stderr)."""
    option = (orjson.OPT_INDENT_2 if indent else 0) | (orjson.OPT_SERIALIZE_NUMPY if numpy else 0)
    print(orjson.dumps(value, option=option).decode())
