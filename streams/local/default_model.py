"""The model `make run` scores with when nobody trained one: small, simulated, cached.

`model_ready` names the version a worker will serve: the registry's current one, or this
default model, exported and promoted. `ensure_default_model` returns the cached model
directory under `MEMBERPULSE_HOME`, or trains one first (a few minutes on 2 CPU cores: a
small simulated population, few epochs). The cache key holds the feature schema hash and
the training settings, so a changed encoder or config trains afresh instead of loading a
model that no longer fits. torch is imported only when training is needed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from memberpulse.models.features import schema_hash
from memberpulse.streams.local.console import Reporter
from memberpulse.streams.settings import Settings

DEFAULT_SEED: Final = 0
READY_FILE: Final = "READY"  # written last: a directory without it is a partial run


@dataclass(frozen=True)
class Recipe:
    """The simulated population and epochs the default model is trained on."""

    members: int
    days: int
    epochs: int
    seed: int = DEFAULT_SEED

    @classmethod
    def of(cls, settings: Settings) -> Recipe:
        """The recipe the settings ask for."""
        return cls(
            settings.training.default_model_members,
            settings.training.default_model_days,
            settings.training.default_model_epochs,
        )


@dataclass(frozen=True)
class DefaultModel:
    """Where the default model lives and whether this call trained it."""

    path: Path
    trained_now: bool
    seconds: float


def default_model_dir(settings: Settings) -> Path:
    """The cache directory for the current encoder, training settings and recipe."""
    recipe = Recipe.of(settings)
    config = settings.training.config(epochs=recipe.epochs, seed=recipe.seed)
    text = json.dumps(
        {
            "config": asdict(config),
            "recipe": asdict(recipe),
            "state": asdict(settings.state.spec()),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(text.encode()).hexdigest()[:10]
    return settings.home / "models" / "default" / f"{schema_hash()}-{key}"


def ensure_default_model(
    settings: Settings, on_progress: Callable[[Any], None] | None = None
) -> DefaultModel:
    """The cached default model, trained first when missing."""
    recipe = Recipe.of(settings)
    path = default_model_dir(settings)
    if (path / READY_FILE).exists():
        return DefaultModel(path, False, 0.0)
    from memberpulse.models.eventlog import load_events
    from memberpulse.models.train import train
    from memberpulse.streams.simulate import SimConfig, simulate_to_file

    started = time.perf_counter()
    if path.exists():
        shutil.rmtree(path)  # an interrupted earlier run
    data = path / "data" / "events.parquet"
    data.parent.mkdir(parents=True)
    sim = SimConfig(members=recipe.members, days=recipe.days, seed=recipe.seed)
    simulate_to_file(sim, data)
    config = settings.training.config(epochs=recipe.epochs, seed=recipe.seed)
    train(load_events(data), path, config, settings.state.spec(), None, on_progress)
    shutil.rmtree(data.parent)
    (path / READY_FILE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return DefaultModel(path, True, time.perf_counter() - started)


def model_ready(out: Reporter, settings: Settings) -> str:
    """The version the worker will serve: the registry's current one, or the default."""
    from memberpulse.streams.serving.files import card_path
    from memberpulse.streams.serving.registry import Registry

    registry = Registry(settings.registry_root)
    current = registry.current()
    if current is not None:
        out.line(f"model: serving the registry's current version {current}")
        card = card_path(registry.path(current))
        if card.exists() and "churn_risk_percentiles" not in card.read_text():
            out.line(
                "  (exported before risk percentiles were recorded: churn thresholds fall "
                "back to 0.7 / 0.5; re-export it, or set churn_alert_threshold and "
                "churn_rearm_threshold)"
            )
        return current
    if not (default_model_dir(settings) / READY_FILE).exists():
        out.line("no model yet: simulating members and training a small one (once, a few minutes)")
    model = ensure_default_model(settings, on_progress=lambda p: _epoch_line(out, p))
    how = f"trained in {model.seconds:.0f} s" if model.trained_now else "cached"
    out.line(f"default model ready ({how}): {model.path}")
    return _serve(out, settings, model.path)


def _serve(out: Reporter, settings: Settings, model_dir: Path) -> str:
    """Export the default model to ONNX (once) and promote it; the version promoted."""
    from memberpulse.export.pipeline import export_model
    from memberpulse.streams.serving.registry import Registry

    onnx_file = model_dir / "onnx" / "model.onnx"
    if not onnx_file.exists():
        result = export_model(model_dir, onnx_file, settings.serving.top_k, variants=False)
        out.line(f"exported to ONNX (parity checked): {result.onnx}")
    registry = Registry(settings.registry_root)
    version = registry.add(onnx_file)
    registry.promote(version)
    out.line(f"model {version} promoted in {registry.root}")
    return version


def _epoch_line(out: Reporter, progress: Any) -> None:
    if progress.step == progress.steps:
        out.line(f"  {progress.message}")
