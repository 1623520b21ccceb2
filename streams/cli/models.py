"""`memberpulse train` and `memberpulse evaluate` (torch is imported inside the commands)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from memberpulse.models.timeutil import parse_ts
from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter

if TYPE_CHECKING:
    from memberpulse.models.config import Protocol

Events = Annotated[
    Path, typer.Option(help="Event log: .parquet, .csv or .jsonl (member_id, ts, type, item_id…).")
]
ProtocolOption = Annotated[
    str, typer.Option(help="time, or leave-one-out (next-item literature protocol).")
]
PROTOCOLS = ("time", "leave-one-out")


def _protocol(value: str) -> Protocol:
    if value not in PROTOCOLS:
        raise typer.BadParameter(f"expected one of {list(PROTOCOLS)}, got {value!r}")
    return cast("Protocol", value)


def train(
    ctx: typer.Context,
    events: Events,
    out: Annotated[Path, typer.Option(help="Model directory to write.")],
    until: Annotated[
        str | None, typer.Option(help="See nothing at or after T (ISO-8601 or epoch ms).")
    ] = None,
    horizon_days: Annotated[int | None, typer.Option(min=1, help="Churn/spend horizon H.")] = None,
    protocol: ProtocolOption = "time",
    epochs: Annotated[int | None, typer.Option(min=1, help="At most this many epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="Also train SASRec for the report (always on with --protocol leave-one-out).",
        ),
    ] = False,
) -> None:
    """Train the member transformer on an event log (point-in-time samples, time split)."""
    from memberpulse.models.eventlog import load_events
    from memberpulse.models.train import train as run

    settings = context.settings(ctx)
    overrides: dict[str, Any] = {
        "seed": seed,
        "protocol": _protocol(protocol),
        "baselines": baselines,
    }
    if horizon_days is not None:
        overrides["horizon_days"] = horizon_days
    if epochs is not None:
        overrides["epochs"] = epochs
    config = settings.training.config(**overrides)
    reporter = Reporter()
    log = load_events(events)
    reporter.line(f"{len(log):,} events of {len(log.members):,} members from {events}")
    if log.skipped:
        reporter.line(f"skipped rows: {log.skipped}")
    progress = _TrainProgress(reporter)
    result = run(
        log,
        out,
        config,
        settings.state.spec(),
        None if until is None else parse_ts(until),
        progress,
    )
    metrics = result.metrics
    reporter.line(
        f"trained {result.parameters:,} parameters in {result.seconds:.0f} s "
        f"({result.epochs_run} epochs, best {result.best_epoch}) → {out}"
    )
    reporter.line(f"train wall time {result.seconds:.1f} s (metrics.json: train_seconds)")
    for line in summary_lines(metrics):
        reporter.line(f"validation {line}")


class _TrainProgress:
    """Epoch lines always; a bar per epoch on a terminal."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._epoch = 0

    def __call__(self, progress: Any) -> None:
        if progress.step == progress.steps:
            self._reporter.line(progress.message)
        elif progress.steps and self._reporter.interactive:
            print(
                f"\repoch {progress.epoch} {progress.step}/{progress.steps} {progress.message}",
                end="",
                flush=True,
            )


def evaluate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Model directory written by `train`.")],
    events: Events,
    at: Annotated[
        str | None, typer.Option(help="Time T (default: the log's last timestamp minus H).")
    ] = None,
    horizon_days: Annotated[int | None, typer.Option(min=1, help="Horizon H.")] = None,
    active_days: Annotated[
        float | None, typer.Option(min=0, help="Also report members active in the D days before T.")
    ] = None,
    protocol: ProtocolOption = "time",
    exclude_seen: Annotated[
        bool,
        typer.Option(
            "--exclude-seen",
            help="Leave each member's earlier items out of every next-item ranking "
            "(RecBole's full-sort convention, for logs without repeats).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score every member as of T (events before T only) against labels in [T, T+H)."""
    from memberpulse.models.bundle import load_bundle
    from memberpulse.models.evaluate import evaluate as run
    from memberpulse.models.eventlog import load_events

    context.settings(ctx)
    bundle = load_bundle(model)
    log = load_events(events)
    report = run(
        bundle,
        log,
        None if at is None else parse_ts(at),
        horizon_days,
        active_days,
        _protocol(protocol),
        exclude_seen,
    )
    if as_json:
        context.print_json(report, numpy=True)
        return
    out = Reporter()
    out.line(
        f"{report['n_members']:,} members at {report['at']} (H = {report['horizon_days']} days, "
        f"churn rate {report['churn_rate']:.3f}, protocol {report['protocol']})"
    )
    for line in summary_lines(report):
        out.line(line)
    for verdict in report.get("verdicts", []):
        out.line(verdict)
    if "active" in report:
        out.line(f"active in the {active_days:g} days before T: {report['active']['n_members']:,}")
        for line in summary_lines(report["active"]):
            out.line(f"  {line}")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline figures of a metrics report, one line per task."""
    churn, items, spend = report["churn"], report["next_item"], report["spend"]
    lines = []
    if churn.get("model"):
        model = churn["model"]
        against = ", ".join(
            f"{name} {_f(figures.get('roc_auc', math.nan))}"
            for name, figures in churn["baselines"].items()
        )
        lines.append(
            f"churn: ROC-AUC {model['roc_auc']:.4f} ({against}), "
            f"PR-AUC {model['pr_auc']:.4f}, Brier {model['brier']:.4f}, ECE {model['ece']:.4f}"
        )
    if "model" in items:
        against = ", ".join(
            f"{name} {_f(figures['ndcg@10'])}" for name, figures in items["baselines"].items()
        )
        lines.append(
            f"next item: NDCG@10 {_f(items['model']['ndcg@10'])} ({against}), "
            f"recall@10 {_f(items['model']['recall@10'])}"
        )
    if "model" in spend:
        against = ", ".join(
            f"{name} {figures['mae']:.2f}" for name, figures in spend.get("baselines", {}).items()
        )
        lines.append(
            f"spend: MAE {spend['model']['mae']:.2f}"
            + (f" ({against})" if against else "")
            + f", RMSE {spend['model']['rmse']:.2f}"
        )
    return lines


def _f(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    """Add `train` and `evaluate` to the CLI."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
