"""Rolling member state in Redis: one round trip per micro-batch, idempotent, bounded.

`apply` sends one pipeline: an `apply.lua` call per touched member (atomic per member),
budget releases, and the idle-due fetch of each partition; `record` sends one pipeline:
budget reservations, then a `record.lua` call per member and the idle-schedule updates.
On a Cluster a pipeline is one call per node, and the idle fetch takes a second step.
Re-sending a pipeline is always safe: each member's state records the highest offset it
applied per source partition and ignores anything at or below it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import msgpack
import redis
from redis.cluster import RedisCluster

from memberpulse.models.snapshot import (
    TYPE_INDEX,
    DecisionState,
    MemberSnapshot,
    cents,
    id_hash,
    month_of_day,
)
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams import keys
from memberpulse.streams.errors import StateUnavailable
from memberpulse.streams.redis_client import RedisClient, make_redis
from memberpulse.streams.scripts import load_sources, register
from memberpulse.streams.settings import Settings
from memberpulse.streams.state_codec import (
    NO_CATEGORY,
    NO_PRICE,
    snapshot_from_state,
    split_value,
    unpack_state,
)
from memberpulse.streams.state_types import (
    ApplyResult,
    DecisionRecord,
    RecordResult,
    Reservation,
    SourcedEvent,
    StateStore,
    decode_decision,
    encode_decision,
)

__all__ = [
    "ApplyResult",
    "DecisionRecord",
    "RecordResult",
    "RedisState",
    "Reservation",
    "SourcedEvent",
    "StateStore",
]

T = TypeVar("T")


class _Sent(NamedTuple):
    """The raw replies of one apply round trip, with what is needed to decode them."""

    now: int
    partition_now: Mapping[int, int]
    members: list[str]
    by_member: dict[str, list[SourcedEvent]]
    member_replies: list[Any]
    idle_replies: list[tuple[int, Any]]  # (partition, reply)
    budget_replies: list[tuple[tuple[str, int], Any]]


class RedisState:
    """The Redis implementation of `StateStore` (standalone Redis 6.2+/7 or Cluster)."""

    def __init__(self, settings: Settings, client: RedisClient | None = None) -> None:
        self._settings = settings
        self._spec = settings.state_spec()
        self._client = client or make_redis(settings)
        self._cluster = isinstance(self._client, RedisCluster)
        self._scripts = load_sources()
        self._sha = {name: script.sha for name, script in self._scripts.items()}
        self._prefix = settings.redis_key_prefix
        self._ttl = settings.state_ttl_ms
        self._sources = {name: index for index, name in enumerate(settings.input_topics)}
        self.round_trips = 0
        spec = self._spec
        self._apply_common: bytes = msgpack.packb(
            (
                self._ttl,
                spec.sequence_length,
                spec.lateness_ms,
                spec.session_gap_ms,
                spec.exclusion_days,
                spec.max_recent_purchases,
            )
        )
        self._with_retries(lambda: register(self._client, self._scripts))

    @property
    def client(self) -> RedisClient:
        """The underlying Redis client."""
        return self._client

    @property
    def prefix(self) -> str:
        """The key prefix this store writes under."""
        return self._prefix

    # --- round trip 1 -------------------------------------------------------------------

    def apply(
        self,
        events: Sequence[SourcedEvent],
        now: int,
        delivered: Mapping[str, Sequence[str]] | None = None,
        idle_partitions: Sequence[int] = (),
        releases: Sequence[Reservation] = (),
        partition_now: Mapping[int, int] | None = None,
        budgets: Sequence[tuple[str, int]] = (),
    ) -> ApplyResult:
        """Apply a micro-batch; return snapshots, decision states, pending outbox, idle-due.

        `now` is the batch's event time; `partition_now` (partition → event time) overrides
        it per partition, for snapshots and idle fetches alike. `delivered`: outbox ids
        confirmed since the last call, per member (cleared here). `releases`: budget
        reservations to give back. `budgets`: (budget, day) ledgers whose spent total to read.
        """
        sent = self._send(
            events, now, delivered or {}, idle_partitions, releases, partition_now or {}, budgets
        )
        return self._finish(sent)

    def apply_stream(
        self, batches: Iterable[tuple[Sequence[SourcedEvent], int]]
    ) -> Iterator[ApplyResult]:
        """`apply` over (events, now) batches in order, overlapping the Redis round trip of
        batch N+1 with decoding the snapshots of batch N (one I/O thread; the GIL is free
        while it waits on the socket). Round trips stay strictly in batch order.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-io") as io:
            pending: Future[_Sent] | None = None
            for events, now in batches:
                sent = io.submit(self._send, events, now, {}, (), (), {}, ())
                if pending is not None:
                    yield self._finish(pending.result())
                pending = sent
            if pending is not None:
                yield self._finish(pending.result())

    def _send(
        self,
        events: Sequence[SourcedEvent],
        now: int,
        delivered: Mapping[str, Sequence[str]],
        idle_partitions: Sequence[int],
        releases: Sequence[Reservation],
        partition_now: Mapping[int, int],
        budgets: Sequence[tuple[str, int]],
    ) -> _Sent:
        """Round trip 1 itself: every byte exchanged with Redis, nothing decoded yet."""
        by_member: dict[str, list[SourcedEvent]] = {}
        for item in events:
            by_member.setdefault(item.event.member_id, []).append(item)
        members = list(by_member)
        members += [m for m in delivered if m not in by_member]
        member_args = [
            self._apply_args(member, by_member.get(member, []), delivered.get(member))
            for member in members
        ]
        # Standalone: the whole batch in one script call. Cluster: one call per member (its
        # keys pick the node); the pipeline still makes it one round trip per node.
        indexes = list(range(len(members)))
        groups = [[i] for i in indexes] if self._cluster else [indexes] if indexes else []

        def build(pipe: Any) -> None:
            for group in groups:
                member_keys = [k for i in group for k in keys.member_keys(self._prefix, members[i])]
                pipe.execute_command(
                    "EVALSHA",
                    self._sha["apply"],
                    len(member_keys),
                    *member_keys,
                    self._apply_common,
                    *(member_args[i] for i in group),
                )
            for reservation in releases:
                self._budget_call(pipe, "release", reservation)
            for budget, day in budgets:
                pipe.hget(keys.budget_key(self._prefix, budget, day), "spent")
            if not self._cluster:
                for partition in idle_partitions:
                    pipe.execute_command(
                        "EVALSHA",
                        self._sha["idle"],
                        1,
                        keys.idle_key(self._prefix, partition),
                        partition_now.get(partition, now),
                        self._settings.state_idle_fetch_limit,
                        self._prefix,
                    )

        replies = self._pipeline(build)
        member_replies = [reply for group_reply in replies[: len(groups)] for reply in group_reply]
        rest = replies[len(groups) + len(releases) :]
        budget_replies = list(zip(budgets, rest[: len(budgets)], strict=True))
        if self._cluster:  # the idle fetch is a second step there (its keys span nodes)
            idle_replies = (
                self._idle_on_cluster(idle_partitions, now, partition_now)
                if idle_partitions
                else []
            )
        else:
            idle_replies = list(zip(idle_partitions, rest[len(budgets) :], strict=True))
        return _Sent(
            now, partition_now, members, by_member, member_replies, idle_replies, budget_replies
        )

    def _finish(self, sent: _Sent) -> ApplyResult:
        """Decode what a round trip returned (pure CPU, no I/O)."""
        result = ApplyResult()
        for member, reply in zip(sent.members, sent.member_replies, strict=True):
            items = sent.by_member.get(member, [])
            partition = items[0].partition if items else None
            now = sent.now if partition is None else sent.partition_now.get(partition, sent.now)
            self._collect(result, member, items, reply, now)
            if member in result.snapshots and partition is not None:
                result.partitions[member] = partition
        for partition, reply in sent.idle_replies:
            self._collect_idle(
                result, reply, sent.partition_now.get(partition, sent.now), partition
            )
        for ledger, spent in sent.budget_replies:
            result.budget_spent[ledger] = int(spent or 0)
        return result

    def _apply_args(
        self, member: str, items: Sequence[SourcedEvent], delivered: Sequence[str] | None
    ) -> bytes:
        events = []
        for event, topic, partition, offset in items:
            day = event.ts // MS_PER_DAY
            price = event.price
            events.append(
                (
                    f"{self._sources.get(topic, topic)}:{partition}",
                    offset,
                    event.ts,
                    id_hash(event.event_id),
                    event.item_id,
                    TYPE_INDEX[event.type],
                    NO_PRICE if price is None else cents(price),
                    event.quantity,
                    event.category or NO_CATEGORY,
                    day,
                    month_of_day(day),
                )
            )
        packed: bytes = msgpack.packb((member, list(delivered or ()), events))
        return packed

    def _collect(
        self, result: ApplyResult, member: str, items: Sequence[SourcedEvent], reply: Any, now: int
    ) -> None:
        blob, decision, pending, statuses = reply
        if pending:
            entries = iter(pending)
            result.pending_outbox[member] = {
                k.decode(): v for k, v in zip(entries, entries, strict=True)
            }
        if not blob or not items:  # nothing stored, or only outbox ids were confirmed
            return
        result.snapshots[member] = snapshot_from_state(unpack_state(blob), now, self._spec)
        result.now[member] = now
        result.decision_states[member] = decode_decision(decision)
        for item, status in zip(items, statuses.decode(), strict=True):
            if status == "a":
                result.applied += 1
                result.changed.add(member)
            elif status == "l":
                result.too_late.append(item)
            else:
                result.duplicates += 1

    def _collect_idle(self, result: ApplyResult, reply: Any, now: int, partition: int) -> None:
        flat = iter(reply)
        for _tag, blob, decision in zip(flat, flat, flat, strict=True):
            if not blob:
                continue
            state = unpack_state(blob)
            member = state[1]
            if member in result.snapshots:
                continue  # touched in this batch: scored once, with its fresh snapshot
            result.idle_due[member] = snapshot_from_state(state, now, self._spec)
            result.now[member] = now
            result.partitions[member] = partition
            result.decision_states[member] = decode_decision(decision)

    def _idle_on_cluster(
        self, partitions: Sequence[int], now: int, partition_now: Mapping[int, int]
    ) -> list[tuple[int, Any]]:
        limit = self._settings.state_idle_fetch_limit
        tags_per_partition = self._pipeline(
            lambda pipe: [
                pipe.zrangebyscore(
                    keys.idle_key(self._prefix, p), "-inf", partition_now.get(p, now), 0, limit
                )
                for p in partitions
            ]
        )
        tags = [
            (p, tag.decode())
            for p, group in zip(partitions, tags_per_partition, strict=True)
            for tag in group
        ]
        if not tags:
            return []

        def fetch(pipe: Any) -> None:
            for _partition, tag in tags:
                base = f"{self._prefix}:{{{tag}}}:"
                pipe.get(base + keys.STATE)
                pipe.get(base + keys.DECISION)

        values = self._pipeline(fetch)
        flat: dict[int, list[Any]] = {}
        for index, (partition, tag) in enumerate(tags):
            state, decision = split_value(values[2 * index], values[2 * index + 1])
            flat.setdefault(partition, []).extend([tag, state, decision])
        return list(flat.items())

    def read(self, members: Iterable[str], now: int) -> dict[str, MemberSnapshot]:
        """Snapshots of stored members as of `now` (members without state are left out)."""
        members = list(members)
        values = self._pipeline(
            lambda pipe: [pipe.get(keys.member_keys(self._prefix, m)[0]) for m in members]
        )
        snapshots = {}
        for member, value in zip(members, values, strict=True):
            blob = split_value(value)[0]
            if blob is not None:
                snapshots[member] = snapshot_from_state(unpack_state(blob), now, self._spec)
        return snapshots

    def decisions(self, members: Iterable[str]) -> dict[str, DecisionState]:
        """Stored decision states (members without one are left out)."""
        members = list(members)

        def fetch(pipe: Any) -> None:
            for member in members:
                state_key, decision_key, _outbox = keys.member_keys(self._prefix, member)
                pipe.get(state_key)
                pipe.get(decision_key)  # layout 4 and older

        values = self._pipeline(fetch)
        out = {}
        for index, member in enumerate(members):
            _state, decision = split_value(values[2 * index], values[2 * index + 1])
            if decision is not None:
                out[member] = decode_decision(decision)
        return out

    # --- round trip 2 -------------------------------------------------------------------

    def record(
        self, decisions: Sequence[DecisionRecord], reservations: Sequence[Reservation] = ()
    ) -> RecordResult:
        """Write decision states, outbox entries, idle schedule and reservations."""

        def build(pipe: Any) -> None:
            for reservation in reservations:
                self._budget_call(pipe, "reserve", reservation)
            for decision in decisions:
                member_keys = keys.member_keys(self._prefix, decision.member_id)
                flat = [part for pair in decision.outbox.items() for part in pair]
                pipe.execute_command(
                    "EVALSHA",
                    self._sha["record"],
                    len(member_keys),
                    *member_keys,
                    self._ttl,
                    encode_decision(decision.state),
                    *flat,
                )
                idle = keys.idle_key(self._prefix, decision.partition)
                tag = keys.member_tag(decision.member_id)
                if decision.state.next_idle_check is None:
                    pipe.zrem(idle, tag)
                else:
                    pipe.zadd(idle, {tag: decision.state.next_idle_check})
                    pipe.pexpire(idle, self._ttl)

        replies = self._pipeline(build)
        result = RecordResult()
        for reservation, (granted, spent) in zip(reservations, replies, strict=False):
            result.granted[reservation.id] = bool(granted)
            result.spent[reservation.id] = int(spent)
        return result

    def _budget_call(self, pipe: Any, op: str, reservation: Reservation) -> None:
        key = keys.budget_key(self._prefix, reservation.budget, reservation.day)
        pipe.execute_command(
            "EVALSHA",
            self._sha["budget"],
            1,
            key,
            op,
            reservation.id,
            reservation.amount,
            reservation.limit,
            self._ttl,
        )

    # --- transport ------------------------------------------------------------------------

    def _pipeline(self, build: Callable[[Any], object]) -> list[Any]:
        """Run one pipeline (one round trip; one per node on a Cluster), with retries."""

        def once() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            if not len(pipe):
                return []
            self.round_trips += 1
            replies: list[Any] = pipe.execute(raise_on_error=False)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                register(self._client, self._scripts)  # restarted or flushed: load, re-send
                self.round_trips += 1
                pipe = self._client.pipeline(transaction=False)
                build(pipe)
                replies = pipe.execute(raise_on_error=False)
            errors = [r for r in replies if isinstance(r, Exception)]
            if errors:
                raise errors[0]
            return replies

        return self._with_retries(once)

    def _with_retries(self, call: Callable[[], T]) -> T:
        settings = self._settings
        delay = settings.redis_retry_backoff_s
        for attempt in range(1, settings.redis_retry_attempts + 1):
            try:
                return call()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if attempt == settings.redis_retry_attempts:
                    raise StateUnavailable(
                        f"Redis did not answer after {attempt} attempts: {exc}"
                    ) from exc
                time.sleep(delay)  # backoff between retries, not test synchronisation
                delay *= 2
        raise AssertionError("unreachable")


def _conforms(store: RedisState) -> StateStore:
    return store  # mypy proves RedisState satisfies the StateStore protocol
