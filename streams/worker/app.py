"""The Faust app: one agent over the three input topics, micro-batches into the batch path.

The agent takes micro-batches (`noack_take(n, within=max_wait)`; by default each stream
item is one partition's share of a fetch, streams/worker/delivery.py), hands them to
the time aligner (streams/worker/align.py: records wait until the other co-partitioned topics
have caught up in time, so a topic read ahead does not make the others "too late"), and
runs what it releases through `BatchProcessor.process` on one worker thread (inference,
Redis and the producer flush stay off the event loop, which keeps heartbeats and the web
server alive). Each event is acknowledged only after its batch returned — outputs
confirmed — so Faust never commits an offset past an unprocessed record, held ones
included. One thread means batches, idle checks included, are decided and produced
strictly in order.

Transient failures (Redis away, outputs unconfirmed) retry the same batch with backoff
and mark the worker not ready; anything else crashes the worker with a non-zero exit
rather than skipping a batch. See docs/architecture.md for why state lives in Redis and not
in Faust tables, and for the tansu group-join settings (`kafka_profile=local`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, cast

import faust
from confluent_kafka import KafkaException
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from memberpulse.models.errors import ConfigError, OutputsNotConfirmed, StateUnavailable
from memberpulse.streams.decisions import Policy
from memberpulse.streams.decisions.coupons import load_rules
from memberpulse.streams.serving.registry import ModelHolder, Registry, redis_promoted
from memberpulse.streams.serving.scorer import Scorer
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.store import RedisState
from memberpulse.streams.worker import metrics
from memberpulse.streams.worker.align import TimeAligner
from memberpulse.streams.worker.delivery import BATCH_CODEC, batch_of, use_worker_transport
from memberpulse.streams.worker.kafka import fetch_max_wait_ms, group_timing_ms, partition_counts
from memberpulse.streams.worker.logs import logging_config
from memberpulse.streams.worker.processor import BatchProcessor, BatchReport
from memberpulse.streams.worker.records import Decoded, InRecord
from memberpulse.streams.worker.runtime import tune_gc
from memberpulse.streams.worker.sink import KafkaSink

log = logging.getLogger(__name__)

TRANSIENT: Final = (StateUnavailable, OutputsNotConfirmed, KafkaException)
_MS: Final = 1000.0
# Prometheus' text format; aiohttp wants the charset apart, and UTF-8 is its default.
_METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4"


class Worker:
    """Everything one worker process holds: the Faust app, the batch path, its health."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        check_input_partitions(settings)
        check_output_topics(settings)
        store = RedisState(settings)
        registry = Registry(settings.registry_root)
        self.models = ModelHolder(
            registry,
            promoted=_promoted(registry, store, settings.redis.key_prefix),
            make_scorer=functools.partial(
                Scorer,
                threads=settings.serving.scorer_threads,
                allow_spinning=settings.serving.scorer_allow_spinning,
            ),
        )
        self.models.refresh()
        self.models.current()  # no model in service: refuse to start, saying where to put one
        self.sink = KafkaSink(settings.kafka)
        policy = Policy.from_settings(
            settings.decisions, load_rules(settings.decisions.coupon_rules)
        )
        self.processor = BatchProcessor(settings, store, self.models, self.sink, policy)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self.failing: str | None = None  # the last transient failure, while it lasts
        self.first_event_at: float | None = None
        self.reports = 0
        self.aligner: TimeAligner[tuple[Decoded, Any]] = TimeAligner(
            settings.kafka.input_topics,
            settings.worker.align_idle_ms,
            max_held=settings.worker.align_max_held,
            stall_s=settings.worker.align_stall_ms / _MS,
            slack_ms=(
                settings.state.lateness_ms // 2
                if settings.worker.align_slack_ms is None
                else settings.worker.align_slack_ms
            ),
        )
        self._stream: Any = None
        self._lag_series: set[tuple[str, int]] = set()  # (topic, partition) reported here
        self._batch_lock = asyncio.Lock()
        self._stopping = False  # one release (or idle pass) at a time, in order
        self._revoking = False  # between a revocation and the next assignment
        self._stale = 0  # records left unacknowledged since the last revocation
        self.app = self._build_app()

    # --- the Faust app ------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.worker.group_id,
            web_enabled=True,
            web_port=s.worker.web_port,
            web_bind=s.worker.web_bind,
            web_in_thread=False,
            # Held (unacked) records of a revoked partition are dropped, not awaited: a
            # rebalance must not wait for records the aligner holds back on purpose.
            stream_wait_empty=False,
            stream_buffer_maxsize=stream_buffer_items(s),
            **faust_options(s),
        )
        batches = s.worker.delivery == "batch"
        use_worker_transport(app, batches, fetch_max_wait_ms(s.kafka))  # before the first topic
        inputs = app.topic(
            *s.kafka.input_topics,
            value_serializer=BATCH_CODEC if batches else "raw",
            key_serializer="raw",
        )
        within = s.worker.batch_max_wait_ms / _MS
        # Faust's take counts stream items, whatever each holds. With batch delivery an item
        # is one partition's share of a fetch: live, a few records. Taking only one item per
        # partition made live micro-batches tiny (per-batch costs dominated: the demo's p50
        # went from 347 ms to 6.5 s), so the batching window decides there, as it does per
        # message; `_release` still processes at most `batch_max_size` records at a time.
        take = s.worker.batch_max_size

        @app.agent(inputs, name="memberpulse-score")
        async def score(stream: Any) -> None:
            self._stream = stream
            # noack_take: items are acknowledged once their records are processed, so
            # records held by the aligner keep the committed offsets behind them.
            async for events in stream.noack_take(take, within=within):
                if self.first_event_at is None:
                    self.first_event_at = time.monotonic()
                events = self._current(events, app.consumer_generation_id, batches)
                records, owners = _unpack(events) if batches else _one_each(events)
                decoded = self.processor.decode(records)
                self.aligner.add(
                    (d.record, d.ts, (d, owner)) for d, owner in zip(decoded, owners, strict=True)
                )
                await self._release(app)

        @app.timer(interval=s.worker.idle_tick_s)  # type: ignore[untyped-decorator]
        async def idle_checks() -> None:
            partitions = sorted(
                {
                    tp.partition
                    for tp in app.consumer.assignment()
                    if tp.topic in s.kafka.input_topics
                }
            )
            if partitions:
                await self._tick(app, partitions)
            self._update_lag(app)

        @app.timer(interval=s.worker.align_idle_ms / _MS)  # type: ignore[untyped-decorator]
        async def release_held() -> None:
            # Records held for a partition that has since gone quiet; skipped while a batch
            # runs (its end releases anyway).
            if self.aligner.held and not self._batch_lock.locked():
                await self._release(app)

        async def revoked(_sender: Any, revoked: set[Any], **_kwargs: Any) -> None:
            # Eager rebalances revoke every partition: whatever was fetched before and is
            # still on its way to the agent is now someone else's.
            self._revoking = True
            dropped = self.aligner.drop((tp.topic, tp.partition) for tp in revoked)
            if dropped:
                log.info("rebalance: %d held records of revoked partitions left unacked", dropped)

        async def assigned(_sender: Any, _assigned: set[Any], **_kwargs: Any) -> None:
            self._revoking = False  # records of the new generation are ours again
            if self._stale:  # one line per rebalance, not one per take
                log.info("rebalance: %d stale records left unacknowledged", self._stale)
                self._stale = 0

        cast(Any, app.on_partitions_revoked).connect(revoked)
        cast(Any, app.on_partitions_assigned).connect(assigned)

        @app.page("/metrics")
        async def metrics_view(view: View, _request: Request) -> Response:
            return view.bytes(generate_latest(), content_type=_METRICS_CONTENT_TYPE)

        @app.page("/health")
        async def health(view: View, _request: Request) -> Response:
            return view.json({"status": "ok"})

        @app.page("/ready")
        async def ready(view: View, _request: Request) -> Response:
            assigned = len(app.consumer.assignment())
            body = {
                "ready": assigned > 0 and self.failing is None,
                "assigned_partitions": assigned,
                "model_version": self.models.loaded.version if self.models.loaded else None,
                "failing": self.failing,
            }
            return view.json(body, status=200 if body["ready"] else 503)

        async def drain(_sender: Any, **_kwargs: Any) -> None:
            # No new batch starts; the one in flight finishes (its events acknowledged, so
            # Faust commits them as it stops); then the producer is flushed and closed.
            self._stopping = True
            async with self._batch_lock:
                await asyncio.get_running_loop().run_in_executor(None, self._close)

        cast(Any, app.on_before_shutdown).connect(drain)  # mode types receivers narrowly

        _ = (score, idle_checks, release_held, assigned, metrics_view, health, ready, drain)
        return app

    def _current(self, events: list[Any], generation: int, batches: bool) -> list[Any]:
        """The take's items still ours: fetched in the current group generation.

        Faust skips a stale message as it leaves the stream, but `noack_take` hands over
        what it buffered before the rebalance. Processed, those records would race their
        partition's next owner, who reads from the committed offset: records applied here
        past the ones the aligner dropped at the revocation make those look redelivered
        to the state, and lose them (1 member in 119 in a CI rebalance run). They are
        left unacknowledged instead; the next owner reads them again.
        """
        fresh: list[Any] = []
        stale: list[Any] = []
        for event in events:
            ours = _fresh(event.message.generation_id, generation, self._revoking)
            (fresh if ours else stale).append(event)
        if stale:
            records = sum(len(batch_of(e.message)) for e in stale) if batches else len(stale)
            metrics.STALE.inc(records)
            self._stale += records
        return fresh

    async def _release(self, app: faust.App) -> None:
        """Process what the aligner lets go, in batches, then acknowledge it.

        Under the batch lock: the agent and the timer both release, and a release split
        into several batches must finish before a later release starts, or later events
        would overtake earlier ones.
        """
        async with self._batch_lock:
            if self._stopping:
                return
            consumer = app.consumer
            # A partition that delivered nothing since its assignment (say, no new records
            # after a restart) is caught up when the group's committed offset — where its
            # reading starts — is at its end. (The fetch position is not: it runs ahead of
            # what reached the agent, which released records early: 267 too late in CI.)
            committed = getattr(consumer, "_committed_offset", {})  # no public accessor

            def caught_up(topic: str, partition: int, last_offset: int) -> bool:
                tp = TP(topic, partition)
                if tp not in consumer.assignment():
                    # mid-rebalance (aiokafka asserts on an unassigned partition's
                    # highwater, and that crashed the worker when a second one joined):
                    # not caught up, so its records wait for the next release
                    return False
                high = consumer.highwater(tp)
                if high is None:
                    return False
                if last_offset < 0:
                    start = committed.get(tp)
                    return high == 0 if start is None else start >= high
                return last_offset + 1 >= high

            forced = self.aligner.forced
            released = self.aligner.release(caught_up)
            metrics.ALIGN_HELD.set(self.aligner.held)
            metrics.ALIGN_FORCED.inc(self.aligner.forced - forced)
            self._update_lag(app)
            size = self.settings.worker.batch_max_size
            for start in range(0, len(released), size):
                chunk = released[start : start + size]
                items = [decoded for _record, _ts, (decoded, _event) in chunk]
                started = time.monotonic()
                await self._run(app, functools.partial(self.processor.process_decoded, items))
                self.aligner.note_busy(time.monotonic() - started)
            # Acknowledged once the whole release is processed: it comes out in event-time
            # order, which within a partition can differ from offset order (a prefix of each
            # partition's records is released), and a batch item's acknowledgement stands
            # for every offset of its batch.
            for _record, _ts, (_decoded, event) in released:
                if event is not None:  # a batch's last record carries its event
                    await self._stream.ack(event)

    async def _tick(self, app: faust.App, partitions: list[int]) -> None:
        async with self._batch_lock:
            if self._stopping:
                return
            started = time.monotonic()
            await self._run(app, functools.partial(self.processor.tick, partitions))
            self.aligner.note_busy(time.monotonic() - started)

    async def _run(self, app: faust.App, work: Any) -> BatchReport:
        """Run one batch on the batch thread; retry transient failures, crash on others."""
        loop = asyncio.get_running_loop()
        delay = self.settings.worker.retry_backoff_s
        while True:
            try:
                report: BatchReport = await loop.run_in_executor(self.executor, work)
            except TRANSIENT as exc:
                if self._stopping:  # shutting down: leave the batch unacknowledged
                    raise asyncio.CancelledError from exc
                self.failing = f"{type(exc).__name__}: {exc}"
                log.warning("batch failed, retrying in %.1f s: %s", delay, self.failing)
                await asyncio.sleep(delay)  # backoff before retrying the same batch
                delay = min(delay * 2, self.settings.worker.retry_backoff_max_s)
                continue
            except Exception as exc:
                log.exception("batch failed with an unexpected error; stopping the worker")
                await app.crash(exc)
                raise
            self.failing = None
            self.reports += 1
            return report

    def _update_lag(self, app: faust.App) -> None:
        if app.rebalancing:  # the old assignment lingers until the rejoin completes
            return
        consumer = app.consumer
        held = set()
        inputs = self.settings.kafka.input_topics
        for tp in consumer.assignment():
            if tp.topic not in inputs:  # Faust's own assignor topic is nobody's lag
                continue
            high = consumer.highwater(tp)
            read = getattr(consumer, "_read_offset", {}).get(tp)  # no public read position
            if high is not None:
                lag = high - (read + 1 if read is not None else 0)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(lag, 0))
                held.add((tp.topic, tp.partition))
        for topic, partition in self._lag_series - held:  # moved to another worker
            with contextlib.suppress(KeyError):  # KeyError: already gone
                metrics.CONSUMER_LAG.remove(topic, str(partition))
        self._lag_series = held

    def _close(self) -> None:
        self.executor.shutdown(wait=True)
        self.sink.close()

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (exits non-zero if the worker crashed)."""
        level = self.settings.worker.log_level
        worker = faust.Worker(
            self.app,
            loglevel=level,
            logging_config=logging_config(level),
            redirect_stdouts=False,
            quiet=True,
        )
        log.info(
            "worker starting: group %s, inputs %s, web :%d, model %s",
            self.settings.worker.group_id,
            ",".join(self.settings.kafka.input_topics),
            self.settings.worker.web_port,
            self.models.current().version,
        )
        tune_gc(self.settings.worker)
        worker.execute_from_commandline()


def _fresh(fetched_in: int | None, current: int, revoking: bool) -> bool:
    """Whether a record fetched in group generation `fetched_in` may still be processed:
    it comes from the current generation, and no rebalance is under way (between a
    revocation and the next assignment, no record is anyone's).

    A flag rather than the revoked generation's id: the first join revokes nothing under
    generation 0, and tansu's first generation is 0 too (comparing ids stalled a fresh
    worker until a second one joined; the broker-pause test found it).
    """
    return fetched_in == current and not revoking


def _one_each(events: list[Any]) -> tuple[list[InRecord], list[Any]]:
    """Records of per-message stream items, each owning its event."""
    return [_record(e.message) for e in events], events


def _unpack(events: list[Any]) -> tuple[list[InRecord], list[Any]]:
    """Records of batch stream items; only a batch's last record owns (acks) its event.

    Records of one partition are released in offset order, so the batch's event is
    acknowledged after all of its records were processed.
    """
    records: list[InRecord] = []
    owners: list[Any] = []
    for event in events:
        messages = batch_of(event.message)
        records += map(_record, messages)
        owners += [None] * (len(messages) - 1)
        owners.append(event)
    return records, owners


def _record(message: Any) -> InRecord:
    return InRecord(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value if message.value is not None else b"",  # a tombstone: a dead letter
        round(message.timestamp * _MS),
    )


def check_input_partitions(settings: Settings) -> dict[str, int]:
    """The input topics must exist with equal partition counts (co-partitioned by member)."""
    counts = partition_counts(settings.kafka, settings.kafka.input_topics)
    missing = [t for t in settings.kafka.input_topics if not counts.get(t)]
    if missing:
        raise ConfigError(
            f"input topics {missing} do not exist on {settings.kafka.bootstrap}: create them "
            f"with {settings.kafka.input_partitions} partitions each (`memberpulse stack up` does)"
        )
    if len(set(counts.values())) != 1:
        raise ConfigError(
            f"input topics must have equal partition counts (a member's events must share "
            f"a partition number), got {counts}"
        )
    return counts


def check_output_topics(settings: Settings) -> None:
    """The output and DLQ topics must exist: a produce to a missing one would fail (or,
    where the broker creates topics on first use, land in a topic nobody configured)."""
    kafka = settings.kafka
    wanted = [*kafka.output_topics, kafka.topic_dlq]
    counts = partition_counts(kafka, wanted)
    missing = [t for t in wanted if not counts.get(t)]
    if missing:
        raise ConfigError(
            f"output topics {missing} do not exist on {kafka.bootstrap}: create them "
            "(`memberpulse stack up` does, with the partitions of the kafka_* settings)"
        )


def _promoted(registry: Registry, store: RedisState, prefix: str) -> Any:
    """The deployment-wide promoted version (Redis) when set, else the registry's link."""
    from_redis = redis_promoted(store.client, prefix)

    def read() -> str | None:
        return from_redis() or registry.current()

    return read


