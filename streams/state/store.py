"""Rolling member state in Redis: one round trip per micro-batch, idempotent, bounded.

`apply` sends one pipeline: `apply.lua` calls for the touched members (atomic per member;
on standalone Redis a few members per call, each call written as soon as it is built and
its members' snapshots derived while Redis runs the next; no command waits for a reply),
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
from typing import Any, Final, NamedTuple, TypeVar

import msgpack
import redis
from redis.cluster import RedisCluster

from memberpulse.models.errors import ConfigError, StateUnavailable
from memberpulse.models.snapshot import (
    TYPE_INDEX,
    DecisionState,
    MemberSnapshot,
    Reservation,
    cents,
    id_hash,
    month_of_day,
)
from memberpulse.models.timeutil import MS_PER_DAY
from memberpulse.streams.settings import Settings
from memberpulse.streams.state import keys
from memberpulse.streams.state.client import RedisClient, make_redis
from memberpulse.streams.state.codec import (
    NO_CATEGORY,
    NO_PRICE,
    snapshot_from_state,
    split_value,
    unpack_state,
)
from memberpulse.streams.state.scripts import load_sources, register
from memberpulse.streams.state.types import (
    ApplyResult,
    DecisionRecord,
    RecordResult,
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
    snapshots: list[MemberSnapshot | None] | None  # per member, when derived while reading
    idle_replies: list[tuple[int, Any]]  # (partition, reply)
    budget_replies: list[tuple[tuple[str, int], Any]]


class RedisState:
    """The Redis implementation of `StateStore` (standalone Redis 6.2+/7 or Cluster)."""

    def __init__(self, settings: Settings, client: RedisClient | None = None) -> None:
        self._settings = settings
        self._spec = settings.state.spec()
        self._client = client or make_redis(settings.redis)
        self._cluster = isinstance(self._client, RedisCluster)
        self._scripts = load_sources()
        self._sha = {name: script.sha for name, script in self._scripts.items()}
        self._prefix = settings.redis.key_prefix
        self._ttl = settings.state.ttl_ms
        self._sources = {name: index for index, name in enumerate(settings.kafka.input_topics)}
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
            events,
            now,
            delivered or {},
            idle_partitions,
            releases,
            partition_now or {},
            budgets,
            early=True,
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
        early: bool = False,
    ) -> _Sent:
        """Round trip 1 itself: every byte exchanged with Redis. `early`: derive each
        member's snapshot as soon as its script call's reply is read (on standalone Redis,
        while Redis runs the next call); otherwise nothing is decoded yet.
        """
        by_member: dict[str, list[SourcedEvent]] = {}
        for item in events:
            by_member.setdefault(item.event.member_id, []).append(item)
        members = list(by_member)
        members += [m for m in delivered if m not in by_member]
        # Standalone: a few members per script call when they are decoded while reading,
        # else the whole batch in one (fewer, larger replies wake a waiting I/O thread less
        # often). Cluster: one call per member (its keys pick the node); still one round
        # trip per node.
        if self._cluster:
            per_call = 1
        else:
            per_call = self._settings.state.members_per_call if early else max(1, len(members))
        groups = [
            list(range(start, min(start + per_call, len(members))))
            for start in range(0, len(members), per_call)
        ]
        snapshots: list[MemberSnapshot | None] = [None] * len(members)

        def derive(index: int, reply: Any) -> None:
            if index >= len(groups):
                return  # budget and idle replies are read in `_finish`
            for at, member_reply in zip(groups[index], reply, strict=True):
                items = by_member.get(members[at], [])
                snapshots[at] = self._snapshot(
                    member_reply, items, self._member_now(items, now, partition_now)
                )

        def build(pipe: Any) -> None:
            for group in groups:
                member_keys = [k for i in group for k in keys.member_keys(self._prefix, members[i])]
                pipe.execute_command(
                    "EVALSHA",
                    self._sha["apply"],
                    len(member_keys),
                    *member_keys,
                    self._apply_common,
                    # built call by call, so that each call's write goes out first (a
                    # re-sent pipeline, after NOSCRIPT or a retry, builds them again)
                    *(
                        self._apply_args(m, by_member.get(m, []), delivered.get(m))
                        for m in map(members.__getitem__, group)
                    ),
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
                        self._settings.state.idle_fetch_limit,
                        self._prefix,
                    )

        replies = self._pipeline(build, derive if early else None)
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
            now,
            partition_now,
            members,
            by_member,
            member_replies,
            snapshots if early else None,
            idle_replies,
            budget_replies,
        )

    def _finish(self, sent: _Sent) -> ApplyResult:
        """Decode what a round trip returned (pure CPU, no I/O)."""
        result = ApplyResult()
        for index, (member, reply) in enumerate(
            zip(sent.members, sent.member_replies, strict=True)
        ):
            items = sent.by_member.get(member, [])
            now = self._member_now(items, sent.now, sent.partition_now)
            snapshot = (
                self._snapshot(reply, items, now)
                if sent.snapshots is None
                else sent.snapshots[index]
            )
            self._collect(result, member, items, reply, now, snapshot)
            if snapshot is not None and items:
                result.partitions[member] = items[0].partition
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

    @staticmethod
    def _member_now(
        items: Sequence[SourcedEvent], now: int, partition_now: Mapping[int, int]
    ) -> int:
        """The event time a member's snapshot is taken at: its partition's, else the batch's."""
        return partition_now.get(items[0].partition, now) if items and partition_now else now

    def _snapshot(
        self, reply: Any, items: Sequence[SourcedEvent], now: int
    ) -> MemberSnapshot | None:
        """The snapshot in a member's apply reply; None when nothing is stored or the call
        only confirmed outbox ids."""
        blob = reply[0]
        if not blob or not items:
            return None
        return snapshot_from_state(unpack_state(blob), now, self._spec)

    def _collect(
        self,
        result: ApplyResult,
        member: str,
        items: Sequence[SourcedEvent],
        reply: Any,
        now: int,
        snapshot: MemberSnapshot | None,
    ) -> None:
        _blob, decision, pending, statuses = reply
        if pending:
            entries = iter(pending)
            result.pending_outbox[member] = {
                k.decode(): v for k, v in zip(entries, entries, strict=True)
            }
        if snapshot is None:
            return
        result.snapshots[member] = snapshot
        result.now[member] = now
        result.decision_states[member] = decode_decision(decision)
        for item, status in zip(items, statuses.decode(), strict=True):
            if status == "a":
                result.applied += 1
                result.changed.add(member)
            elif status == "l":
                result.too_late.append(item)
            elif status == "o":
                result.redelivered.append(item)
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
        limit = self._settings.state.idle_fetch_limit
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
        self,
        decisions: Sequence[DecisionRecord],
        reservations: Sequence[Reservation] = (),
        clocks: Mapping[int, int] | None = None,
    ) -> RecordResult:
        """Write decision states, outbox entries, idle schedule, reservations and the
        partitions' event times (each kept as the largest seen: ZADD GT)."""

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
            if clocks:
                clock = keys.clock_key(self._prefix)
                pipe.zadd(clock, {str(p): ts for p, ts in clocks.items()}, gt=True)
                pipe.pexpire(clock, self._ttl)

        replies = self._pipeline(build)
        result = RecordResult()
        for reservation, (granted, spent) in zip(reservations, replies, strict=False):
            result.granted[reservation.id] = bool(granted)
            result.spent[reservation.id] = int(spent)
        return result

    def clocks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The event times `record` kept for `partitions` (those without one left out)."""
        if not partitions:
            return {}
        key = keys.clock_key(self._prefix)
        (scores,) = self._pipeline(lambda pipe: pipe.execute_command("ZMSCORE", key, *partitions))
        return {p: int(float(v)) for p, v in zip(partitions, scores, strict=True) if v is not None}

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

    def _pipeline(
        self,
        build: Callable[[Any], object],
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Run one pipeline (one round trip; one per node on a Cluster), with retries.

        `on_reply(index, reply)` is called for each successful reply: on standalone Redis
        as soon as it is read, while Redis still runs the commands after it; on a Cluster
        once all are in. A re-sent pipeline calls it again for the new replies.
        """

        def run() -> list[Any]:
            if on_reply is not None and not self._cluster:
                sent, streamed = _streamed(self._client, build, on_reply)
                if sent:
                    self.round_trips += 1
                return streamed
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            if not len(pipe):
                return []
            self.round_trips += 1
            replies: list[Any] = pipe.execute(raise_on_error=False)
            if on_reply is not None:
                for index, reply in enumerate(replies):
                    if not isinstance(reply, Exception):
                        on_reply(index, reply)
            return replies

        def once() -> list[Any]:
            replies = run()
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                register(self._client, self._scripts)  # restarted or flushed: load, re-send
                replies = run()
            errors = [r for r in replies if isinstance(r, Exception)]
            if errors:
                # A server that cannot take writes now (out of memory under noeviction, a
                # replica, a cluster without quorum, loading) says nothing about the data:
                # retried like a lost connection, then the batch waits, never dead-letters.
                fault = next((e for e in errors if infrastructure_fault(e)), None)
                raise _Refused(fault) if fault is not None else errors[0]
            return replies

        return self._with_retries(once)

    def _with_retries(self, call: Callable[[], T]) -> T:
        settings = self._settings
        delay = settings.redis.retry_backoff_s
        for attempt in range(1, settings.redis.retry_attempts + 1):
            try:
                return call()
            except (
                redis.exceptions.AuthenticationError
            ) as exc:  # a ConnectionError, yet no retry cures it
                user = settings.redis.username or "default"
                raise ConfigError(
                    f"Redis refused the credentials of user {user!r} ({exc}): check "
                    "redis_username / redis_password"
                ) from exc
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if attempt == settings.redis.retry_attempts:
                    raise StateUnavailable(
                        f"Redis did not answer after {attempt} attempts: {exc}"
                    ) from exc
            except _Refused as refused:
                if attempt == settings.redis.retry_attempts:
                    raise StateUnavailable(
                        f"Redis refused the batch after {attempt} attempts: {refused.error}"
                    ) from refused.error
                time.sleep(delay)  # backoff between retries, not test synchronisation
                delay *= 2
        raise AssertionError("unreachable")


