"""The batch path: raw records in, decisions out — independent of how batches arrive.

`BatchProcessor.process(records)` runs one micro-batch through every stage, strictly in
order, and returns only once the outputs are confirmed by the broker:

  decode + validate (bad → DLQ) → state.apply (round trip 1: state, decision states,
  pending outbox, idle-due members, budget spent today) → encode (pure numpy, the
  training code) → score (onnxruntime, each member once) → decide (pure) →
  state.record (round trip 2: decision states + outbox + budget reservations) →
  produce outputs and dead letters, flush.

The caller acknowledges the batch's offsets after `process` returns; an exception means
nothing may be acknowledged (the batch is redelivered, state ignores what it already
applied, and what the outbox still holds is produced again under the same ids). The
outbox entries confirmed here are cleared by the next batch's round trip 1.

Where batches come from (a Faust agent, a benchmark driver) and where outputs go (a
confluent-kafka producer, or anything with `produce`/`flush`) are the caller's choice.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from memberpulse.models.contract import Event, Reason
from memberpulse.models.errors import OutputsNotConfirmed, PoisonLimit, StateUnavailable
from memberpulse.models.explain import explain
from memberpulse.models.features import FeatureBatch, FeatureSpec, encode
from memberpulse.models.snapshot import DecisionState, MemberSnapshot, Reservation, day_of
from memberpulse.models.timeutil import MS_PER_SECOND
from memberpulse.streams.decisions import (
    CENTS,
    COUPON,
    KINDS,
    MemberScores,
    Output,
    Policy,
    decide_all,
    will_alert,
)
from memberpulse.streams.serving.registry import ModelHolder
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.types import ApplyResult, DecisionRecord, SourcedEvent, StateStore
from memberpulse.streams.worker import metrics
from memberpulse.streams.worker.decode import DeadLetter, EventDecoder, Origin
from memberpulse.streams.worker.records import Decoded, InRecord, Refused

log = logging.getLogger(__name__)

HEADER_KIND: Final = "kind"
HEADER_ID: Final = "output_id"
HEADER_MODEL: Final = "model_version"
_RECENT_KEPT: Final = 50
#: Failures of the infrastructure, not of the data: the caller retries the whole batch.
_TRANSIENT: Final = (StateUnavailable, OutputsNotConfirmed)


class OutputSink(Protocol):
    """Where output and DLQ records go: produce many, then flush and confirm them all."""

    def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Queue one record."""

    def flush(self) -> Sequence[Refused]:
        """Block until every queued record is confirmed or refused for good (returned);
        raise if any was neither."""