def poll_records(settings: Settings) -> int:
    """Records per consumer poll (Faust's `broker_max_poll_records`)."""
    return settings.worker.poll_records


def stream_buffer_items(settings: Settings) -> int:
    """Faust's stream buffer, in stream items, for `worker_stream_buffer_records` records.

    With batch delivery an item is one partition's share of a poll (up to the poll size),
    so Faust's 4,096 items could hold 4,096 polls: the whole backlog of a drain. Sized in
    records it is a few polls, which the agent's take (up to `batch_max_size` items)
    empties every batch.
    """
    s = settings
    if s.worker.delivery == "message":
        return s.worker.stream_buffer_records
    return max(1, -(-s.worker.stream_buffer_records // poll_records(s)))


def faust_options(settings: Settings) -> dict[str, Any]:
    """The broker, consumer and producer options of every Faust app here (the worker and
    the benchmark's ceiling agents, so that they are measured like for like)."""
    s = settings
    datadir = s.home / "worker" / s.worker.group_id
    datadir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": [f"kafka://{host}" for host in s.kafka.bootstrap.split(",")],
        "broker_credentials": _credentials(s),
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_partitions": s.kafka.input_partitions,
        "consumer_auto_offset_reset": s.worker.offset_reset,
        # Unbounded polls were measured ~10% faster on a bare agent, but let the worker see
        # stale high watermarks of partitions Faust paused: 29k of 100k events too late.
        "broker_max_poll_records": poll_records(s),
        "datadir": str(datadir),
        "producer_linger": s.kafka.producer_linger_ms / _MS,
    }
    timing = group_timing_ms(s.kafka)
    if timing:
        options["broker_session_timeout"] = timing["session_timeout_ms"] / _MS
        options["broker_heartbeat_interval"] = timing["heartbeat_interval_ms"] / _MS
    return options


def _credentials(settings: Settings) -> Any:
    """Faust's credentials object for the Kafka section's aiokafka config."""
    config = settings.kafka.aiokafka_config()
    protocol = config["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=config["sasl_plain_username"],
            password=config["sasl_plain_password"],
            mechanism=config["sasl_mechanism"],
            ssl_context=config.get("ssl_context"),
        )
    return faust.SSLCredentials(config["ssl_context"])
