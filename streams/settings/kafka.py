"""The Kafka section: brokers, security, topics and partitions, group timing of the local
profile, and the one place that renders them as librdkafka and aiokafka client configs."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from memberpulse.models.contract import ADD_TO_CART, BROWSE, CLICK, PURCHASE, SEARCH
from memberpulse.streams.settings.base import Section, section_config

KafkaProfile = Literal["local", "production"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(Section):
    """`kafka_*`, `topic_*`, `input_partitions`, `output_partitions`, `output_flush_timeout_s`."""

    model_config = section_config("kafka_")

    bootstrap: str = Field("127.0.0.1:9092", description="bootstrap servers, host:port,…")
    profile: KafkaProfile = Field(
        "local",
        description="local: short group session timeout for tansu; production: client defaults",
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    connect_timeout_s: float = Field(20.0, gt=0, description="deadline for a broker answer")
    # Group timing for the `local` profile. tansu holds every JoinGroup for half of the
    # session timeout: Faust's default 60 s means a 30 s wait before the first event.
    local_session_timeout_s: float = Field(4.0, gt=0)
    local_heartbeat_interval_s: float = Field(1.0, gt=0)
    local_fetch_max_wait_ms: int = Field(
        10,
        ge=0,
        description="kafka_profile=local: how long a consumer lets the broker hold a fetch "
        "(tansu holds it even when records arrive: 202 ms median delivery at 500 ms, "
        "3.4 ms at 10; Apache Kafka answers as soon as data is there)",
    )
    producer_linger_ms: int = Field(5, ge=0)
    output_flush_timeout_s: float = Field(
        30.0,
        gt=0,
        alias="output_flush_timeout_s",
        description="deadline for the broker to confirm a batch's outputs",
    )

    topic_clicks: str = Field("member.clicks", alias="topic_clicks")
    topic_browses: str = Field("member.browses", alias="topic_browses")
    topic_purchases: str = Field("member.purchases", alias="topic_purchases")
    topic_dlq: str = Field("member.events.dlq", alias="topic_dlq")
    topic_churn_alerts: str = Field("member.churn-alerts", alias="topic_churn_alerts")
    topic_recommendations: str = Field("member.recommendations", alias="topic_recommendations")
    topic_coupons: str = Field("member.coupons", alias="topic_coupons")
    topic_tiers: str = Field("member.tiers", alias="topic_tiers")
    input_partitions: int = Field(4, ge=1, alias="input_partitions")
    output_partitions: int = Field(4, ge=1, alias="output_partitions")

    @model_validator(mode="after")
    def _check_sasl(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol={self.security_protocol} needs "
                "kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password"
            )
        return self

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

    def librdkafka_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) settings shared by every client: bootstrap, TLS, SASL."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # checked by _check_sasl
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            optional = {
                "ssl.ca.location": self.ssl_cafile,
                "ssl.certificate.location": self.ssl_certfile,
                "ssl.key.location": self.ssl_keyfile,
            }
            config.update({key: str(path) for key, path in optional.items() if path is not None})
            if self.ssl_key_password is not None:
                config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return config

    def aiokafka_config(self) -> dict[str, Any]:
        """The same as aiokafka (and so Faust) takes it: `security_protocol`, the SASL
        fields and an `ssl_context` carrying the CA and client certificate."""
        config: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.endswith("SSL"):
            context = ssl.create_default_context(
                purpose=ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            )
            if self.ssl_certfile and self.ssl_keyfile:
                password = self.ssl_key_password
                context.load_cert_chain(
                    str(self.ssl_certfile),
                    str(self.ssl_keyfile),
                    password.get_secret_value() if password else None,
                )
            config["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # checked by _check_sasl
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return config