@dataclass
class BatchReport:
    """What one batch did (for the dashboard, benchmarks and tests)."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0  # records this worker had processed already (retry, rebalance)
    dead_letters: Counter[str] = field(default_factory=Counter)
    scored: int = 0
    idle_checked: int = 0
    outputs: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    outputs_refused: Counter[str] = field(default_factory=Counter)  # by kind, dead-lettered
    coupons_refused: int = 0
    replayed: int = 0  # members left undecided: nothing new since their last decision
    round_trips: int = 0
    stage_s: dict[str, float] = field(default_factory=dict)
    latency_s: list[float] = field(default_factory=list)
    produced: list[Output] = field(default_factory=list)
    model_version: str | None = None

    def add(self, other: BatchReport) -> None:
        """Fold in the report of another part of the same batch."""
        for name in (
            "records",
            "applied",
            "duplicates",
            "redelivered",
            "scored",
            "idle_checked",
            "resent",
            "coupons_refused",
            "replayed",
            "round_trips",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))  # fmt: skip
        self.dead_letters.update(other.dead_letters)
        self.outputs.update(other.outputs)
        self.outputs_refused.update(other.outputs_refused)
        for stage, seconds in other.stage_s.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        self.latency_s += other.latency_s
        self.produced += other.produced
        self.model_version = other.model_version or self.model_version


class _Stages:
    """Times the stages of one batch into the report and the stage histogram."""

    def __init__(self, report: BatchReport) -> None:
        self._report = report
        self._last = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        spent = now - self._last
        self._report.stage_s[stage] = self._report.stage_s.get(stage, 0.0) + spent
        metrics.STAGE_SECONDS.labels(stage).observe(spent)
        self._last = now


class BatchProcessor:
    """Runs micro-batches through state, model, decisions and outputs (one at a time)."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        models: ModelHolder,
        sink: OutputSink,
        policy: Policy,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * MS_PER_SECOND),
    ) -> None:
        self._settings = settings
        self._store = store
        self._models = models
        self._sink = sink
        self._policy = policy
        self._policy_version: str | None = None
        self._clock = wall_clock_ms
        self._decoder = EventDecoder(settings.worker)
        self._topics = dict(
            zip(KINDS, settings.kafka.output_topics, strict=True)
        )  # kind → output topic
        self._confirmed: dict[str, list[str]] = {}  # outbox ids to clear in round trip 1
        self._catalogue: tuple[FeatureSpec, dict[str, int]] | None = None
        self.event_time: dict[int, int] = {}  # partition → largest event ts seen
        self._batches = 0  # batches with input, attempts included (the failpoints count them)
        self._with_input = False  # the batch being processed has input (not an idle pass)
        self._isolating = False  # processing parts of a batch that failed (no idle checks)
        # isolating: each part's counts, published once the whole batch went through (a
        # transient failure of a later part retries the batch, and the parts before it with it)
        self._deferred: list[tuple[BatchReport, list[SourcedEvent]]] = []
        # (topic, partition) → the highest offset of a batch that returned: records at or
        # below it come again only by redelivery (each topic partition arrives in offset
        # order), and their dead letters were confirmed by the broker already.
        self._processed: dict[tuple[str, int], int] = {}
        # (topic, partition) → the highest offset of a batch attempt that raised
        self._attempted: dict[tuple[str, int], int] = {}
        self._refreshed_at = -math.inf
        self.recent: deque[Output] = deque(maxlen=_RECENT_KEPT)

    # --- the batch path ---------------------------------------------------------------

    def decode(self, records: Sequence[InRecord]) -> list[Decoded]:
        """Validate records into events or dead letters (the worker decodes before the
        time aligner, which orders by event ts; `process` does it itself).
        """
        started = time.perf_counter()
        received = self._clock()
        decoded = []
        for record in records:
            origin = Origin(record.topic, record.partition, record.offset, record.key)
            result = self._decoder.decode(record.value, origin, received)
            decoded.append(Decoded(record, result))
        metrics.STAGE_SECONDS.labels("decode").observe(time.perf_counter() - started)
        return decoded

    def process(
        self, records: Sequence[InRecord], idle_partitions: Sequence[int] = ()
    ) -> BatchReport:
        """One micro-batch, start to confirmed outputs. `idle_partitions`: partitions whose
        idle-due members are checked in this batch (the batch's own partitions are always).
        """
        started = time.perf_counter()
        decoded = self.decode(records)
        return self.process_decoded(decoded, idle_partitions, time.perf_counter() - started)

    def process_decoded(
        self,
        items: Sequence[Decoded],
        idle_partitions: Sequence[int] = (),
        decode_s: float = 0.0,
    ) -> BatchReport:
        """`process` for records decoded already (`decode_s`: what decoding them took).

        Transient failures (Redis, the broker) raise: the caller retries the batch. Any
        other failure is taken for one specific to some members (a scorer error on their
        rows, a non-finite score, a stored state that does not decode): the batch is split
        by member until the failing members are found, their events go to the DLQ
        (`processing_failed`) and the rest is processed. Past `poison_max_fraction` of
        the batch's members (at least one may fail), `PoisonLimit` stops the worker.
        """
        try:
            return self._process(items, idle_partitions, decode_s)
        except BaseException as exc:
            # Redis may have run this attempt's apply (a reply lost to a timeout, or a later
            # stage failed): on the retry its events read as redelivered, yet no report
            # counted them, so the retry counts them as applied.
            _advance(self._attempted, (item.record for item in items))
            if isinstance(exc, _TRANSIENT) or not isinstance(exc, Exception) or not items:
                raise
            failure = exc
        return self._isolate(items, failure)

    def _isolate(self, items: Sequence[Decoded], failure: Exception) -> BatchReport:
        """Process `items` member group by member group, halving the groups that fail."""
        groups: dict[str | None, list[Decoded]] = {}
        for item in items:  # dead letters of decoding ride with the first group
            member = item.result.member_id if isinstance(item.result, Event) else None
            groups.setdefault(member, []).append(item)
        members = [m for m in groups if m is not None]
        allowed = max(1, math.floor(self._settings.worker.poison_max_fraction * len(members)))
        failed: dict[str, Exception] = {}
        report = BatchReport()
        self._isolating = True
        self._deferred = []
        try:
            pending: list[tuple[list[str | None], Exception]] = [(list(groups), failure)]
            while pending:
                chosen, error = pending.pop()
                if chosen == [None]:  # only decoding's dead letters: nothing to isolate
                    raise error
                if len(chosen) == 1:
                    alone = str(chosen[0])  # a member id: the [None] part raised above
                    failed[alone] = error
                    if len(failed) > allowed:
                        raise PoisonLimit(
                            f"{len(failed)} of {len(members)} members of a batch failed one by "
                            f"one (at most {allowed} may): the fault is not in the data; "
                            f"first: {type(error).__name__}: {error}"
                        ) from error
                    continue
                half = len(chosen) // 2 or 1
                for part in (chosen[:half], chosen[half:]):
                    subset = [item for member in part for item in groups[member]]
                    if not subset:
                        continue
                    try:
                        report.add(self._process(subset, (), 0.0))
                    except _TRANSIENT:
                        raise
                    except Exception as exc:
                        _advance(self._attempted, (item.record for item in subset))
                        pending.append((part, exc))
            if failed:
                letters = [
                    Decoded(item.record, self._failed_letter(item, failed[member]))
                    for member in failed
                    for item in groups[member]
                ]
                report.add(self._process(letters, (), 0.0))
        finally:
            self._isolating = False
            deferred, self._deferred = self._deferred, []
        for part_report, part_events in deferred:
            self._count(part_report, part_events)
        _advance(self._processed, (item.record for item in items))
        for member, error in failed.items():
            log.error(
                "member %r failed alone (%s: %s): its %d events dead-lettered",
                member, type(error).__name__, error, len(groups[member]),
            )  # fmt: skip
        return report

    def _failed_letter(self, item: Decoded, error: Exception) -> DeadLetter:
        record = item.record
        return DeadLetter(
            Reason.PROCESSING_FAILED,
            f"the member's batch failed alone: {type(error).__name__}: {str(error)[:300]}",
            record.value,
            Origin(record.topic, record.partition, record.offset, record.key),
            self._clock(),
        )

    def _process(
        self, items: Sequence[Decoded], idle_partitions: Sequence[int], decode_s: float
    ) -> BatchReport:
        records = [item.record for item in items]
        self._batches += bool(records)
        self._with_input = bool(records)
        report = BatchReport(records=len(items))
        report.stage_s["decode"] = decode_s
        stages = _Stages(report)
        now_s = time.monotonic()
        if now_s - self._refreshed_at >= self._settings.serving.refresh_s:
            self._refreshed_at = now_s  # a promoted model swaps in between batches only
            self._models.refresh()
        loaded = self._models.current()
        report.model_version = loaded.version
        if loaded.version != self._policy_version:  # thresholds fitted to the model in service
            self._policy = Policy.from_settings(
                self._settings.decisions, self._policy.coupons, loaded.card
            )
            self._policy_version = loaded.version
            metrics.CHURN_THRESHOLD.labels("alert").set(self._policy.alert_threshold)
            metrics.CHURN_THRESHOLD.labels("rearm").set(self._policy.rearm_threshold)
            log.info(
                "model %s: churn alert threshold %.3f, re-arm %.3f",
                loaded.version,
                self._policy.alert_threshold,
                self._policy.rearm_threshold,
            )
        received = self._clock()
        events, dead, report.redelivered = self._split(items)

        partitions = (
            [] if self._isolating else sorted({r.partition for r in records} | set(idle_partitions))
        )
        budget = self._policy.coupons.budget.name
        days = sorted({day_of(self.event_time[p]) for p in partitions if p in self.event_time})
        before = getattr(self._store, "round_trips", 0)
        result = self._store.apply(
            events,
            max(self.event_time.values(), default=0),
            delivered=self._confirmed,
            idle_partitions=[p for p in partitions if p in self.event_time],
            partition_now=self.event_time,
            budgets=[(budget, day) for day in days],
        )
        self._confirmed = {}
        reapplied = self._reapplied(result)
        report.applied = result.applied + len(reapplied)
        report.duplicates = result.duplicates
        report.redelivered += len(result.redelivered) - len(reapplied)
        if result.too_late:
            by_position = {(r.topic, r.partition, r.offset): r for r in records}
            dead += [self._too_late(item, by_position, received) for item in result.too_late]
        stages.done("state")
        self._failpoint("state")

        snapshots = {**result.snapshots, **result.idle_due}
        # A member is decided at most once per event time: a replayed batch (all its events
        # already applied) at or before the member's last decision decides nothing again.
        members = [
            m
            for m in snapshots
            if m in result.changed or (result.decision_states[m].decided_at or -1) < result.now[m]
        ]
        report.replayed = len(snapshots) - len(members)
        scores = self._score(members, snapshots, loaded.scorer, stages, result)
        triggers = _latest_event_ids(events)
        decisions = decide_all(
            {
                m: (
                    snapshots[m],
                    result.decision_states.get(m, DecisionState()),
                    scores[m],
                    triggers.get(m),
                )
                for m in members
            },
            result.now,
            self._policy,
            loaded.version,
            {day: spent for (name, day), spent in result.budget_spent.items() if name == budget},
        )
        stages.done("decide")

        records_out = [
            DecisionRecord(
                m,
                result.partitions[m],
                d.state,
                {out.id: out.to_wire() for out in d.outputs},
            )
            for m, d in decisions.items()
        ]
        reservations = [d.reservation for d in decisions.values() if d.reservation is not None]
        # A coupon left in the outbox by a crashed attempt goes out again only if its
        # reservation was granted: reserving is idempotent per id, so asking again in this
        # same round trip returns the original answer (or reserves now, if it never ran).
        reservations += _pending_reservations(result.pending_outbox, self._policy)
        batch_partitions = {r.partition for r in records}
        recorded = self._store.record(
            records_out,
            reservations,
            {p: self.event_time[p] for p in batch_partitions if p in self.event_time},
        )
        refused = {rid for rid, ok in recorded.granted.items() if not ok}
        stages.done("record")
        self._failpoint("record")

        self._produce(result, decisions, refused, dead, report)
        stages.done("produce")

        done = self._clock()
        report.latency_s = [(done - r.timestamp_ms) / MS_PER_SECOND for r in records]
        report.scored = len(members)
        report.idle_checked = len(set(result.idle_due) & set(members))
        report.coupons_refused = len(refused)
        report.round_trips = getattr(self._store, "round_trips", 0) - before
        if not self._isolating:  # isolating: each part's offsets interleave with the others'
            _advance(self._processed, records)
        self._count(report, events)
        return report

    def _reapplied(self, result: ApplyResult) -> list[SourcedEvent]:
        """Events the state found applied that only an attempt of a batch that never
        returned here can have applied (above what returned, within what was attempted);
        their members count as changed."""
        processed, attempted = self._processed, self._attempted
        found = [
            item
            for item in result.redelivered
            if processed.get((item.topic, item.partition), -1)
            < item.offset
            <= attempted.get((item.topic, item.partition), -1)
        ]
        result.changed.update(item.event.member_id for item in found)
        return found

    def tick(self, partitions: Sequence[int]) -> BatchReport:
        """An idle-check pass without input: members of `partitions` whose check is due.

        A partition this worker has read nothing from yet (assigned by a rebalance, or
        after a restart) resumes from the event time its previous owner recorded, so its
        due checks run now rather than once an event arrives.
        """
        unknown = [p for p in partitions if p not in self.event_time]
        if unknown:
            self.event_time.update(self._store.clocks(unknown))
        return self.process([], idle_partitions=partitions)

    # --- stages -------------------------------------------------------------------------

    def _split(self, items: Sequence[Decoded]) -> tuple[list[SourcedEvent], list[DeadLetter], int]:
        """Events (advancing their partition's event time), dead letters, and how many
        dead letters this worker had confirmed already (redelivered: not sent again)."""
        events: list[SourcedEvent] = []
        dead: list[DeadLetter] = []
        again = 0
        clock = self.event_time
        processed = self._processed
        for item in items:
            decoded, record = item.result, item.record
            if isinstance(decoded, DeadLetter):
                if record.offset <= processed.get((record.topic, record.partition), -1):
                    again += 1
                else:
                    dead.append(decoded)
                continue
            events.append(SourcedEvent(decoded, record.topic, record.partition, record.offset))
            if decoded.ts > clock.get(record.partition, 0):
                clock[record.partition] = decoded.ts
        return events, dead, again

    def _too_late(
        self, item: SourcedEvent, records: dict[tuple[str, int, int], InRecord], received: int
    ) -> DeadLetter:
        raw = records.get((item.topic, item.partition, item.offset))
        lateness = self._settings.state.lateness_ms
        return DeadLetter(
            Reason.TOO_LATE,
            f"event ts {item.event.ts} is more than {lateness} ms behind the member's latest event",
            raw.value if raw is not None else orjson.dumps(item.event.to_wire()),
            Origin(item.topic, item.partition, item.offset, raw.key if raw else None),
            received,
        )

    def _score(
        self,
        members: list[str],
        snapshots: dict[str, MemberSnapshot],
        scorer: Any,
        stages: _Stages,
        result: ApplyResult,
    ) -> dict[str, MemberScores]:
        if not members:
            stages.done("encode")
            stages.done("score")
            return {}
        spec: FeatureSpec = scorer.spec
        positions = self._positions(spec)
        # Snapshots carry their partition's event time: one encode call, a `now` per member.
        chosen = [snapshots[m] for m in members]
        batch = encode(chosen, [snap.now for snap in chosen], spec)
        width = scorer.excluded
        exclude = np.full((len(members), width), -1, dtype=np.int64)
        for row, snap in enumerate(chosen):
            bought = [positions[i] for i in snap.recent_purchases if i in positions]
            exclude[row, : min(len(bought), width)] = bought[:width]
        stages.done("encode")
        out = scorer.score(batch, exclude)
        finite = np.isfinite(out.churn) & np.isfinite(out.spend)
        finite &= np.isfinite(out.top_scores).all(axis=1)
        if not finite.all():  # found member by member, then dead-lettered (process_decoded)
            bad = [members[row] for row in np.flatnonzero(~finite)[:3]]
            raise ValueError(f"non-finite scores for {int((~finite).sum())} members, e.g. {bad}")
        items = scorer.item_ids(out.top_items)
        churn, spend, top = out.churn.tolist(), out.spend.tolist(), out.top_scores.tolist()
        reasons = self._explain(members, batch, out.churn, scorer, result)
        stages.done("score")
        self._failpoint("score")
        scored: dict[str, MemberScores] = {}
        for row, member in enumerate(members):
            scored[member] = MemberScores(
                float(churn[row]),
                float(spend[row]),
                tuple(zip(items[row], top[row], strict=False)),
                reasons.get(row, ()),
            )
        return scored

    def _explain(
        self,
        members: list[str],
        batch: FeatureBatch,
        risk: NDArray[np.float64],
        scorer: Any,
        result: ApplyResult,
    ) -> dict[int, tuple[tuple[str, float], ...]]:
        """The model's reasons for the rows about to be alerted (one more scoring call of
        len(GROUPS) rows per such member; models/explain.py)."""
        rows = [
            row
            for row, member in enumerate(members)
            if will_alert(
                result.decision_states.get(member, DecisionState()),
                float(risk[row]),
                result.now[member],
                self._policy,
            )
        ]
        if not rows:
            return {}
        chosen = np.array(rows, dtype=np.int64)
        none = np.full((1, scorer.excluded), -1, dtype=np.int64)

        def churn_of(variants: FeatureBatch) -> NDArray[np.float64]:
            scored = scorer.score(variants, np.repeat(none, variants.rows, axis=0))
            return np.asarray(scored.churn, dtype=np.float64)

        found = explain(churn_of, batch.take(chosen), risk=np.asarray(risk)[chosen])
        return {row: e.reasons for row, e in zip(rows, found, strict=True)}

    def _positions(self, spec: FeatureSpec) -> dict[str, int]:
        if self._catalogue is None or self._catalogue[0] is not spec:
            self._catalogue = (spec, {item: i for i, item in enumerate(spec.items)})
        return self._catalogue[1]

    def _produce(
        self,
        result: ApplyResult,
        decisions: dict[str, Any],
        refused: set[str],
        dead: list[DeadLetter],
        report: BatchReport,
    ) -> None:
        sink = self._sink
        dlq = self._settings.kafka.topic_dlq
        cap = self._settings.worker.dead_letter_max_bytes
        for letter in dead:
            sink.produce(
                dlq,
                letter.record_key(cap),
                letter.to_wire(cap),
                [("reason", letter.reason.value.encode())],
            )
            report.dead_letters[letter.reason.value] += 1
        sent: dict[str, list[str]] = {}
        # What a crashed attempt left in the outbox goes first: same ids, same bytes.
        for member, entries in result.pending_outbox.items():
            for ident, value in entries.items():
                if ident in refused:  # its reservation was refused: never a coupon
                    sent.setdefault(member, []).append(ident)
                    continue
                payload = orjson.loads(value)
                self._send(payload["kind"], member, ident, value, payload.get("model_version"))
                sent.setdefault(member, []).append(ident)
                report.resent += 1
        # crash tests: the batch's first half of new outputs confirmed, then killed
        half = (
            sum(len(d.outputs) for d in decisions.values()) // 2 if self._armed("produce") else -1
        )
        for member, decision in decisions.items():
            for out in decision.outputs:
                if half == 0:
                    sink.flush()
                    self._failpoint("produce")
                half -= 1
                if out.id in refused:  # budget gone at reservation: dropped, entry cleared
                    sent.setdefault(member, []).append(out.id)
                    continue
                if out.id in result.pending_outbox.get(member, {}):
                    continue
                self._send(out.kind, member, out.id, out.to_wire(), out.payload["model_version"])
                sent.setdefault(member, []).append(out.id)
                report.outputs[out.kind] += 1
                report.produced.append(out)
        self._failpoint("produce")  # armed, with no output to send
        rejected = sink.flush()  # raises when anything is unconfirmed: nothing gets acknowledged
        if rejected:
            self._dead_letter_refused(rejected, report)
        self._confirmed = sent
        self.recent.extend(report.produced)

    def _dead_letter_refused(self, refused: Sequence[Refused], report: BatchReport) -> None:
        """Outputs the broker will never take (too large, invalid) go to the DLQ, each named
        by its id, and the partition moves on: retrying them would block it for good. An
        input's dead letter refused so is an error: the input would be lost."""
        dlq = self._settings.kafka.topic_dlq
        lost = [r for r in refused if r.topic == dlq]
        if lost:
            raise OutputsNotConfirmed(f"a dead letter was refused by the broker: {lost[0].error}")
        for record in refused:
            headers = dict(record.headers)
            ident = headers.get(HEADER_ID, b"").decode("utf-8", "surrogatepass")
            kind = headers.get(HEADER_KIND, b"").decode()
            letter = DeadLetter(
                Reason.OUTPUT_REFUSED,
                f"{kind} output {ident} ({record.size} bytes) to {record.topic} refused: "
                f"{record.error}",
                ident.encode("utf-8", "surrogatepass"),
                Origin(record.topic, None, None, record.key),
                self._clock(),
            )
            cap = self._settings.worker.dead_letter_max_bytes
            self._sink.produce(
                dlq,
                letter.record_key(cap),
                letter.to_wire(cap),
                [("reason", Reason.OUTPUT_REFUSED.value.encode())],
            )
            report.outputs_refused[kind] += 1
        if self._sink.flush():
            raise OutputsNotConfirmed("the dead letter of a refused output was refused too")

    def _armed(self, stage: str) -> bool:
        worker = self._settings.worker
        return (
            self._with_input
            and worker.failpoint_kill_at == stage
            and self._batches == worker.failpoint_kill_batch
        )

    def _failpoint(self, stage: str) -> None:
        """Crash tests: SIGKILL this process after `stage` of the chosen batch."""
        if self._armed(stage):
            log.warning("failpoint: killing the worker after %s of batch %d", stage, self._batches)
            os.kill(os.getpid(), signal.SIGKILL)

    def _send(
        self, kind: str, member: str, ident: str, value: bytes, model_version: str | None
    ) -> None:
        headers = [
            (HEADER_KIND, kind.encode()),
            (HEADER_ID, ident.encode("utf-8", "surrogatepass")),
        ]
        if model_version:
            headers.append((HEADER_MODEL, model_version.encode()))
        self._sink.produce(
            self._topics[kind], member.encode("utf-8", "surrogatepass"), value, headers
        )

    def _count(self, report: BatchReport, events: Sequence[SourcedEvent]) -> None:
        if self._isolating:
            self._deferred.append((report, list(events)))
            return
        if report.records:  # an idle-check pass without input is no micro-batch
            metrics.BATCHES.inc()
            metrics.BATCH_SIZE.observe(report.records)
            metrics.REDIS_ROUND_TRIPS.labels("batch").inc(report.round_trips)
        else:
            metrics.REDIS_ROUND_TRIPS.labels("idle_pass").inc(report.round_trips)
        for event_type, n in Counter(item.event.type for item in events).items():
            metrics.EVENTS.labels(event_type).inc(n)
        for reason, n in report.dead_letters.items():
            metrics.DLQ.labels(reason).inc(n)
        metrics.APPLIED.inc(report.applied)
        metrics.DUPLICATES.inc(report.duplicates)
        metrics.REDELIVERED.inc(report.redelivered)
        metrics.SCORED.inc(report.scored)
        metrics.IDLE_CHECKS.inc(report.idle_checked)
        metrics.RESENT.inc(report.resent)
        metrics.COUPONS_REFUSED.inc(report.coupons_refused)
        for kind, n in report.outputs.items():
            metrics.OUTPUTS.labels(kind).inc(n - report.outputs_refused[kind])
        for kind, n in report.outputs_refused.items():
            metrics.OUTPUTS_REFUSED.labels(kind).inc(n)
        for partition, ts in self.event_time.items():
            metrics.EVENT_TIME.labels(str(partition)).set(ts)
        for seconds in report.latency_s:
            metrics.EVENT_TO_OUTPUT.observe(seconds)


