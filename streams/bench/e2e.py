"""`memberpulse bench e2e`: the whole pipeline against two Faust ceilings, in one run.

On one broker, one Redis, the same pre-loaded input topics and the same events:

1. **consume ceiling**: a bare Faust agent that decodes and counts (streams/bench/ceilings.py);
2. **naive forward**: a bare Faust agent that `await topic.send(...)`s each event;
3. **the worker** (`--workers N` processes in one group): decode, state, encode, score,
   decide, record, produce, commit. Throughput is counted from the first event accounted
   for (applied, duplicate or dead-lettered, read from each worker's /metrics) to the last,
   so start-up and group joins are left out for every contender alike;
4. **one event at a time**: the same worker with `batch_max_size=1` (what micro-batching buys),
   for a fixed time;
5. **latency at a fixed offered load** (default 50 % of the worker's measured throughput):
   fresh input topics, events stamped with the wall clock, produced at that rate; an
   output's latency runs from the producer's send of the event that triggered it to the
   output consumer's receipt. With `--soak-seconds S` this phase runs S seconds and
   samples the worker's RSS every second.

Each phase has its own consumer group, Redis key prefix and output topics. Measured,
never asserted: the figures go to BENCHMARKS.md with the command and the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from confluent_kafka import Consumer, TopicPartition

from memberpulse.models.contract import Event, encode_event
from memberpulse.models.errors import BenchmarkFailed
from memberpulse.models.timeutil import MS_PER_SECOND
from memberpulse.streams.bench.machine import describe_machine
from memberpulse.streams.local.worker_process import Metrics, WorkerProcess, settings_env
from memberpulse.streams.settings import KafkaSettings, Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.worker.kafka import (
    client_config,
    ensure_topics,
    fetch_max_wait_ms,
    make_producer,
)

STAGES: Final = ("decode", "state", "encode", "score", "decide", "record", "produce")
_POLL_S: Final = 0.2
_READY_S: Final = 120.0
_EVENTS_PER_MEMBER: Final = 40  # about what the simulator gives a member in 30 days
_SIM_DAYS: Final = 30
_WARM_UP_S: Final = 3.0  # latency phase: the first seconds are left out (model warm-up)
_SOAK_WARMUP_S: Final = 60.0  # soak: RSS flatness is judged after this many seconds of load
_MINUTE_S: Final = 60.0
_MB: Final = 1024 * 1024
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_TICKS: Final = os.sysconf("SC_CLK_TCK")


# --- process figures from /proc (Linux) ----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float:
    """Resident set size in MiB."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / _MB


# --- phases ----------------------------------------------------------------------------------


def _namespace(base: Settings, tag: str, phase: str, fresh_inputs: bool = False) -> Settings:
    """A phase's own group, key prefix and output topics (and input topics if asked)."""
    prefix = f"bench{tag}{phase}"
    update: dict[str, Any] = {
        "worker_group_id": f"memberpulse-bench-{tag}-{phase}",
        "redis_key_prefix": f"mpb{tag}{phase}",
        "worker_offset_reset": "earliest",
        "worker_web_port": 0,
    }
    names = ["topic_dlq", "topic_churn_alerts", "topic_recommendations", "topic_coupons"]
    names += ["topic_tiers"]
    if fresh_inputs:
        names += ["topic_clicks", "topic_browses", "topic_purchases"]
    defaults = KafkaSettings()  # the topics' default names (a section reads no environment)
    for name in names:
        update[name] = f"{prefix}.{getattr(defaults, name)}"
    settings = base.model_copy(update=update)
    ensure_topics(settings.kafka)
    return settings


