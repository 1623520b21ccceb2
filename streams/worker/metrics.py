"""Prometheus metrics of the worker (served on /metrics next to /health and /ready).

Model metrics (version in service, swaps, refusals) live beside the registry in
`memberpulse.streams.serving.registry`; they land in the same default registry.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

STAGES: Final = ("decode", "state", "encode", "score", "decide", "record", "produce")
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STAGE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
_BATCH_BUCKETS: Final = (1, 4, 16, 64, 128, 256, 512, 1024, 4096)

EVENTS = Counter("memberpulse_events_total", "Input events decoded, by type", ["type"])
DLQ = Counter("memberpulse_dlq_total", "Input records dead-lettered, by reason", ["reason"])
APPLIED = Counter("memberpulse_events_applied_total", "Events applied to member state")
DUPLICATES = Counter(
    "memberpulse_duplicates_total",
    "Events skipped by the state: their id was applied already, at another offset",
)
REDELIVERED = Counter(
    "memberpulse_redelivered_total",
    "Input records read again (a retried batch, a restart, a rebalance) after they were "
    "applied or dead-lettered: skipped, not counted twice",
)
STALE = Counter(
    "memberpulse_stale_records_total",
    "Input records that reached the agent after their partition was revoked (a rebalance "
    "caught them in the take buffer): left unacknowledged for the partition's next owner",
)
BATCH_SIZE = Histogram(
    "memberpulse_batch_size", "Input records per micro-batch", buckets=_BATCH_BUCKETS
)
STAGE_SECONDS = Histogram(
    "memberpulse_stage_seconds", "Time per batch stage", ["stage"], buckets=_STAGE_BUCKETS
)
EVENT_TO_OUTPUT = Histogram(
    "memberpulse_event_to_output_seconds",
    "From an input record's timestamp to its batch's outputs confirmed by the broker",
    buckets=_LATENCY_BUCKETS,
)
OUTPUTS = Counter("memberpulse_outputs_total", "Output records confirmed, by kind", ["kind"])
OUTPUTS_REFUSED = Counter(
    "memberpulse_outputs_refused_total",
    "Outputs the broker refused for good (too large, invalid): dead-lettered by id, by kind",
    ["kind"],
)
RESENT = Counter(
    "memberpulse_outputs_resent_total", "Outbox entries produced again after a redelivery"
)
SCORED = Counter("memberpulse_members_scored_total", "Members scored (once per batch each)")
IDLE_CHECKS = Counter("memberpulse_idle_checks_total", "Members scored by an idle check")
COUPONS_REFUSED = Counter(
    "memberpulse_coupons_refused_total", "Coupons dropped: the budget was gone at reservation"
)
REDIS_ROUND_TRIPS = Counter(
    "memberpulse_redis_round_trips_total",
    "Redis round trips, by pass: micro-batches or idle-check passes without input",
    ["pass"],
)
BATCHES = Counter("memberpulse_batches_total", "Micro-batches processed")
CONSUMER_LAG = Gauge(
    "memberpulse_consumer_lag", "Records behind the high watermark", ["topic", "partition"]
)
EVENT_TIME = Gauge(
    "memberpulse_event_time_ms", "Event time (largest event ts seen) per partition", ["partition"]
)
ALIGN_HELD = Gauge(
    "memberpulse_align_held_records",
    "Input records held until the other co-partitioned topics catch up in time",
)
ALIGN_FORCED = Counter(
    "memberpulse_align_forced_total",
    "Input records released before their turn: the aligner held its maximum",
)
CHURN_THRESHOLD = Gauge(
    "memberpulse_churn_threshold", "Churn alert and re-arm thresholds in use", ["kind"]
)
