"""One exception tree for MemberPulse, each carrying the context needed to act on it.

It lives in `models/`, the lowest layer, so that every package (the build side in
`export/` too) derives its errors from `MemberPulseError` and the CLI can turn any of
them into a one-line `error: …` instead of a traceback.
"""

from __future__ import annotations


class MemberPulseError(Exception):
    """Base of every error MemberPulse raises on purpose."""


class ConfigError(MemberPulseError):
    """A setting is missing, malformed or inconsistent with another."""


class StackError(MemberPulseError):
    """The local stack (tansu broker, redis-server) could not be started, found or stopped."""


class KafkaUnavailable(MemberPulseError):
    """The Kafka bootstrap servers did not answer within the deadline."""

    def __init__(self, bootstrap: str, detail: str) -> None:
        super().__init__(f"Kafka at {bootstrap} is unavailable: {detail}")
        self.bootstrap = bootstrap
        self.detail = detail


class StateUnavailable(MemberPulseError):
    """Redis did not answer (or kept failing) within the retry bound."""


class StateCorrupt(MemberPulseError):
    """A member's stored state does not decode. Never retried: the batch path isolates the
    member and dead-letters its events (`processing_failed`)."""


class PoisonLimit(MemberPulseError):
    """More of a batch failed member by member than a data fault explains: the fault is in
    the code, the model or the store, and the worker stops instead of dead-lettering."""


class BadEvent(MemberPulseError):
    """An input event failed validation; `reason` is the machine-readable DLQ code."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        where = f" ({topic}[{partition}]@{offset})" if topic is not None else ""
        super().__init__(f"{reason}: {message}{where}")
        self.reason = reason
        self.message = message
        self.topic = topic
        self.partition = partition
        self.offset = offset


class ModelRejected(MemberPulseError):
    """A model version failed a check and was not put into service (schema hash mismatch,
    corrupt or unreadable file, unloadable graph)."""

    def __init__(self, version: str, reason: str, detail: str) -> None:
        super().__init__(f"model {version} refused ({reason}): {detail}")
        self.version, self.reason, self.detail = version, reason, detail


class NoModel(MemberPulseError):
    """No model version is in service (none was promoted into the registry yet)."""


class BenchmarkFailed(MemberPulseError):
    """A benchmark could not take its measurement (a process died, events went missing)."""


class ParityError(MemberPulseError):
    """The exported graph does not reproduce the PyTorch model."""


class OutputsNotConfirmed(MemberPulseError):
    """The broker did not confirm every output record of a batch."""
