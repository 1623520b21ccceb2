"""`memberpulse demo` (what `make run` runs): the whole pipeline, live, for a minute.

(The command itself, which brings up the stack and the model, is streams/cli/demo.py;
`run_demo` below is steps 3 to 6.)

1. a model is ready: the registry's current one, or the cached default model (trained
   once on simulated members, a few minutes) exported to ONNX and promoted;
2. the local stack is up (tansu + redis-server under MEMBERPULSE_HOME; a running one is
   reused and left running);
3. a `memberpulse worker` child process joins the input topics;
4. simulated members stream in with compressed time (`--speed`, default a day per
   second: a minute shows two months, so churn by silence, cooldowns, budgets and tier
   moves happen within the run), 1% corrupted on purpose;
5. a dashboard shows throughput, latency percentiles, the DLQ and the latest churn
   alerts, recommendation updates, coupons and tier changes as the worker emits them;
6. then a summary: counts per output kind, conservation (every event sent is applied,
   a duplicate, or dead-lettered), and the worker stops on SIGTERM.

Exit code 1 when no events flowed, an output kind never appeared, events went missing,
or the worker did not stop cleanly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_SECOND, to_iso
from memberpulse.streams.decisions import CHURN, COUPON, KINDS, RECOMMENDATION, TIER
from memberpulse.streams.local.console import Reporter
from memberpulse.streams.local.live import plan_live, stream_members
from memberpulse.streams.local.worker_process import Metrics, WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import client_config, partition_counts

_READY_TIMEOUT_S: Final = 90.0
_DRAIN_TIMEOUT_S: Final = 60.0
_STOP_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.2
_REFRESH_S: Final = 1.0
_PLAIN_EVERY_S: Final = 5.0
_LATEST: Final = 4
_LATENESS_WALL_S: Final = 1.0


@dataclass
class _Seen:
    """Outputs read back from the output topics while the demo runs."""

    counts: Counter[str] = field(default_factory=Counter)
    latest: dict[str, deque[dict[str, Any]]] = field(
        default_factory=lambda: {kind: deque(maxlen=_LATEST) for kind in KINDS}
    )
    holdouts: int = 0


class _OutputReader:
    """Follows the four output topics from their current end (assign(), no group)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._seen = _Seen()
        self._stop = threading.Event()
        counts = partition_counts(settings.kafka, settings.kafka.output_topics)
        self._consumer = Consumer(
            client_config(settings.kafka)
            | {"group.id": "memberpulse-demo", "enable.auto.commit": False}
        )
        self._consumer.assign(
            [
                TopicPartition(t, p, OFFSET_END)
                for t in settings.kafka.output_topics
                for p in range(counts[t])
            ]
        )
        self._thread = threading.Thread(target=self._run, name="demo-outputs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()

    def seen(self) -> _Seen:
        with self._lock:
            copy = _Seen(Counter(self._seen.counts), holdouts=self._seen.holdouts)
            copy.latest = {k: deque(v, maxlen=_LATEST) for k, v in self._seen.latest.items()}
            return copy

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(num_messages=500, timeout=_POLL_S):
                if message.error() is not None:
                    continue
                record = orjson.loads(message.value() or b"{}")
                kind = record.get("kind")
                with self._lock:
                    self._seen.counts[kind] += 1
                    if kind in self._seen.latest:
                        self._seen.latest[kind].append(record)
                    if kind == COUPON and record.get("holdout"):
                        self._seen.holdouts += 1


def _describe(record: dict[str, Any]) -> str:
    member = str(record.get("member_id", "?"))[:12]
    kind = record.get("kind")
    if kind == CHURN:
        reasons = ",".join(record.get("reasons", [])) or "-"
        return f"{member} risk {record['risk']:.2f} via {str(record['trigger'])[:18]} ({reasons})"
    if kind == RECOMMENDATION:
        items = " ".join(i["item_id"] for i in record["items"][:3])
        return f"{member} top: {items}"
    if kind == COUPON:
        if record["holdout"]:
            return f"{member} {record['rule']} (holdout: no coupon)"
        return f"{member} {record['rule']} {record['value']:g} ({record['value_tier']})"
    if kind == TIER:
        return (
            f"{member} {record['previous_projected_tier'] or 'new'} → "
            f"{record['projected_tier']} (12m {record['trailing_12m_spend']:.0f} "
            f"+ {record['expected_spend']:.0f})"
        )
    return member


class _Dashboard:
    """Throughput, latency, DLQ and the latest outputs: a live table on a terminal,
    a plain line every few seconds otherwise."""

    def __init__(self, out: Reporter, worker: WorkerProcess, reader: _OutputReader) -> None:
        self._out = out
        self._worker = worker
        self._reader = reader
        self._started = time.monotonic()
        self._last: tuple[float, float] | None = None
        self._rate = 0.0
        self.metrics = Metrics()

    def sample(self) -> None:
        metrics = self._worker.metrics()
        if metrics:
            self.metrics = metrics
        now = time.monotonic()
        applied = self.metrics.total("memberpulse_events_applied_total")
        if self._last is not None and now > self._last[0]:
            self._rate = (applied - self._last[1]) / (now - self._last[0])
        self._last = (now, applied)

    def status(self) -> str:
        m = self.metrics
        p50 = m.quantile("memberpulse_event_to_output_seconds", 0.5)
        p99 = m.quantile("memberpulse_event_to_output_seconds", 0.99)
        latency = (
            "-" if p50 is None or p99 is None else f"p50 {p50 * 1e3:.0f} ms p99 {p99 * 1e3:.0f} ms"
        )
        seen = self._reader.seen().counts
        outputs = " ".join(f"{k.split('_')[0]} {seen[k]:,}" for k in KINDS)
        return (
            f"t+{time.monotonic() - self._started:4.0f}s  applied "
            f"{m.total('memberpulse_events_applied_total'):>8,.0f} ({self._rate:6,.0f}/s)  "
            f"latency {latency}  dlq {m.total('memberpulse_dlq_total'):,.0f}  "
            f"idle checks {m.total('memberpulse_idle_checks_total'):,.0f}  | {outputs}"
        )

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title=self.status(), title_justify="left", expand=True)
        table.add_column("output", no_wrap=True)
        table.add_column("count", justify="right")
        table.add_column("latest")
        seen = self._reader.seen()
        for kind in KINDS:
            latest = "\n".join(_describe(r) for r in reversed(seen.latest[kind])) or "-"
            table.add_row(kind, f"{seen.counts[kind]:,}", latest)
        return table


