"""The worker section: micro-batching, delivery, time alignment, input validation, the
consumer group, the web endpoints, retries and the crash-test failpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from memberpulse.models.timeutil import parse_ts
from memberpulse.streams.settings.base import Section, section_config


class WorkerSettings(Section):
    """`worker_*`, `batch_*`, `align_*`, `idle_tick_s`, the input limits (`max_event_bytes`,
    `max_id_chars`, `ts_floor`, `future_tolerance_ms`) and the crash-test failpoints
    (`failpoint_kill_at`, `failpoint_kill_batch`)."""

    model_config = section_config("worker_")

    # --- Micro-batching ------------------------------------------------------------
    batch_max_size: int = Field(512, ge=1, alias="batch_max_size")
    batch_max_wait_ms: int = Field(50, ge=1, alias="batch_max_wait_ms")
    delivery: Literal["batch", "message"] = Field(
        "batch",
        description="how Faust hands records to the agent: one stream item per fetched "
        "partition batch (streams/worker/delivery.py), or Faust's own one item per message",
    )
    max_poll_records: int | None = Field(
        None,
        ge=1,
        description="records per consumer poll (Faust's broker_max_poll_records; default: "
        "batch_max_size)",
    )
    stream_buffer_records: int = Field(
        4096,
        ge=1,
        description="records Faust may buffer between the consumer and the agent (its "
        "stream_buffer_maxsize counts stream items: with batch delivery, polls of up to "
        "worker_max_poll_records records each)",
    )

    # --- Time alignment of the input topics -------------------------------------------
    align_idle_ms: int = Field(
        100,
        gt=0,
        alias="align_idle_ms",
        description="an input partition caught up and silent this long stops holding the "
        "other input topics back (the most a quiet partition delays the others)",
    )
    align_max_held: int = Field(
        100_000,
        ge=1,
        alias="align_max_held",
        description="records the aligner may hold; past it the earliest are released anyway",
    )
    align_slack_ms: int | None = Field(
        None,
        ge=0,
        alias="align_slack_ms",
        description="release records this far ahead of the slowest topic's event time "
        "(default: half of state_lateness_ms; 0: exact alignment)",
    )
    align_stall_ms: int = Field(
        60_000,
        ge=1,
        alias="align_stall_ms",
        description="an input partition that delivered nothing since assignment for this "
        "long (consumer free time) stops holding the others back",
    )

    # --- The consumer group and the process ----------------------------------------------
    group_id: str = Field("memberpulse-worker", description="Kafka consumer group")
    offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts reading"
    )
    web_bind: str = Field("0.0.0.0", description="address of /metrics, /health, /ready")  # noqa: S104
    web_port: int = Field(6066, ge=0, le=65535, description="0 picks a free port")
    log_level: str = Field("warning", description="worker log level")
    idle_tick_s: float = Field(
        1.0, gt=0, alias="idle_tick_s", description="wall seconds between idle-check passes"
    )
    retry_backoff_s: float = Field(0.5, gt=0, description="first retry of a failed batch")
    retry_backoff_max_s: float = Field(10.0, gt=0)
    poison_max_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="members of a batch that may fail one by one (dead-lettered as "
        "processing_failed) before the worker stops: past it the fault is not in the data",
    )
    gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        description="allocations between young-generation GC passes, applied with "
        "gc.freeze() of everything loaded at start (0: Python's defaults, 700)",
    )
    failpoint_kill_at: Literal["", "state", "score", "record", "produce"] = Field(
        "",
        alias="failpoint_kill_at",
        description="crash tests only: SIGKILL the worker in batch `failpoint_kill_batch` "
        "right after this stage (produce: half its outputs confirmed, the rest not sent)",
    )
    failpoint_kill_batch: int = Field(
        0, ge=0, alias="failpoint_kill_batch", description="the Nth batch with input (0: never)"
    )

    # --- Input validation (live stream) -----------------------------------------------
    max_event_bytes: int = Field(65_536, ge=256, alias="max_event_bytes")
    max_id_chars: int = Field(
        2_048, ge=8, alias="max_id_chars", description="longest member/item/event id accepted"
    )
    dead_letter_max_bytes: int = Field(
        65_536,
        ge=256,
        le=131_072,
        alias="dead_letter_max_bytes",
        description="bytes of an input's payload and of its key a dead letter carries (the "
        "rest stays in the input topic at its offset); JSON escapes can make text 6x longer, "
        "so at the cap a dead letter stays under the producer's 1 MB message.max.bytes",
    )
    ts_floor: int = Field(
        parse_ts("2000-01-01"),
        alias="ts_floor",
        description="events before this (epoch ms) are rejected",
    )
    future_tolerance_ms: int = Field(
        300_000,
        ge=0,
        alias="future_tolerance_ms",
        description="how far past the receive time an event may be stamped",
    )

    @field_validator("ts_floor", mode="before")
    @classmethod
    def _parse_floor(cls, value: Any) -> Any:
        return parse_ts(value) if isinstance(value, str) else value

    @property
    def poll_records(self) -> int:
        """Records per consumer poll (Faust's `broker_max_poll_records`)."""
        return self.max_poll_records or self.batch_max_size
