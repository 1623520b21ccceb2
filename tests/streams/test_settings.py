"""The settings object: env prefix, sections with flat names, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from memberpulse.models.timeutil import parse_ts
from memberpulse.streams.settings import SECTIONS, KafkaSettings, Settings, redact_url
from memberpulse.streams.worker.kafka import client_config

#: Every flat setting name before settings were split into sections (issue #22): the
#: `MEMBERPULSE_*` variables, `--set` keys and `config show --json` keys users rely on.
FLAT_NAMES = (
    "home", "kafka_bootstrap", "kafka_profile", "kafka_security_protocol",
    "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password",
    "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_key_password",
    "kafka_connect_timeout_s", "kafka_local_session_timeout_s",
    "kafka_local_heartbeat_interval_s", "kafka_local_fetch_max_wait_ms",
    "kafka_producer_linger_ms", "output_flush_timeout_s", "redis_url", "redis_username",
    "redis_password", "redis_cluster", "redis_ssl_cafile", "redis_ssl_certfile",
    "redis_ssl_keyfile", "redis_key_prefix", "redis_timeout_s", "redis_retry_attempts",
    "redis_retry_backoff_s", "topic_clicks", "topic_browses", "topic_purchases",
    "topic_dlq", "topic_churn_alerts", "topic_recommendations", "topic_coupons",
    "topic_tiers", "input_partitions", "output_partitions", "batch_max_size",
    "batch_max_wait_ms", "align_idle_ms", "worker_delivery", "worker_max_poll_records",
    "worker_stream_buffer_records", "align_max_held", "align_slack_ms", "align_stall_ms",
    "worker_group_id", "worker_offset_reset", "worker_web_bind", "worker_web_port",
    "worker_log_level", "idle_tick_s", "worker_retry_backoff_s",
    "worker_retry_backoff_max_s", "worker_poison_max_fraction", "worker_gc_gen0_threshold",
    "failpoint_kill_at",
    "failpoint_kill_batch",
    "max_event_bytes", "max_id_chars", "dead_letter_max_bytes", "ts_floor", "future_tolerance_ms",
    "state_ttl_days",
    "state_sequence_length", "state_lateness_ms", "state_session_gap_ms",
    "state_exclusion_days", "state_max_recent_purchases", "state_idle_fetch_limit",
    "state_members_per_call", "churn_alert_threshold", "churn_rearm_threshold",
    "churn_alert_quantile", "churn_rearm_quantile", "churn_cooldown_days",
    "churn_reasons", "rec_material_top",
    "rec_min_interval_minutes", "coupon_rules", "tier_names", "tier_min_spend",
    "tier_full_history_days", "idle_gap_multiple", "idle_default_days", "idle_recheck_days",
    "train_hidden", "train_layers", "train_heads", "train_ffn", "train_dropout",
    "train_epochs", "train_batch_size", "train_learning_rate", "train_patience",
    "train_horizon_days", "train_sequence_length", "train_stride_days",
    "train_min_item_count", "train_hash_buckets", "train_price_buckets", "train_threads",
    "train_validation", "train_sampled_negatives", "train_short_horizon_weight",
    "train_latest_weight", "train_repeat_lr_scale", "train_loo_epochs",
    "train_loo_patience", "train_loo_sampled_negatives",
    "train_loo_windows", "train_sasrec_hidden", "train_sasrec_blocks", "train_sasrec_dropout",
    "train_sasrec_max_length", "train_sasrec_max_epochs", "train_sasrec_patience",
    "default_model_members", "default_model_days",
    "default_model_epochs", "model_registry", "model_top_k", "model_refresh_s",
    "scorer_threads", "scorer_allow_spinning", "stack_kafka_port", "stack_redis_port",
    "stack_start_timeout_s", "stack_stop_grace_s", "stack_redis_appendonly",
    "stack_redis_appendfsync", "tansu_bin", "redis_server_bin",
)  # fmt: skip


def test_flat_names_are_exactly_those_before_the_sections() -> None:
    assert sorted(Settings.flat_names()) == sorted(FLAT_NAMES)  # the order may differ
    assert len(Settings.flat_names()) == len(FLAT_NAMES)
    assert sorted(Settings().redacted()) == sorted(FLAT_NAMES)


def test_every_flat_name_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_KAFKA_BOOTSTRAP", "b1:9092")
    monkeypatch.setenv("memberpulse_redis_key_prefix", "lower")  # any case, as before
    monkeypatch.setenv("MEMBERPULSE_TIER_NAMES", '["a", "b", "c", "d"]')  # JSON, as before
    monkeypatch.setenv("MEMBERPULSE_SCORER_THREADS", "3")
    settings = Settings()
    assert settings.kafka.bootstrap == "b1:9092"
    assert settings.redis.key_prefix == "lower"
    assert settings.decisions.tier_names == ("a", "b", "c", "d")
    assert settings.serving.scorer_threads == 3
    assert settings.is_set("kafka_bootstrap")
    assert not settings.is_set("redis_url")


def test_each_section_holds_its_own_names() -> None:
    settings = Settings(kafka_bootstrap="b:1", state_sequence_length=9, train_hidden=16)
    assert (settings.kafka.bootstrap, settings.state.sequence_length) == ("b:1", 9)
    assert settings.training.hidden == 16
    assert settings.value("train_hidden") == 16
    owners = {flat: name for name, model in SECTIONS.items() for flat in model.flat_names()}
    assert owners["topic_dlq"] == "kafka"
    assert owners["batch_max_size"] == "worker"
    assert owners["scorer_threads"] == "serving"
    assert owners["default_model_epochs"] == "training"
    assert owners["redis_server_bin"] == "stack"
    assert len(owners) == len(FLAT_NAMES) - 1  # every name but `home` in exactly one section


def test_model_copy_takes_flat_names_and_keeps_the_rest() -> None:
    settings = Settings(redis_key_prefix="a", batch_max_size=64)
    copy = settings.model_copy(update={"redis_key_prefix": "b", "home": Path("/tmp/h")})
    assert (copy.redis.key_prefix, copy.home, copy.worker.batch_max_size) == (
        "b",
        Path("/tmp/h"),
        64,
    )
    assert settings.redis.key_prefix == "a"
    with pytest.raises(ValueError, match="no_such_setting"):
        settings.model_copy(update={"no_such_setting": 1})


def test_a_section_alone_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_TOPIC_DLQ", "elsewhere")
    assert KafkaSettings().topic_dlq == "member.events.dlq"
    assert Settings().kafka.topic_dlq == "elsewhere"


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_password="hunter2")
    assert "hunter2" not in str(caught.value)


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_INPUT_PARTITIONS", "8")
    monkeypatch.setenv("MEMBERPULSE_HOME", "/tmp/somewhere")
    monkeypatch.setenv("MEMBERPULSE_TS_FLOOR", "2010-01-01")
    settings = Settings()
    assert settings.kafka.input_partitions == 8
    assert settings.home == Path("/tmp/somewhere")
    assert settings.worker.ts_floor == parse_ts("2010-01-01")


def test_explicit_values_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_BATCH_MAX_SIZE", "64")
    assert Settings(batch_max_size=128).worker.batch_max_size == 128


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(ValidationError, match="batch_size_typo"):
        Settings(batch_size_typo=1)  # type: ignore[call-arg]


def test_hysteresis_thresholds_are_checked() -> None:
    with pytest.raises(ValidationError, match="rearm"):
        Settings(churn_alert_threshold=0.5, churn_rearm_threshold=0.6)


def test_sasl_needs_credentials() -> None:
    with pytest.raises(ValidationError, match="kafka_sasl_username"):
        Settings(kafka_security_protocol="SASL_SSL")


def test_secrets_are_masked_when_shown() -> None:
    settings = Settings(
        redis_url="rediss://app:hunter2@redis.example:6380/0",
        redis_password="s3cret-redis",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret-kafka",
    )
    shown = repr(settings) + str(settings.redacted())
    for secret in ("hunter2", "s3cret-redis", "s3cret-kafka"):
        assert secret not in shown
    assert settings.redacted()["redis_url"] == "rediss://app:***@redis.example:6380/0"


def test_kafka_client_config_carries_tls_and_sasl(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = Settings(
        kafka_bootstrap="b1:9093,b2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=ca,
    )
    config = client_config(settings.kafka)
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-256",
        "svc",
        "pw",
    )
    assert config["ssl.ca.location"] == str(ca)


def test_plaintext_config_has_no_credentials() -> None:
    config = client_config(Settings().kafka)
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)


def test_redact_url_without_password_is_unchanged() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [
        ("click", "member.clicks"),
        ("add_to_cart", "member.clicks"),
        ("browse", "member.browses"),
        ("search", "member.browses"),
        ("purchase", "member.purchases"),
    ],
)
def test_topic_for_type(event_type: str, topic: str) -> None:
    assert Settings().kafka.topic_for_type(event_type) == topic


def test_topic_for_unknown_type_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="teleport"):
        Settings().kafka.topic_for_type("teleport")


def test_local_profile_shortens_group_timing_production_keeps_defaults() -> None:
    from memberpulse.streams.worker.kafka import group_timing_ms

    assert group_timing_ms(Settings(kafka_profile="local").kafka) == {
        "session_timeout_ms": 4000,
        "heartbeat_interval_ms": 1000,
    }
    assert group_timing_ms(Settings(kafka_profile="production").kafka) == {}


def test_stream_buffer_is_counted_in_records_whatever_an_item_holds() -> None:
    from memberpulse.streams.worker.app import stream_buffer_items

    # Batch delivery: an item is up to one poll; the buffer holds the records' worth of polls.
    assert stream_buffer_items(Settings(batch_max_size=512)) == 8
    assert stream_buffer_items(Settings(worker_stream_buffer_records=1000, batch_max_size=512)) == 2
    assert (
        stream_buffer_items(Settings(worker_stream_buffer_records=10, worker_max_poll_records=64))
        == 1
    )
    # Per-message delivery: an item is one record.
    assert stream_buffer_items(Settings(worker_delivery="message")) == 4096


def test_each_protocol_trains_with_its_own_softmax_size_epochs_and_patience() -> None:
    training = Settings(train_sampled_negatives=256, train_loo_sampled_negatives=1024).training
    time_protocol = training.config(protocol="time")
    leave_one_out = training.config(protocol="leave-one-out")
    assert (time_protocol.sampled_negatives, leave_one_out.sampled_negatives) == (256, 1024)
    assert (time_protocol.epochs, leave_one_out.epochs) == (training.epochs, training.loo_epochs)
    assert leave_one_out.patience == training.loo_patience
    assert Settings().training.config(protocol="leave-one-out").sampled_negatives == 0  # full
