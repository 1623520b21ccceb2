"""What every settings section shares: frozen, strict about unknown names, and each field
known by its flat name (`kafka_bootstrap`, the `MEMBERPULSE_KAFKA_BOOTSTRAP` variable and
the `--set kafka_bootstrap=…` key) as well as its short one (`settings.kafka.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict


def prefixed(prefix: str) -> Callable[[str], str]:
    """The alias generator of a section whose flat names are `prefix` + the short name."""

    def alias(name: str) -> str:
        return prefix + name

    return alias


def section_config(prefix: str = "") -> ConfigDict:
    """The model config of a section whose flat names start with `prefix` (fields that
    do not follow it name their flat name with `Field(alias=…)`)."""
    return ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # the input may hold secrets
        populate_by_name=True,
        validate_default=True,
        alias_generator=prefixed(prefix),
    )


class Section(BaseModel):
    """A group of settings. Subclasses set `model_config = section_config("kafka_")`."""

    model_config = section_config()

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """Flat name → short (field) name, in declaration order."""
        return {(field.alias or name): name for name, field in cls.model_fields.items()}

    def flat(self) -> dict[str, Any]:
        """Every value by its flat name."""
        return {flat: getattr(self, short) for flat, short in self.flat_names().items()}
