"""The Redis section: where member state lives and how hard to try to reach it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from memberpulse.streams.settings.base import Section, section_config


class RedisSettings(Section):
    """`redis_*` (the redis-server binary of the local stack is in the stack section)."""

    model_config = section_config("redis_")

    url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// URL (may carry a password: never shown)",
    )
    username: str | None = None
    password: SecretStr | None = None
    cluster: bool = False
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    key_prefix: str = "mp"
    timeout_s: float = Field(5.0, gt=0)
    retry_attempts: int = Field(5, ge=1)
    retry_backoff_s: float = Field(0.1, gt=0)
