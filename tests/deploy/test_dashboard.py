"""The Grafana dashboard and the alert rules: valid, complete, and reading only metrics that a
real `memberpulse worker` exports (checked against its /metrics)."""

from __future__ import annotations

import json
import re
import sys
import tomllib
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, Simulator
from memberpulse.streams.state.client import make_redis
from tests.deploy.support import (
    DASHBOARD,
    K8S,
    PROMETHEUS_SERIES,
    ROOT,
    TARGET_LABELS,
    Query,
    alert_queries,
    dashboard_queries,
    dockerfile_stages,
    kustomize,
    one,
    parse_promql,
    quantity_bytes,
)
from tests.helpers import accounted, produce_events, wait_until

_EXIT_DEADLINE_S = 60.0
_FLOW_DEADLINE_S = 180.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def test_dashboard_is_valid_grafana_json_with_every_required_view() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    (variable,) = dashboard["templating"]["list"]
    assert variable == variable | {
        "name": "datasource",
        "type": "datasource",
        "query": "prometheus",
    }
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    expressions: list[str] = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            expressions.append(target["expr"])
    read = set().union(*(parse_promql(expr).metrics for expr in expressions))
    views = {
        "throughput": "memberpulse_events_applied_total",
        "per-stage latency": "memberpulse_stage_seconds_bucket",
        "event-to-output latency": "memberpulse_event_to_output_seconds_bucket",
        "consumer lag": "memberpulse_consumer_lag",
        "DLQ by reason": "memberpulse_dlq_total",
        "outputs by kind": "memberpulse_outputs_total",
        "idle checks": "memberpulse_idle_checks_total",
        "model version": "memberpulse_model_in_service",
    }
    missing = {view: metric for view, metric in views.items() if metric not in read}
    assert not missing
    e2e = [e for e in expressions if "memberpulse_event_to_output_seconds_bucket" in e]
    quantiles = {q for e in e2e for q in re.findall(r"histogram_quantile\(([\d.]+)", e)}
    assert quantiles >= {"0.5", "0.95", "0.99"}
    for metric in (
        "memberpulse_outputs_total",
        "memberpulse_dlq_total",
        "memberpulse_idle_checks_total",
    ):
        assert all("* 60" in e for e in expressions if metric in e), f"{metric}: per minute"
    assert any("by (kind)" in e for e in expressions if "memberpulse_outputs_total" in e)
    assert any("by (reason)" in e for e in expressions if "memberpulse_dlq_total" in e)


def test_promql_reader_finds_metrics_and_labels_and_refuses_unknown_functions() -> None:
    query = parse_promql(
        "histogram_quantile(0.99, sum by (le, stage) (rate(memberpulse_stage_seconds_bucket"
        '{job="memberpulse-worker"}[$__rate_interval]))) * 60 + 1e-9'
    )
    assert query == Query(
        frozenset({"memberpulse_stage_seconds_bucket"}), frozenset({"le", "stage", "job"})
    )
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        parse_promql("rat(memberpulse_batches_total[5m])")
    assert alert_queries()  # the alert rules parse too


# --- against a real worker -------------------------------------------------------------


def _exported(text: str) -> dict[str, set[str]]:
    """Sample name → label names, from Prometheus text exposition (samples only)."""
    out: dict[str, set[str]] = defaultdict(set)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out[match[1]] |= set(_LABEL.findall(match[2] or ""))
    return out


@pytest.fixture
def worker(isolated: Settings, served_registry: Path, tmp_path: Path) -> Iterator[WorkerProcess]:
    """`memberpulse worker` (a child process) serving the session's model, its own group."""
    settings = isolated.model_copy(
        update={
            "model_registry": served_registry,  # read only: nothing is promoted in it
            "worker_group_id": f"g-{isolated.redis.key_prefix}",
            "worker_web_port": 0,
            "model_refresh_s": 0.2,
        }
    )
    process = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield process
    finally:
        process.kill()


@pytest.mark.integration
@pytest.mark.slow
def test_dashboard_and_alerts_read_only_what_a_real_worker_exports(
    isolated: Settings, worker: WorkerProcess
) -> None:
    # The process is the image's command: `memberpulse` is memberpulse.streams.cli.main:main.
    argv = list(worker.proc.args)  # type: ignore[arg-type]  # Popen was given a list
    assert argv == [
        sys.executable,
        "-c",
        "from memberpulse.streams.cli.main import main; main()",
        "worker",
    ]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["memberpulse"] == "memberpulse.streams.cli.main:main"
    stage = {s.name: s for s in dockerfile_stages()}["worker-cpu"]
    assert stage.exec_form("ENTRYPOINT") + stage.exec_form("CMD") == ["memberpulse", "worker"]

    wait_until(worker.ready, timeout=60, interval=0.2, what="worker ready")
    events = list(Simulator(SimConfig(members=20, days=60, seed=31)).iter_events())
    produced = produce_events(isolated, events, bad=2)
    wait_until(
        lambda: accounted(worker) >= produced,
        timeout=_FLOW_DEADLINE_S,
        interval=0.5,
        what="every event applied, skipped or dead-lettered",
    )
    # A promoted version this worker does not have: refused, and the model in service
    # keeps serving (what deploy/README.md says about images with a baked-in model).
    redis = make_redis(isolated.redis)
    redis.set(f"{isolated.redis.key_prefix}:model:current", "not-in-this-registry")
    wait_until(
        lambda: worker.metrics().total("memberpulse_model_refusals_total") >= 1,
        timeout=30,
        interval=0.2,
        what="the unknown version refused",
    )
    wait_until(
        lambda: any(name == "memberpulse_consumer_lag" for name, _ in worker.metrics()),
        timeout=30,
        interval=0.5,
        what="consumer lag exported",
    )
    assert worker.ready()
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as answer:
        exported = _exported(answer.read().decode())

    queries = dashboard_queries() | alert_queries()
    for expr, query in queries.items():
        for metric in query.metrics - PROMETHEUS_SERIES:
            assert metric in exported, f"{metric} (in {expr!r}) has no sample on /metrics"
        labels = set().union(*(exported.get(m, set()) for m in query.metrics)) | TARGET_LABELS
        assert query.labels <= labels, (expr, query.labels - labels)

    # The Kubernetes memory request covers a worker that has scored a stream.
    rss = _rss(worker)
    request = one(kustomize(K8S / "overlays" / "cpu"), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["resources"]["requests"]["memory"]
    assert 0 < rss < quantity_bytes(request), (rss, request)
    assert worker.stop(_EXIT_DEADLINE_S) == 0


def _rss(worker: WorkerProcess) -> float:
    """process_resident_memory_bytes (WorkerProcess.metrics() reads memberpulse_* only)."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1])
    raise AssertionError("no process_resident_memory_bytes sample")
