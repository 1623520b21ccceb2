"""`memberpulse export`, `memberpulse model add|list|promote` and `memberpulse bench model`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from memberpulse.streams.cli import context
from memberpulse.streams.local.console import Reporter

model_app = typer.Typer(help="The model registry: add exported models, list, promote.")


def export(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Model directory written by `train`.")],
    out: Annotated[Path, typer.Option(help="The .onnx file to write (card and spec beside).")],
    top_k: Annotated[int | None, typer.Option(min=1, help="Items in the top-K output.")] = None,
    variants: Annotated[bool, typer.Option(help="Also build INT8 and FP16 variants.")] = True,
) -> None:
    """Export to ONNX with the parity gate, the model card and quantised variants."""
    from memberpulse.export.pipeline import export_model

    settings = context.settings(ctx)
    result = export_model(model, out, top_k or settings.serving.top_k, variants)
    p = result.parity
    lines = Reporter()
    lines.line(f"wrote {result.onnx} (version {result.card_data['version']}), card {result.card}")
    lines.line(
        f"parity on {p.members:,} held-out members: churn max |Δ| {p.churn_max_abs:.1e}, "
        f"spend max rel {p.spend_max_rel:.1e}, top-K sets equal {p.topk_set_agreement:.2%}"
    )
    for variant in result.variants:
        speed = "not measured" if variant.speedup is None else f"{variant.speedup:.2f}×"
        state = f"refused: {variant.refused}" if variant.refused else f"→ {variant.path}"
        lines.line(
            f"{variant.name}: ΔROC-AUC {variant.delta['churn_roc_auc']:+.5f}, "
            f"Δrecall@10 {variant.delta['recall@10']:+.4f}, speed-up {speed} {state}"
        )


@model_app.command("add")
def model_add(
    ctx: typer.Context,
    onnx_file: Annotated[Path, typer.Argument(help="An exported .onnx file.")],
    promote: Annotated[bool, typer.Option(help="Also make it the current model.")] = False,
) -> None:
    """Copy an exported model into the registry as a new version."""
    from memberpulse.streams.serving.registry import Registry

    settings = context.settings(ctx)
    registry = Registry(settings.registry_root)
    version = registry.add(onnx_file)
    Reporter().line(f"added version {version} to {registry.root}")
    if promote:
        _promote(settings, registry, version)


@model_app.command("list")
def model_list(ctx: typer.Context) -> None:
    """Registered versions; the current one is marked."""
    from memberpulse.streams.serving.registry import Registry

    registry = Registry(context.settings(ctx).registry_root)
    current = registry.current()
    out = Reporter()
    for version in registry.versions():
        out.line(f"{'*' if version == current else ' '} {version}")
    if not registry.versions():
        out.line(f"no models in {registry.root}")


@model_app.command("promote")
def model_promote(
    ctx: typer.Context, version: Annotated[str, typer.Argument(help="Version to serve.")]
) -> None:
    """Make VERSION current here and, when Redis answers, for every worker of the deployment."""
    from memberpulse.streams.serving.registry import Registry

    settings = context.settings(ctx)
    _promote(settings, Registry(settings.registry_root), version)


def _promote(settings: Any, registry: Any, version: str) -> None:
    import redis

    from memberpulse.streams.state.client import make_redis

    client: Any = make_redis(settings.redis)
    try:
        client.ping()
    except redis.RedisError:
        client = None
    registry.promote(version, client, settings.redis.key_prefix)
    where = "here and in Redis" if client is not None else "here (Redis not reachable)"
    Reporter().line(f"version {version} is current {where}")


def bench_model(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Model directory written by `train`.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Sequences/s and latency per batch size: PyTorch eager, ONNX fp32, ONNX INT8 (+ GPU)."""
    from memberpulse.streams.bench.model import bench_model as run

    report = run(model, context.settings(ctx))
    if as_json:
        context.print_json(report)
        return
    out = Reporter()
    out.line(report["machine"])
    for row in report["results"]:
        out.line(
            f"{row['backend']:<26} batch {row['batch_size']:>5}: {row['seq_per_s']:>10,.0f} seq/s, "
            f"p50 {row['p50_ms']:8.2f} ms, p99 {row['p99_ms']:8.2f} ms"
        )
    for note in report.get("notes", []):
        out.line(note)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the export, model and bench model commands."""
    app.command("export")(export)
    app.add_typer(model_app, name="model", no_args_is_help=True)
    bench_app.command("model")(bench_model)