def simulated_events(count: int, seed: int) -> list[Event]:
    """The first `count` events, in time order, of enough simulated members."""
    members = max(1, -(-count // _EVENTS_PER_MEMBER))
    events = list(Simulator(SimConfig(members=members, days=_SIM_DAYS, seed=seed)).iter_events())
    while len(events) < count:  # a quiet population: more members
        members *= 2
        events = list(
            Simulator(SimConfig(members=members, days=_SIM_DAYS, seed=seed)).iter_events()
        )
    return events[:count]


def preload(settings: Settings, events: Sequence[Event]) -> float:
    """Produce the events to the input topics, keyed by member; seconds taken."""
    started = time.perf_counter()
    producer = make_producer(settings.kafka)
    for i, event in enumerate(events):
        producer.produce(
            settings.kafka.topic_for_type(event.type), encode_event(event), event.member_id.encode()
        )
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise BenchmarkFailed("the broker did not confirm the pre-loaded events")
    return time.perf_counter() - started


def ceiling(settings: Settings, mode: str, expected: int, timeout_s: float) -> dict[str, Any]:
    """Run a bare Faust agent (consume or forward) as a child; its JSON report."""
    forward_to = f"{settings.worker.group_id}.forward"
    if mode == "forward":  # ensure_topics creates the DLQ topic: borrow it for the target
        ensure_topics(settings.model_copy(update={"topic_dlq": forward_to}).kafka)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERPULSE_")}
    env |= settings_env(settings)
    args = [sys.executable, "-m", "memberpulse.streams.bench.ceilings", mode, str(expected)]
    done = subprocess.run(
        [*args, forward_to],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    # Faust's spinner may precede the report on its line (terminal control codes).
    lines = [line[line.index('{"events"') :] for line in done.stdout.splitlines()
             if '{"events"' in line]  # fmt: skip
    if done.returncode != 0 or not lines:
        raise BenchmarkFailed(
            f"the {mode} ceiling failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    report: dict[str, Any] = orjson.loads(lines[-1])
    return report


@dataclass
class Drain:
    """One worker run over the pre-loaded events."""

    eps: float
    seconds: float
    samples: list[tuple[float, float]]  # (seconds since the first event, events accounted)
    metrics: Metrics
    cpu_s: float
    rss_start_mb: float
    rss_end_mb: float


def _accounted(workers: Sequence[WorkerProcess]) -> tuple[float, list[Metrics]]:
    snapshots = [w.metrics() for w in workers]
    return sum(m.accounted() for m in snapshots), snapshots


def _start(settings: Settings, count: int, log: Path, **overrides: Any) -> list[WorkerProcess]:
    if count > settings.kafka.input_partitions:
        raise ValueError(
            f"{count} workers for {settings.kafka.input_partitions} input partitions: "
            "the extra ones would never get a partition"
        )
    workers: list[WorkerProcess] = []
    try:
        # extend keeps the ones already started if a later start fails
        workers.extend(WorkerProcess(settings, log, **overrides) for _ in range(count))
        deadline = time.monotonic() + _READY_S
        while not all(w.ready() for w in workers):
            if time.monotonic() > deadline or not all(w.alive() for w in workers):
                raise BenchmarkFailed(f"the worker did not become ready; see {log}")
            time.sleep(_POLL_S)  # polling the children's /ready
    except BaseException:
        for w in workers:
            w.kill()
        raise
    return workers


def drain(
    settings: Settings,
    expected: int,
    workers: int,
    log: Path,
    timeout_s: float,
    stop_after_s: float | None = None,
    **overrides: Any,
) -> Drain:
    """Workers over the pre-loaded topics until every event is accounted for (or, with
    `stop_after_s`, for that long after the first one)."""
    running = _start(settings, workers, log, **overrides)
    try:
        pids = [w.proc.pid for w in running]
        rss_start = sum(rss_mb(p) for p in pids)
        cpu_start = sum(cpu_seconds(p) for p in pids)
        samples: list[tuple[float, float]] = []
        first: float | None = None
        deadline = time.monotonic() + timeout_s
        while True:
            done, snapshots = _accounted(running)
            now = time.monotonic()
            if first is None and done > 0:
                first = now
            if first is not None:
                samples.append((now - first, done))
            if done >= expected or (first and stop_after_s and now - first >= stop_after_s):
                break
            if now > deadline or not all(w.alive() for w in running):
                raise BenchmarkFailed(f"{done:.0f} of {expected} events accounted for; see {log}")
            time.sleep(_POLL_S)  # sampling the children's /metrics
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_start
        rss_end = sum(rss_mb(p) for p in pids)
        seconds = samples[-1][0] if samples else 0.0
        counted = done - samples[0][1] if samples else 0.0  # after the first sample's time
        merged = Metrics()
        for snapshot in snapshots:
            for key, value in snapshot.items():
                merged[key] = merged.get(key, 0.0) + value
        for w in running:
            w.stop(60)
    finally:
        for w in running:
            w.kill()
    return Drain(counted / seconds if seconds else 0.0, seconds, samples, merged, cpu,
                 rss_start, rss_end)  # fmt: skip


@dataclass
class Latency:
    """The fixed-load phase."""

    offered_eps: float
    sent: int
    latencies_ms: list[float]
    rss_samples_mb: list[float] = field(default_factory=list)  # one per second of load
    worker_metrics: Metrics = field(default_factory=Metrics)
    p99_ms_by_minute: list[float | None] = field(default_factory=list)  # by send time


class _OutputClock(threading.Thread):
    """Reads every output topic (assign(), no group) and times each output against the
    send time of the event that triggered it."""

    def __init__(self, settings: Settings, sent_at: dict[str, float]) -> None:
        super().__init__(name="bench-outputs", daemon=True)
        self._settings, self._sent_at = settings, sent_at
        self.latencies_ms: list[float] = []
        self.sent_s: list[float] = []  # when each timed output's trigger was sent
        self.seen = 0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        config = client_config(self._settings.kafka) | {
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
        wait = fetch_max_wait_ms(self._settings.kafka)
        if wait is not None:  # the reader's own fetch wait must not count as latency
            config["fetch.wait.max.ms"] = wait
        consumer = Consumer(config)
        try:
            topics = self._settings.kafka.output_topics
            partitions = consumer.list_topics(timeout=10).topics
            consumer.assign(
                [TopicPartition(t, p, 0) for t in topics for p in partitions[t].partitions]
            )
            while not self._stop_flag.is_set():
                for message in consumer.consume(500, timeout=0.1):
                    received = time.time()
                    value = message.value()
                    if message.error() or value is None:
                        continue
                    self.seen += 1
                    trigger = orjson.loads(value).get("trigger")
                    sent = self._sent_at.get(trigger)
                    if sent is not None:
                        self.latencies_ms.append((received - sent) * MS_PER_SECOND)
                        self.sent_s.append(sent)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(10)


def fixed_load(
    settings: Settings,
    events: Sequence[Event],
    rate: float,
    seconds: float,
    log: Path,
    workers: int = 1,
    sample_rss: bool = False,
    timed: Callable[[Event], bool] | None = None,
) -> Latency:
    """Produce at `rate` events/s for `seconds` (events re-stamped with the wall clock);
    with `timed`, only the outputs of the events it accepts are timed."""
    running = _start(settings, workers, log)
    sent_at: dict[str, float] = {}
    reader = _OutputClock(settings, sent_at)
    reader.start()
    rss: list[float] = []
    try:
        producer = make_producer(settings.kafka)
        started, started_wall = time.monotonic(), time.time()
        warm_until = started_wall + _WARM_UP_S
        next_rss = started + _WARM_UP_S
        sent = 0
        total = min(len(events), int(rate * seconds))
        for i in range(total):
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing the offered load
            base = events[i]
            now = time.time()
            event = base._replace(event_id=f"L{i}-{base.event_id}", ts=int(now * MS_PER_SECOND))
            if now >= warm_until and (timed is None or timed(base)):
                sent_at[event.event_id] = now
            producer.produce(
                settings.kafka.topic_for_type(event.type),
                encode_event(event),
                event.member_id.encode(),
            )
            producer.poll(0)
            sent += 1
            if sample_rss and time.monotonic() >= next_rss:
                rss.append(sum(rss_mb(w.proc.pid) for w in running))
                next_rss += 1.0
        producer.flush(30)
        deadline = time.monotonic() + 120
        while _accounted(running)[0] < sent and time.monotonic() < deadline:
            time.sleep(_POLL_S)  # letting the workers drain what was offered
        outputs = sum(
            m.total("memberpulse_outputs_total") + m.total("memberpulse_outputs_resent_total")
            for m in _accounted(running)[1]
        )
        deadline = time.monotonic() + 30
        while reader.seen < outputs and time.monotonic() < deadline:
            time.sleep(_POLL_S)  # letting the reader receive the last outputs
        if sample_rss:
            rss.append(sum(rss_mb(w.proc.pid) for w in running))
        merged = Metrics()
        for snapshot in _accounted(running)[1]:
            for key, value in snapshot.items():
                merged[key] = merged.get(key, 0.0) + value
        for w in running:
            w.stop(60)
    finally:
        reader.stop()
        for w in running:
            w.kill()
    by_minute: dict[int, list[float]] = defaultdict(list)
    for sent_s, ms in zip(reader.sent_s, reader.latencies_ms, strict=True):
        by_minute[int((sent_s - started_wall) // _MINUTE_S)].append(ms)
    minutes = range(max(by_minute) + 1 if by_minute else 0)
    p99s = [_quantile(by_minute[m], 0.99) if by_minute[m] else None for m in minutes]
    return Latency(rate, sent, reader.latencies_ms, rss, merged, p99s)


# --- the report --------------------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stages(metrics: Metrics, events: float) -> tuple[dict[str, float], dict[str, float]]:
    """Mean ms per batch and µs per event of each batch stage."""
    per_batch, per_event = {}, {}
    sums = metrics.by_label("memberpulse_stage_seconds_sum", "stage")
    counts = metrics.by_label("memberpulse_stage_seconds_count", "stage")
    for stage in STAGES:
        total, batches = sums.get(stage, 0.0), counts.get(stage, 0.0)
        per_batch[stage] = total / batches * MS_PER_SECOND if batches else 0.0
        per_event[stage] = total / events * 1e6 if events else 0.0
    return per_batch, per_event


def _hist_ms(metrics: Metrics, q: float) -> float | None:
    seconds = metrics.quantile("memberpulse_event_to_output_seconds", q)
    return None if seconds is None else seconds * MS_PER_SECOND


def _mean_batch(metrics: Metrics) -> float | None:
    count = metrics.total("memberpulse_batch_size_count")
    return metrics.total("memberpulse_batch_size_sum") / count if count else None


def bench_e2e(
    settings: Settings,
    events: int,
    workers: int,
    load: float,
    latency_seconds: float,
    naive_seconds: float,
    soak_seconds: float | None,
    out_dir: Path,
    seed: int = 0,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every phase, in order; the report (JSON layout of `memberpulse bench e2e --json`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%H%M%S") + uuid.uuid4().hex[:4]
    log = out_dir / "workers.log"
    inputs = _namespace(settings, tag, "in", fresh_inputs=True)
    say(f"simulating {events:,} events")
    stream = simulated_events(events, seed)
    loaded_s = preload(inputs, stream)
    say(f"pre-loaded {len(stream):,} events in {loaded_s:.1f} s")
    timeout = max(300.0, events / 200)

    say("consume ceiling: bare Faust agent, decode + count")
    consume = ceiling(_namespace(inputs, tag, "consume"), "consume", len(stream), timeout)
    say(f"  {consume['eps']:,.0f} events/s")
    say("naive pattern: bare Faust agent, await topic.send per event")
    naive = ceiling(_namespace(inputs, tag, "forward"), "forward", len(stream), timeout)
    say(f"  {naive['eps']:,.0f} events/s")

    say(f"worker: full pipeline, {workers} process(es)")
    full = drain(_namespace(inputs, tag, "full"), len(stream), workers, log, timeout)
    say(f"  {full.eps:,.0f} events/s over {full.seconds:.1f} s")
    say(f"one event at a time (batch_max_size=1), {naive_seconds:g} s")
    single = drain(
        _namespace(inputs, tag, "single"), len(stream), workers, log, timeout,
        stop_after_s=naive_seconds, batch_max_size=1,
    )  # fmt: skip
    say(f"  {single.eps:,.0f} events/s")

    rate = max(1.0, load * full.eps)
    span = soak_seconds if soak_seconds else latency_seconds
    say(f"fixed load: {rate:,.0f} events/s ({load:.0%} of max) for {span:g} s")
    fresh = _namespace(settings, tag, "load", fresh_inputs=True)
    live_events = simulated_events(int(rate * span) + 1, seed + 1)
    fixed = fixed_load(fresh, live_events, rate, span, log, workers, sample_rss=True)
    lat = fixed.latencies_ms
    say(
        f"  {len(lat):,} outputs timed; p50 {_quantile(lat, 0.5)} ms, p99 {_quantile(lat, 0.99)} ms"
    )

    batches = full.metrics.total("memberpulse_batches_total")
    per_batch, per_event = _stages(full.metrics, len(stream))
    report: dict[str, Any] = {
        "machine": describe_machine(),
        "events": len(stream),
        "workers": workers,
        "throughput_eps": full.eps,
        "ceilings": {"consume_eps": consume["eps"], "naive_forward_eps": naive["eps"]},
        "ratio_to_consume": full.eps / consume["eps"],
        "ratio_to_naive": full.eps / naive["eps"],
        "one_event_at_a_time_eps": single.eps,
        "batching_speedup": full.eps / single.eps if single.eps else None,
        "latency_ms": {
            "p50": _quantile(lat, 0.50),
            "p95": _quantile(lat, 0.95),
            "p99": _quantile(lat, 0.99),
            "outputs_timed": len(lat),
            "offered_eps": rate,
            "load": load,
            "seconds": span,
            # the worker's own view: input record timestamp → its batch's outputs confirmed
            "worker_event_to_confirm_p50": _hist_ms(fixed.worker_metrics, 0.50),
            "worker_event_to_confirm_p99": _hist_ms(fixed.worker_metrics, 0.99),
            "batches": fixed.worker_metrics.total("memberpulse_batches_total"),
            "mean_batch_size": _mean_batch(fixed.worker_metrics),
        },
        "redis_round_trips_per_batch": (
            full.metrics.total("memberpulse_redis_round_trips_total", **{"pass": "batch"}) / batches
            if batches
            else None
        ),
        "batches": batches,
        "mean_batch_size": len(stream) / batches if batches else None,
        "members_scored": full.metrics.total("memberpulse_members_scored_total"),
        "stages_ms": per_batch,
        "stages_us_per_event": per_event,
        "worker_cpu_us_per_event": full.cpu_s / len(stream) * 1e6,
        "worker_cpu_cores": full.cpu_s / full.seconds if full.seconds else None,
        "rss_mb": {"start": full.rss_start_mb, "end": full.rss_end_mb},
        "outputs": full.metrics.by_label("memberpulse_outputs_total", "kind"),
        "dead_letters": full.metrics.by_label("memberpulse_dlq_total", "reason"),
        "settings": {
            "batch_max_size": settings.worker.batch_max_size,
            "batch_max_wait_ms": settings.worker.batch_max_wait_ms,
            "align_idle_ms": settings.worker.align_idle_ms,
            "kafka_profile": settings.kafka.profile,
        },
        "out_dir": str(out_dir),
    }
    if soak_seconds:
        rss = fixed.rss_samples_mb
        warm = rss[min(len(rss) - 1, int(_SOAK_WARMUP_S))] if rss else None
        report["soak"] = {
            "seconds": soak_seconds,
            # `warm`: after the first minute, once batch-size buffers (onnxruntime's arena,
            # numpy scratch) reached their working size; flatness is judged from there
            "rss_mb": {"start": rss[0], "warm": warm, "end": rss[-1], "max": max(rss)}
            if rss
            else None,
            "latency_p99_ms_by_minute": fixed.p99_ms_by_minute,
        }
    report["plots"] = _plots(out_dir, full.samples, consume["eps"], naive["eps"], lat)
    (out_dir / "bench-e2e.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def _plots(
    out_dir: Path,
    samples: list[tuple[float, float]],
    consume_eps: float,
    naive_eps: float,
    latencies_ms: list[float],
) -> list[str]:
    """Throughput over time and the latency CDF as PNG (needs matplotlib: the train extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(8, 4))
    window = max(1, round(1.0 / _POLL_S))  # a 1-second moving rate
    times = [t for t, _ in samples[window:]]
    rates = [
        (samples[i][1] - samples[i - window][1]) / (samples[i][0] - samples[i - window][0])
        for i in range(window, len(samples))
        if samples[i][0] > samples[i - window][0]
    ]
    ax.plot(times[: len(rates)], rates, label="worker (full pipeline)")
    ax.axhline(consume_eps, linestyle="--", color="grey", label="consume ceiling (bare agent)")
    ax.axhline(naive_eps, linestyle=":", color="red", label="naive forward (await send)")
    ax.set(xlabel="seconds since the first event", ylabel="events/s", title="Throughput")
    ax.legend(loc="lower right")
    path = out_dir / "bench-e2e-throughput.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(str(path))
    if latencies_ms:
        fig, ax = plt.subplots(figsize=(8, 4))
        ordered = sorted(latencies_ms)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))])
        ax.set_xscale("log")
        ax.set(xlabel="event to output, ms", ylabel="share of outputs", title="Latency CDF")
        ax.grid(True, which="both", alpha=0.3)
        path = out_dir / "bench-e2e-latency.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The human summary of a report."""
    lat = report["latency_ms"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in report["stages_ms"].items())
    return [
        f"{report['machine']}; {report['events']:,} events, {report['workers']} worker(s)",
        f"worker, full pipeline:  {report['throughput_eps']:>9,.0f} events/s",
        f"consume ceiling:        {report['ceilings']['consume_eps']:>9,.0f} events/s "
        f"(worker at {report['ratio_to_consume']:.2f}×)",
        f"naive forward:          {report['ceilings']['naive_forward_eps']:>9,.0f} events/s "
        f"(worker at {report['ratio_to_naive']:.2f}×)",
        f"one event at a time:    {report['one_event_at_a_time_eps']:>9,.0f} events/s",
        f"latency at {lat['offered_eps']:,.0f} events/s offered ({lat['load']:.0%}): "
        f"p50 {_ms(lat['p50'])}, p95 {_ms(lat['p95'])}, p99 {_ms(lat['p99'])} "
        f"({lat['outputs_timed']:,} outputs; the worker's own p50/p99 "
        f"{_ms(lat['worker_event_to_confirm_p50'])}/{_ms(lat['worker_event_to_confirm_p99'])}, "
        f"mean batch {lat['mean_batch_size'] or 0:.0f})",
        f"per batch (ms, mean of {report['batches']:.0f} batches of "
        f"{report['mean_batch_size'] or 0:.0f}): {stages}",
        f"Redis round trips per batch {report['redis_round_trips_per_batch']:.2f}; worker CPU "
        f"{report['worker_cpu_us_per_event']:.0f} µs/event; RSS {report['rss_mb']['start']:.0f}"
        f" → {report['rss_mb']['end']:.0f} MiB",
        *(
            [f"soak {report['soak']['seconds']:g} s: RSS {report['soak']['rss_mb']}"]
            if "soak" in report
            else []
        ),
        f"JSON and plots: {report['out_dir']}",
    ]


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