def run_demo(
    out: Reporter,
    settings: Settings,
    version: str,
    seconds: float,
    speed: float,
    rate: float,
    members: int,
    seed: int,
    bad_fraction: float,
) -> list[str]:
    """Stream simulated members through a fresh worker; the problems found (none: passed)."""
    log = settings.home / "logs" / "demo-worker.log"
    # A fresh consumer group and key prefix per run: the demo starts from an empty state
    # and reads only what this run streams, even on a reused stack.
    tag = time.strftime("%Y%m%d%H%M%S")
    # Lateness is an event-time span: compressed `speed` times, an hour is a few
    # milliseconds of wall time, less than a batch takes. Keep it at least
    # _LATENESS_WALL_S of wall time, as it would be live.
    lateness = max(settings.state.lateness_ms, round(speed * _LATENESS_WALL_S * MS_PER_SECOND))
    run = settings.model_copy(
        update={
            "worker_group_id": f"memberpulse-demo-{tag}",
            "redis_key_prefix": f"mpdemo{tag}",
            "worker_offset_reset": "latest",  # what earlier runs left in the topics is not ours
            "state_lateness_ms": lateness,
        }
    )
    reader = _OutputReader(run)
    reader.start()
    worker = WorkerProcess(run, log)
    out.line(f"worker starting (model {version}; log {log})")
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not worker.ready():
        if not worker.alive() or time.monotonic() > deadline:
            worker.stop(_STOP_TIMEOUT_S)
            reader.stop()
            return [f"the worker did not become ready; see {log}"]
        time.sleep(_POLL_S)  # polling the worker's /ready, not synchronising a test
    dashboard = _Dashboard(out, worker, reader)
    out.line(f"worker ready at {worker.url} (/metrics, /health, /ready)")
    plan = plan_live(seconds=seconds, speed=speed, rate=rate)
    span_days = (plan.sim_end_ms - plan.sim_start_ms) / MS_PER_DAY
    out.line(
        f"streaming {members:,} simulated members: {span_days:.0f} days of behaviour "
        f"({to_iso(plan.sim_start_ms)} → now) in {seconds:g} s, ≤ {rate:g} events/s"
    )
    summary_box: dict[str, Any] = {}

    def produce() -> None:
        summary_box["summary"] = stream_members(run, plan, members, seed, False, bad_fraction, None)

    producer = threading.Thread(target=produce, name="demo-simulator", daemon=True)
    producer.start()
    _watch(out, dashboard, lambda: producer.is_alive())
    producer.join()
    summary = summary_box.get("summary")
    sent = summary.sent if summary else 0
    deadline = time.monotonic() + _DRAIN_TIMEOUT_S
    while _accounted(dashboard) < sent and time.monotonic() < deadline and worker.alive():
        dashboard.sample()
        time.sleep(_POLL_S)  # waiting for the worker to drain (a deadline, not a sync)
    dashboard.sample()
    code = worker.stop(_STOP_TIMEOUT_S)
    time.sleep(_REFRESH_S)  # let the reader catch the last outputs the worker flushed
    reader.stop()
    return _summary(out, dashboard, reader.seen(), sent, summary, code)


