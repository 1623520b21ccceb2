"""The serving section: which model versions a worker serves and how it runs them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from memberpulse.streams.settings.base import Section, section_config


class ServingSettings(Section):
    """`model_*` and `scorer_*`."""

    model_config = section_config("model_")

    registry: Path | None = Field(
        None, description="model registry root (default: <home>/models/registry)"
    )
    top_k: int = Field(20, ge=1, description="items per recommendation (in the graph)")
    refresh_s: float = Field(
        5.0, ge=0, description="how often a worker checks for a newly promoted model"
    )
    scorer_threads: int = Field(
        0, ge=0, alias="scorer_threads", description="onnxruntime threads (0: all cores)"
    )
    scorer_allow_spinning: bool = Field(
        False,
        alias="scorer_allow_spinning",
        description="onnxruntime's idle threads spin (faster calls, but a busy-waiting core "
        "the broker client, Redis and Faust share)",
    )
