"""The model `make run` scores with when nobody trained one: small, simulated, cached.

`ensure_default_model` returns the cached model directory under `MEMBERPULSE_HOME`, or
trains one first (a few minutes on 2 CPU cores: a small simulated population, few
epochs). The cache key holds the feature schema hash and the training settings, so a
changed encoder or config trains afresh instead of loading a model that no longer fits.
torch is imported only when training is needed.
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
            settings.default_model_members,
            settings.default_model_days,
            settings.default_model_epochs,
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
    config = settings.train_config(epochs=recipe.epochs, seed=recipe.seed)
    text = json.dumps(
        {
            "config": asdict(config),
            "recipe": asdict(recipe),
            "state": asdict(settings.state_spec()),
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
    config = settings.train_config(epochs=recipe.epochs, seed=recipe.seed)
    train(load_events(data), path, config, settings.state_spec(), None, on_progress)
    shutil.rmtree(data.parent)
    (path / READY_FILE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return DefaultModel(path, True, time.perf_counter() - started)