def _watch(out: Reporter, dashboard: _Dashboard, running: Any) -> None:
    if out.interactive:
        from rich.live import Live

        with Live(dashboard.table(), refresh_per_second=2, transient=False) as live:
            while running():
                time.sleep(_REFRESH_S)  # dashboard refresh cadence
                dashboard.sample()
                live.update(dashboard.table())
        return
    last = 0.0
    while running():
        time.sleep(_REFRESH_S)  # dashboard refresh cadence
        dashboard.sample()
        if time.monotonic() - last >= _PLAIN_EVERY_S:
            out.line(dashboard.status())
            last = time.monotonic()


def _accounted(dashboard: _Dashboard) -> float:
    return dashboard.metrics.accounted()


def _summary(
    out: Reporter,
    dashboard: _Dashboard,
    seen: _Seen,
    sent: int,
    summary: Any,
    exit_code: int,
) -> list[str]:
    m = dashboard.metrics
    out.line(dashboard.status())
    out.line("latest outputs:")
    for kind in KINDS:
        for record in seen.latest[kind]:
            out.line(f"  {kind:<15} {_describe(record)}")
    applied = m.total("memberpulse_events_applied_total")
    dlq = m.by_label("memberpulse_dlq_total", "reason")
    out.line(
        f"summary: sent {sent:,} events; applied {applied:,.0f}, duplicates "
        f"{m.total('memberpulse_duplicates_total'):,.0f}, dead-lettered {sum(dlq.values()):,.0f}"
        + (f" (injected {sum(summary.bad.values())})" if summary else "")
        + f"; read again after a retry or rebalance {m.total('memberpulse_redelivered_total'):,.0f}"
    )
    for reason, count in sorted(dlq.items()):
        out.line(f"  dead-letter reason {reason:<16} {count:>6,.0f}")
    out.line(
        "outputs: "
        + ", ".join(f"{kind} {seen.counts[kind]:,}" for kind in KINDS)
        + f" (coupon holdout records {seen.holdouts:,})"
    )
    p50 = m.quantile("memberpulse_event_to_output_seconds", 0.5)
    p99 = m.quantile("memberpulse_event_to_output_seconds", 0.99)
    if p50 is not None and p99 is not None:
        out.line(
            f"event → output latency p50 {p50 * MS_PER_SECOND:.0f} ms, "
            f"p99 {p99 * MS_PER_SECOND:.0f} ms"
        )
    out.line(f"worker stopped on SIGTERM with exit code {exit_code}")
    problems = []
    if not applied:
        problems.append("no events flowed through the worker")
    missing = [kind for kind in KINDS if not seen.counts[kind]]
    if missing:
        problems.append(f"no {', '.join(missing)} output appeared")
    if _accounted(dashboard) != sent:
        problems.append(
            f"{sent:,} events sent but {_accounted(dashboard):,.0f} accounted for "
            "(applied + duplicates + dead-lettered)"
        )
    if exit_code != 0:
        problems.append(f"the worker exited with code {exit_code}")
    return problems
