"""The settings object: env prefix, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from memberpulse.models.timeutil import parse_ts
from memberpulse.streams.settings import Settings, redact_url
from memberpulse.streams.worker.kafka import client_config


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_INPUT_PARTITIONS", "8")
    monkeypatch.setenv("MEMBERPULSE_HOME", "/tmp/somewhere")
    monkeypatch.setenv("MEMBERPULSE_TS_FLOOR", "2010-01-01")
    settings = Settings()
    assert settings.input_partitions == 8
    assert settings.home == Path("/tmp/somewhere")
    assert settings.ts_floor == parse_ts("2010-01-01")


def test_explicit_values_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_BATCH_MAX_SIZE", "64")
    assert Settings(batch_max_size=128).batch_max_size == 128


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
    config = client_config(settings)
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-256",
        "svc",
        "pw",
    )
    assert config["ssl.ca.location"] == str(ca)


def test_plaintext_config_has_no_credentials() -> None:
    config = client_config(Settings())
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
    assert Settings().topic_for_type(event_type) == topic


def test_topic_for_unknown_type_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="teleport"):
        Settings().topic_for_type("teleport")


def test_local_profile_shortens_group_timing_production_keeps_defaults() -> None:
    from memberpulse.streams.worker.kafka import group_timing_ms

    assert group_timing_ms(Settings(kafka_profile="local")) == {
        "session_timeout_ms": 4000,
        "heartbeat_interval_ms": 1000,
    }
    assert group_timing_ms(Settings(kafka_profile="production")) == {}


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