def _advance(watermarks: dict[tuple[str, int], int], records: Iterable[InRecord]) -> None:
    """Raise each (topic, partition)'s watermark to the highest offset among `records`."""
    for record in records:
        source = (record.topic, record.partition)
        if record.offset > watermarks.get(source, -1):
            watermarks[source] = record.offset


def _latest_event_ids(events: Sequence[SourcedEvent]) -> dict[str, str]:
    """Per member, the id of its latest event (by ts) in the batch: what triggered it."""
    latest: dict[str, Event] = {}
    for item in events:
        event = item.event
        seen = latest.get(event.member_id)
        if seen is None or event.ts >= seen.ts:
            latest[event.member_id] = event
    return {member: event.event_id for member, event in latest.items()}


def _pending_reservations(
    pending: Mapping[str, Mapping[str, bytes]], policy: Policy
) -> list[Reservation]:
    """The budget reservations behind coupons waiting in the outbox (holdouts have none)."""
    limit = round(policy.coupons.budget.daily_limit * CENTS)
    reservations = []
    for entries in pending.values():
        for ident, value in entries.items():
            if not ident.startswith(f"{COUPON}:"):
                continue
            payload = orjson.loads(value)
            if payload.get("holdout") or payload.get("value") is None:
                continue
            amount = round(float(payload["value"]) * CENTS)
            reservations.append(
                Reservation(ident, payload["budget"], int(payload["budget_day"]), amount, limit)
            )
    return reservations