#: Error codes of a server that cannot serve now, whatever the command: OOM (maxmemory
#: reached under noeviction), READONLY (a replica), CLUSTERDOWN / TRYAGAIN / MASTERDOWN
#: (a cluster or replication in trouble), LOADING (a restart reading its data), BUSY (a
#: script over its time limit).
INFRASTRUCTURE_CODES: Final = ("OOM", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN",
                               "LOADING", "BUSY")  # fmt: skip


_INFRASTRUCTURE_ERRORS: Final = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    # the cluster client's own give-up, e.g. "TTL exhausted." after its TRYAGAIN, ASK and
    # MOVED retries during a resharding: the cluster, not the member, is in trouble
    redis.exceptions.ClusterError,
)


def infrastructure_fault(error: Exception) -> bool:
    """Whether a Redis error reply means the server cannot serve now (not that the batch is
    wrong). A script's failing `redis.call` wraps the reply ("... -OOM command not
    allowed ..." on Redis 6, "OOM command not allowed ... script: ..." on 7): both count."""
    if isinstance(error, _INFRASTRUCTURE_ERRORS):
        return True
    if not isinstance(error, redis.exceptions.ResponseError):
        return False
    if getattr(error, "status_code", None) in INFRASTRUCTURE_CODES:
        return True
    text = str(error)
    return any(text.startswith(f"{code} ") or f"-{code} " in text for code in INFRASTRUCTURE_CODES)


