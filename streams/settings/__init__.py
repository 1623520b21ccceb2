"""The one settings object: every knob of MemberPulse, from `MEMBERPULSE_*` or CLI overrides.

Created once at the edge (CLI, app factory, test fixture) and passed down; no module
reads the environment on its own. The knobs live in sections (`settings.kafka`,
`.redis`, `.worker`, `.state`, `.serving`, `.decisions`, `.training`, `.stack`), so that
each module depends on the section it uses. Every knob keeps one flat name: the
`MEMBERPULSE_<NAME>` variable, the `--set name=value` key, the key of `config show
--json`, and what `Settings(name=…)` and `model_copy(update={name: …})` take
(`kafka_bootstrap` is `settings.kafka.bootstrap`). Secrets are `SecretStr` and URLs are
redacted whenever settings are shown, so they never reach logs or `--help` output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, get_origin
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from memberpulse.streams.settings.base import Section
from memberpulse.streams.settings.decisions import DecisionSettings
from memberpulse.streams.settings.kafka import KafkaSettings
from memberpulse.streams.settings.redis import RedisSettings
from memberpulse.streams.settings.serving import ServingSettings
from memberpulse.streams.settings.stack import StackSettings
from memberpulse.streams.settings.state import StateSettings
from memberpulse.streams.settings.training import TrainingSettings
from memberpulse.streams.settings.worker import WorkerSettings

ENV_PREFIX: Final = "MEMBERPULSE_"

#: Section attribute → its model, in the order `config show` lists them.
SECTIONS: Final[dict[str, type[Section]]] = {
    "kafka": KafkaSettings,
    "redis": RedisSettings,
    "worker": WorkerSettings,
    "state": StateSettings,
    "serving": ServingSettings,
    "decisions": DecisionSettings,
    "training": TrainingSettings,
    "stack": StackSettings,
}

#: Flat name → (section, short name), for every knob of every section.
_FLAT: Final[dict[str, tuple[str, str]]] = {
    flat: (section, short)
    for section, model in SECTIONS.items()
    for flat, short in model.flat_names().items()
}


def default_home() -> Path:
    """`~/.memberpulse`: stack state, logs, data, model registry and caches."""
    return Path.home() / ".memberpulse"


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names grouped into their sections; section names and `home` pass through, and
    an unknown name stays at the top, where validation refuses it by name."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        where = _FLAT.get(key)
        if where is None:
            nested[key] = value
            continue
        section, _short = where
        group = nested.setdefault(section, {})
        if not isinstance(group, dict):
            raise ValueError(f"{key} given both flat and inside a {section} section")
        group[key] = value
    return nested


class _FlatEnvSource(PydanticBaseSettingsSource):
    """`MEMBERPULSE_<FLAT NAME>` variables (any case) grouped into sections; list and tuple
    values are JSON, as pydantic-settings reads them."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` reads every variable at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {
            key.upper(): value
            for key, value in os.environ.items()
            if key.upper().startswith(ENV_PREFIX)
        }
        found: dict[str, Any] = {}
        if (home := environ.get(f"{ENV_PREFIX}HOME")) is not None:
            found["home"] = home
        for flat, (section, short) in _FLAT.items():
            raw = environ.get(ENV_PREFIX + flat.upper())
            if raw is None:
                continue
            annotation = SECTIONS[section].model_fields[short].annotation
            value: Any = raw
            if get_origin(annotation) in (tuple, list, dict, set):
                value = json.loads(raw)
            found.setdefault(section, {})[flat] = value
        return found


class Settings(BaseSettings):
    """MemberPulse configuration (env prefix `MEMBERPULSE_`), in sections."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # the input may hold secrets
    )

    home: Path = Field(default_factory=default_home, description="local files root")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    decisions: DecisionSettings = Field(default_factory=DecisionSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    stack: StackSettings = Field(default_factory=StackSettings)

    def __init__(self, **values: Any) -> None:
        super().__init__(**_nest(values))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values first, then the flat `MEMBERPULSE_*` variables."""
        return (init_settings, _FlatEnvSource(settings_cls))

    # --- The flat view -----------------------------------------------------------
    @staticmethod
    def flat_names() -> tuple[str, ...]:
        """Every flat setting name (`home` first, then section by section)."""
        return ("home", *_FLAT)

    def value(self, flat: str) -> Any:
        """A setting by its flat name."""
        if flat == "home":
            return self.home
        try:
            section, short = _FLAT[flat]
        except KeyError:
            raise ValueError(f"unknown setting {flat!r}") from None
        return getattr(getattr(self, section), short)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        return {name: self.value(name) for name in self.flat_names()}

    def is_set(self, flat: str) -> bool:
        """Whether a setting was given (environment, override), not left at its default."""
        if flat == "home":
            return "home" in self.model_fields_set
        section, short = _FLAT[flat]
        return short in getattr(self, section).model_fields_set

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Settings:
        """A copy with `update` applied; its keys are flat names (or `home`). Like
        pydantic's `model_copy`, values are taken as given, not validated."""
        if not update:
            return super().model_copy(deep=deep)
        changes: dict[str, Any] = {}
        for section, group in _nest(update).items():
            if section not in SECTIONS:
                if section != "home":
                    raise ValueError(f"unknown setting {section!r}")
                changes["home"] = group
                continue
            current: Section = getattr(self, section)
            shorts = {_FLAT[flat][1]: value for flat, value in group.items()}
            changes[section] = current.model_copy(update=shorts)
        return super().model_copy(update=changes, deep=deep)

    # --- Derived views -----------------------------------------------------------
    @property
    def registry_root(self) -> Path:
        """Where model versions live."""
        return self.serving.registry or self.home / "models" / "registry"

    def redacted(self) -> dict[str, Any]:
        """All settings by flat name as plain values, secrets masked, safe to print or log."""
        shown: dict[str, Any] = {}
        for name, value in self.flat().items():
            if name == "redis_url":
                shown[name] = redact_url(value.get_secret_value())
            elif isinstance(value, SecretStr):
                shown[name] = "**********"
            elif isinstance(value, Path):
                shown[name] = str(value)
            elif name == "ts_floor":
                shown[name] = datetime.fromtimestamp(value / 1000, tz=UTC).isoformat()
            else:
                shown[name] = value
        return shown


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (user names are kept)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from the environment, with explicit overrides taking precedence."""
    return Settings(**(overrides or {}))


__all__ = [
    "SECTIONS",
    "DecisionSettings",
    "KafkaSettings",
    "RedisSettings",
    "ServingSettings",
    "Settings",
    "StackSettings",
    "StateSettings",
    "TrainingSettings",
    "WorkerSettings",
    "default_home",
    "load_settings",
    "redact_url",
]
