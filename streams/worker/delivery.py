"""Per-partition batch delivery: one Faust stream item per fetched partition batch.

Faust hands an agent one message at a time, and that per-message machinery is the consume
ceiling the benchmark measures (docs/architecture.md, "Known pitfalls": `_drain_messages`
→ `wait_first` per message, the conductor's `on_message`, the stream iterator). This
module delivers each partition's share of one fetch as a single `Message` whose value is
the tuple of the fetched messages, so that cost is paid once per partition batch instead
of per event.

The price is two overridden methods of faust-streaming's aiokafka `Consumer`
(`_drain_messages`, private, and `ack`; the version is pinned in pyproject.toml and tests
run them against the real broker), plus `on_buffer_full`, which keeps a partition in the
fetch when the stream buffer is full (see `MessageConsumer`). The consumer thread is also
subclassed, to make the fetch wait Faust hard-codes (1.5 s) a setting: tansu holds fetches
for it. Everything else is Faust's own: the conductor, the stream and the commit logic.

Commit safety. A batch item carries the offset of its last record. When it is acknowledged
(after the agent processed its last record; a partition's records are released in offset
order), `ack` adds every offset of the batch to Faust's acknowledged offsets, from which
Faust commits the contiguous run (no Faust gap per batch: each is an `intervaltree`
insert, costly under live traffic). Nothing of a batch is acknowledged before that, so
nothing of it is committed before it was processed; a kill test in
tests/streams/worker/test_worker.py checks that a restarted worker's state is the fold of
every event. Offsets without a record (compaction, transaction markers) become Faust
gaps, as upstream does between messages.

(measurements: BENCHMARKS.md, "Batch delivery: what was measured")
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final, cast

import faust
from faust.serializers import codecs
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message

#: The value codec of topics read with batch delivery: the value is already a tuple of
#: messages, so decoding passes it through.
BATCH_CODEC: Final = "memberpulse-batch"


class _PassThrough(codecs.Codec):
    def _loads(self, s: Any) -> Any:
        return s

    def _dumps(self, s: Any) -> Any:
        return s


codecs.register(BATCH_CODEC, _PassThrough())


def batch_of(message: Any) -> tuple[Any, ...]:
    """The fetched messages a delivered batch message stands for, in offset order."""
    return cast(tuple[Any, ...], message.value)


class _FetchWaitThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait it hard-codes (1.5 s) made a setting."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(transport, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait  # read when the consumer starts its fetcher
        return consumer


class StockConsumer(faust_aiokafka.Consumer):
    """Faust's own consumer, unchanged but for the fetch wait setting (the benchmark's
    bare-agent ceilings use it: they measure Faust as it ships)."""

    def _new_consumer_thread(self) -> Any:
        return _FetchWaitThread(self, loop=self.loop, beacon=self.beacon)


class MessageConsumer(StockConsumer):
    """Faust's one-message-at-a-time consumer, with the fetch wait setting and fair
    back-pressure."""

    def on_buffer_full(self, tp: TP) -> None:
        """Leave the partition in the fetch: the conductor's blocking `put` into the full
        stream buffer is back-pressure enough, and it holds back every partition alike.

        Faust takes a partition out of the fetch when the buffer passes 80 % and puts it
        back from the queue's `get()` only when the queue is empty at that moment (mode's
        `FlowControlQueue.maybe_endorse_pressure_drop`). Under a steady backlog the other
        partitions can keep the queue from ever being empty, and the partition stays out,
        with the time aligner holding every other partition back while it waits for it.
        Found by reading the code while diagnosing the soak stalls (BENCHMARKS.md, "Soak");
        no run isolated it.
        """


class BatchConsumer(MessageConsumer):
    """aiokafka consumer that delivers one message per (fetch, partition)."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - see tests
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched: dict[TP, list[Message]] = {}
                await self.sleep(0)  # as upstream: getmany may not yield to the loop
                if not self.should_stop:
                    async for tp, message in self.getmany(timeout=1.0):
                        fetched.setdefault(tp, []).append(message)
                for tp, messages in fetched.items():
                    # The read offset is the last offset read, or after a seek the next one
                    # to read: upstream keeps offsets >= it, and so do we.
                    previous = read_offset[tp]
                    fresh = [m for m in messages if previous is None or m.offset >= previous]
                    if not fresh:
                        continue
                    last = fresh[-1]
                    if acks_enabled_for(last.topic):
                        await self._add_holes(tp, previous, fresh)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    # A ConsumerMessage: its final acknowledgement reaches Consumer.ack.
                    batch = ConsumerMessage(
                        last.topic,
                        last.partition,
                        last.offset,
                        last.timestamp,
                        last.timestamp_type,
                        None,
                        None,
                        cast(Any, tuple(fresh)),
                        None,
                        tp=tp,
                        generation_id=last.generation_id,
                    )
                    await self.wait_first(callback(batch), self.suspend_flow.wait())
                    read_offset[tp] = last.offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            # Stopped while a rebalance is under way: upstream's fetcher takes the
            # cancellation for a rebalance restart, records it as the app's crash and
            # the worker exits 1 after a clean shutdown (found with two workers, the
            # second stopping first). A stop is a normal end; a restart still raises.
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:  # as upstream: crash the app, do not spin on errors
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _add_holes(self, tp: TP, previous: int | None, fresh: list[Message]) -> None:
        """Offsets with no record (compaction, transaction markers) become gaps, as
        upstream does between messages: nothing will ever acknowledge them."""
        before = previous
        for message in fresh:
            if before is not None and message.offset - before > 1:
                await self._add_gap(tp, before + 1, message.offset - 1)
            before = message.offset

    def ack(self, message: Message) -> bool:
        """Acknowledge a batch item: its own offset, then every record's it stands for."""
        acked = bool(super().ack(message))
        batch = message.value
        if acked and isinstance(batch, tuple):
            tp = message.tp
            committed = self._committed_offset[tp]
            index, offsets = self._acked_index[tp], self._acked[tp]
            for record in batch[:-1]:
                offset = record.offset
                if (committed is None or offset >= committed) and offset not in index:
                    index.add(offset)
                    offsets.append(offset)
        return acked


class StockTransport(faust_aiokafka.Transport):
    """The aiokafka transport with Faust's own consumer and a fetch wait setting."""

    Consumer: ClassVar[type[Any]] = StockConsumer
    fetch_max_wait_ms: int | None = None


class MessageTransport(StockTransport):
    """The aiokafka transport with `MessageConsumer`."""

    Consumer = MessageConsumer


class BatchTransport(MessageTransport):
    """The aiokafka transport with `BatchConsumer`."""

    Consumer = BatchConsumer


def use_worker_transport(app: faust.App, batches: bool, fetch_max_wait_ms: int | None) -> None:
    """Consume through `BatchConsumer` (or the per-message `MessageConsumer`) with the given
    fetch wait; call before the app's first topic is created (topics reach the transport)."""
    _use(app, BatchTransport if batches else MessageTransport, fetch_max_wait_ms)


def use_stock_transport(app: faust.App, fetch_max_wait_ms: int | None) -> None:
    """Consume through Faust's own consumer, with only the fetch wait set (same timing)."""
    _use(app, StockTransport, fetch_max_wait_ms)


def _use(app: faust.App, kind: type[StockTransport], fetch_max_wait_ms: int | None) -> None:
    transport = kind(app.conf.broker_consumer, app)
    transport.fetch_max_wait_ms = fetch_max_wait_ms
    app.transport = transport
