"""The state section: what Redis keeps per member, for how long, and how it is fetched."""

from __future__ import annotations

from pydantic import Field

from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.settings.base import Section, section_config


class StateSettings(Section):
    """`state_*`."""

    model_config = section_config("state_")

    ttl_days: int = Field(400, ge=1, description="idle horizon after which state expires")
    sequence_length: int = Field(64, ge=1, le=1024, description="recent events kept (L)")
    lateness_ms: int = Field(
        3_600_000, ge=0, description="how far behind a member's latest event one may arrive"
    )
    session_gap_ms: int = Field(1_800_000, gt=0, description="gap that ends a session")
    exclusion_days: int = Field(
        30, ge=1, description="items bought within this many days are never recommended"
    )
    max_recent_purchases: int = Field(32, ge=1, le=1024)
    idle_fetch_limit: int = Field(
        256, ge=1, description="idle-due members fetched per partition and batch"
    )
    members_per_call: int = Field(
        8,
        ge=1,
        description="members per apply.lua call of `apply` on standalone Redis: it derives "
        "the snapshots of one call's members while Redis runs the next (a Cluster: 1)",
    )

    def spec(self) -> StateSpec:
        """What the state keeps per member (shared with the reference fold)."""
        return StateSpec(
            sequence_length=self.sequence_length,
            lateness_ms=self.lateness_ms,
            session_gap_ms=self.session_gap_ms,
            exclusion_days=self.exclusion_days,
            max_recent_purchases=self.max_recent_purchases,
        )

    @property
    def ttl_ms(self) -> int:
        """The state TTL in milliseconds."""
        return self.ttl_days * MS_PER_DAY