class _Refused(Exception):
    """An infrastructure error reply, retried as a transport failure is."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Sending:
    """What `build` needs of a pipeline, writing each command as soon as it is built:
    Redis runs the first calls while the later ones are still being built, and sends each
    reply on its own instead of after a whole buffer of commands."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **options: Any) -> None:
        self._connection.send_packed_command(self._connection.pack_command(*args))
        self.commands.append((args, options))

    def hget(self, name: str, key: str) -> None:
        self.execute_command("HGET", name, key)


def _streamed(
    client: Any, build: Callable[[Any], object], on_reply: Callable[[int, Any], None]
) -> tuple[int, list[Any]]:
    """Run a standalone pipeline command by command: each is written as `build` makes it,
    then the replies are read one by one, each successful one handed to `on_reply` before
    the next is read, so Redis runs call N+1 while the caller works on reply N. Returns
    (commands sent, replies); error replies are returned, not raised. If anything fails
    part-way (the socket or `on_reply`), the connection is dropped, never returned to its
    pool with replies unread; Redis discards the commands it had not run yet with it, and
    re-sending the batch is safe either way (offsets and event ids make it idempotent).
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    replies: list[Any] = []
    try:
        sending = _Sending(connection)
        build(sending)
        for index, (args, options) in enumerate(sending.commands):
            try:
                reply = client.parse_response(connection, args[0], **options)
            except redis.exceptions.ResponseError as exc:
                reply = exc
            replies.append(reply)
            if not isinstance(reply, Exception):
                on_reply(index, reply)
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    return len(sending.commands), replies


def _conforms(store: RedisState) -> StateStore:
    return store  # mypy proves RedisState satisfies the StateStore protocol
