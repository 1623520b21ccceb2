"""The model registry: versioned directories, an atomically switched `current`, hot reload.

    ROOT/<version>/model.onnx (+ .card.json, .spec.json, variants)
    ROOT/current -> <version>      a symlink, replaced atomically (rename over it)

`promote` switches the link and, when a Redis client is given, also sets
`<prefix>:model:current` so that every worker of a deployment (sharing ROOT or not
sharing the link) sees the promotion. `ModelHolder` is what a worker keeps: between
batches it asks whether the promoted version changed, loads and checks the candidate
(file checksum from the card, feature schema hash, spec, a warm-up run) and swaps it in;
a candidate that fails a check is refused, with a log line and a counter, and the model
in service keeps serving. Swaps happen only between `score` calls, so no batch is dropped
or scored twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client import Counter, Gauge

from memberpulse.models.errors import ModelRejected, NoModel
from memberpulse.models.features import FeatureSpec, schema_hash
from memberpulse.streams.serving.files import card_path, spec_path
from memberpulse.streams.serving.scorer import Scorer

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "memberpulse_model_refusals_total", "Model versions refused at load time", ["reason"]
)
SWAPS = Counter("memberpulse_model_swaps_total", "Models put into service")
IN_SERVICE = Gauge(
    "memberpulse_model_in_service", "1 for the model version in service", ["version"]
)

CURRENT: Final = "current"
MODEL_FILE: Final = "model.onnx"
REDIS_KEY: Final = "model:current"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Registry:
    """Model versions under one root directory."""

    root: Path

    def versions(self) -> list[str]:
        """Registered versions, oldest first (by registration time)."""
        if not self.root.exists():
            return []
        dirs = [p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()]
        return [p.name for p in sorted(dirs, key=lambda p: p.stat().st_mtime)]

    def path(self, version: str) -> Path:
        """The ONNX file of a version."""
        return self.root / version / MODEL_FILE

    def add(self, onnx_file: Path) -> str:
        """Copy an exported model (and its card, spec, variants) in; return its version."""
        card = json.loads(card_path(onnx_file).read_text())
        version = str(card["version"])
        target = self.root / version
        staging = self.root / f".{version}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        stem = onnx_file.name.removesuffix(".onnx")
        for source in onnx_file.parent.iterdir():  # X.onnx, X.onnx.card.json, X.int8.onnx …
            if source.name.startswith(stem + "."):
                shutil.copyfile(source, staging / ("model" + source.name[len(stem) :]))
        card["sha256"] = file_sha256(staging / MODEL_FILE)
        card_path(staging / MODEL_FILE).write_text(json.dumps(card, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return version

    def current(self) -> str | None:
        """The promoted version on this filesystem, None before the first promotion."""
        link = self.root / CURRENT
        return os.readlink(link) if link.is_symlink() else None

    def promote(self, version: str, redis_client: Any = None, prefix: str = "mp") -> None:
        """Make `version` current (atomic link switch; also published in Redis if given)."""
        if not self.path(version).exists():
            known = ", ".join(self.versions()) or "none"
            raise ValueError(f"no model version {version!r} in {self.root} (known: {known})")
        check(self, version)  # never promote what a worker would refuse
        temporary = self.root / f".{CURRENT}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(version)
        temporary.replace(self.root / CURRENT)
        if redis_client is not None:
            redis_client.set(f"{prefix}:{REDIS_KEY}", version)


def check(registry: Registry, version: str) -> tuple[Path, FeatureSpec, dict[str, Any]]:
    """Verify a version: files present, checksum, feature schema; return path, spec, card."""
    path = registry.path(version)
    try:
        card = json.loads(card_path(path).read_text())
        spec = FeatureSpec.load(spec_path(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelRejected(version, "unreadable", str(exc)) from exc
    if not path.exists() or file_sha256(path) != card.get("sha256"):
        raise ModelRejected(version, "corrupt", f"{path} does not match its card's checksum")
    if card.get("feature_schema") != schema_hash() or spec.schema != schema_hash():
        raise ModelRejected(
            version,
            "schema",
            f"feature schema {card.get('feature_schema')!r} != this encoder's {schema_hash()!r}",
        )
    return path, spec, card


@dataclass
class Loaded:
    """A model in service."""

    version: str
    scorer: Scorer
    card: dict[str, Any]


class ModelHolder:
    """The model a worker scores with, swapped between batches when a new one is promoted."""

    def __init__(
        self,
        registry: Registry,
        promoted: Callable[[], str | None] | None = None,
        make_scorer: Callable[[Path, FeatureSpec], Scorer] = Scorer,
        on_refused: Callable[[ModelRejected], None] | None = None,
    ) -> None:
        self.registry = registry
        self._promoted = promoted or registry.current
        self._make_scorer = make_scorer
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._refused: set[str] = set()
        self.loaded: Loaded | None = None
        self.refusals = 0
        self.swaps = 0

    def refresh(self) -> bool:
        """Load the promoted version if it changed; True when a new model went into service."""
        version = self._promoted()
        current = self.loaded.version if self.loaded else None
        if version is None or version == current or version in self._refused:
            return False
        try:
            path, spec, card = check(self.registry, version)
            scorer = self._make_scorer(path, spec)  # loads and warms up, or raises
        except ModelRejected as exc:
            self._refuse(exc)
            return False
        except Exception as exc:  # onnxruntime raises its own types for a broken graph
            self._refuse(ModelRejected(version, "unloadable", f"{type(exc).__name__}: {exc}"))
            return False
        with self._lock:
            self.loaded = Loaded(version, scorer, card)
            self.swaps += 1
        SWAPS.inc()
        if current is not None:
            IN_SERVICE.labels(current).set(0)
        IN_SERVICE.labels(version).set(1)
        log.info("model %s in service (was %s)", version, current)
        return True

    def _refuse(self, exc: ModelRejected) -> None:
        self._refused.add(exc.version)
        self.refusals += 1
        REFUSALS.labels(exc.reason).inc()
        kept = self.loaded.version if self.loaded else "none"
        log.error("%s; keeping model %s", exc, kept)
        if self._on_refused is not None:
            self._on_refused(exc)

    def current(self) -> Loaded:
        """The model in service (raises when none was ever loaded)."""
        with self._lock:
            if self.loaded is None:
                raise NoModel(f"no model in service: promote one into {self.registry.root} first")
            return self.loaded


def redis_promoted(client: Any, prefix: str) -> Callable[[], str | None]:
    """A `promoted` source reading the deployment-wide version from Redis."""

    def read() -> str | None:
        value = client.get(f"{prefix}:{REDIS_KEY}")
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)

    return read
