"""The Lua scripts of the state layer: loaded once with SCRIPT LOAD, run with EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from memberpulse.models.errors import StateUnavailable
from memberpulse.streams.state.client import RedisClient

NAMES: Final = ("apply", "record", "idle", "budget")
#: Shared Lua code, prepended to the scripts that use it (a script cannot import another).
PRELUDES: Final = {"apply": ("value",), "record": ("value",), "idle": ("value",)}


@dataclass(frozen=True)
class Script:
    """A script's source and its SHA-1 (what EVALSHA names)."""

    name: str
    source: str
    sha: str


def load_sources() -> dict[str, Script]:
    """Every script shipped in `memberpulse.streams.state` (`lua/`)."""
    folder = files("memberpulse.streams.state").joinpath("lua")
    scripts = {}
    for name in NAMES:
        source = "".join(
            folder.joinpath(f"{part}.lua").read_text(encoding="utf-8")
            for part in (*PRELUDES.get(name, ()), name)
        )
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        scripts[name] = Script(name, source, sha)
    return scripts


def register(client: RedisClient, scripts: dict[str, Script]) -> None:
    """SCRIPT LOAD every script (on every primary of a Cluster); checks the returned SHA."""
    for script in scripts.values():
        loaded = client.script_load(script.source)
        if loaded != script.sha:
            raise StateUnavailable(
                f"Redis returned SHA {loaded} for {script.name}, not {script.sha}"
            )
