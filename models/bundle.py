"""A trained model's directory: what `train` writes and `evaluate` / `export` read.

    DIR/model.pt            state dict + the arguments that rebuild the network
    DIR/config.json         training config, time window, cutoffs, schema hash
    DIR/feature_spec.json   vocabularies, bucket edges, normalisation stats
    DIR/baselines.json      the RFM logistic regression and item popularity (same split)
    DIR/metrics.json        validation metrics of the model and the baselines
    DIR/heldout.npz         the validation samples (features and labels), for export checks
    DIR/*.png               loss, ROC, calibration and recall@K plots

Loading checks that the spec was built by this encoder (`schema_hash`), so a model
encoded differently is refused with a clear error instead of scoring garbage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from memberpulse.models.features import FeatureBatch, FeatureSpec, schema_hash
from memberpulse.models.network import MemberTransformer

MODEL_FILE: Final = "model.pt"
CONFIG_FILE: Final = "config.json"
SPEC_FILE: Final = "feature_spec.json"
BASELINES_FILE: Final = "baselines.json"
METRICS_FILE: Final = "metrics.json"
HELDOUT_FILE: Final = "heldout.npz"  # the validation samples: export's parity and accuracy checks


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded model directory."""

    path: Path
    model: MemberTransformer
    spec: FeatureSpec
    config: dict[str, Any]
    baselines: dict[str, Any]

    @property
    def horizon_days(self) -> int:
        """The churn/spend horizon the model was trained for."""
        return int(self.config["dataset"]["horizon_days"])


def save_bundle(
    path: Path,
    model: MemberTransformer,
    spec: FeatureSpec,
    config: dict[str, Any],
    baselines: dict[str, Any],
) -> None:
    """Write a model directory (metrics and plots are written separately)."""
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "args": model.bundle_args()}, path / MODEL_FILE)
    spec.save(path / SPEC_FILE)
    write_json(path / CONFIG_FILE, config)
    write_json(path / BASELINES_FILE, baselines)


def load_bundle(path: str | Path) -> Bundle:
    """Load a model directory written by `train`; refuse one from another encoder."""
    path = Path(path)
    missing = [f for f in (MODEL_FILE, SPEC_FILE, CONFIG_FILE) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a trained model directory: missing {missing}")
    spec = FeatureSpec.load(path / SPEC_FILE)
    if spec.schema != schema_hash():
        raise ValueError(
            f"{path}: feature schema {spec.schema!r} does not match this encoder's "
            f"{schema_hash()!r}; retrain the model with this version"
        )
    checkpoint = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    model = MemberTransformer.from_bundle_args(checkpoint["args"])
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    # Checkpoints from before the transition table load with the table off (weight 0).
    absent = [k for k in missing if not k.startswith("transition_")]
    if absent or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not fit its network: missing {absent}, "
            f"unexpected {unexpected}"
        )
    model.eval()
    config = json.loads((path / CONFIG_FILE).read_text())
    baselines_path = path / BASELINES_FILE
    baselines = json.loads(baselines_path.read_text()) if baselines_path.exists() else {}
    return Bundle(path, model, spec, config, baselines)


def save_heldout(
    path: Path, features: FeatureBatch, churn: NDArray[Any], next_item: NDArray[Any]
) -> None:
    """Write held-out samples (encoded features and labels) into a model directory."""
    columns: dict[str, Any] = dict(zip(FeatureBatch._fields, features, strict=True))
    columns.update(churn=churn, next_item=next_item)
    np.savez_compressed(path / HELDOUT_FILE, allow_pickle=False, **columns)


def load_heldout(path: Path) -> tuple[FeatureBatch, NDArray[Any], NDArray[Any]]:
    """Held-out features, churn labels and next-item targets of a model directory."""
    file = path / HELDOUT_FILE
    if not file.exists():
        raise FileNotFoundError(f"{path} has no {HELDOUT_FILE}: retrain it with this version")
    with np.load(file) as data:
        features = FeatureBatch._make(data[name] for name in FeatureBatch._fields)
        return features, data["churn"], data["next_item"]


def write_json(path: Path, value: object) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)
