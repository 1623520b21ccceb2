"""`memberpulse export`: trained model directory → optimised ONNX + card + spec + variants.

Steps: export the serving graph (torch.onnx, dynamo), optimise it offline with
onnxruntime, pass the parity gate against PyTorch on the held-out window (or fail
loudly, leaving no half-written model behind), build and judge the INT8 and FP16
variants, then write the card (beside the file and inside its metadata) and the spec.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from memberpulse.export.onnx_export import (
    base_card,
    export_graph,
    optimise,
    write_card,
)
from memberpulse.export.parity import Parity, check_parity, exclusions, onnx_outputs
from memberpulse.export.variants import Variant, build_variants, session
from memberpulse.models.bundle import load_bundle, load_heldout
from memberpulse.streams.serving.files import spec_path
from memberpulse.streams.serving.scorer import CPU

DEFAULT_TOP_K: Final = 20


@dataclass(frozen=True)
class ExportResult:
    """What export wrote and measured."""

    onnx: Path
    card: Path
    parity: Parity
    variants: list[Variant]
    card_data: dict[str, Any]


def model_version(model_dir: Path) -> str:
    """A content version: the first 12 hex digits of the checkpoint's SHA-256."""
    digest = hashlib.sha256((model_dir / "model.pt").read_bytes()).hexdigest()
    return digest[:12]


def risk_percentiles(bundle: Any, onnx_file: Path) -> list[float]:
    """Percentiles 1..99 of the exported model's churn risk over the held-out samples: how
    the worker turns "alert on the riskiest 5%" into a threshold for this very model.
    """
    features, _, _ = load_heldout(bundle.path)
    exclude = exclusions(features, bundle.spec.first_item)
    churn = onnx_outputs(session(onnx_file, [CPU]), features, exclude).churn
    return [round(float(v), 6) for v in np.percentile(churn, np.arange(1, 100))]


def export_model(
    model_dir: Path, out: Path, top_k: int = DEFAULT_TOP_K, variants: bool = True
) -> ExportResult:
    """Export, check and describe one trained model."""
    bundle = load_bundle(model_dir)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must name an .onnx file, got {out}")
    raw = out.with_name(out.stem + ".raw.onnx")  # quantisers need the unfused graph
    tmp = out.with_name(out.stem + ".tmp.onnx")
    try:
        export_graph(bundle, raw, top_k)
        shutil.copyfile(raw, tmp)
        optimise(tmp)
        parity = check_parity(bundle, session(tmp, [CPU]), top_k)
        tmp.replace(out)
        built: list[Variant] = []
        base: dict[str, float] = {}
        if variants:
            features, churn, next_item = load_heldout(bundle.path)
            base, built = build_variants(raw, out, features, churn, next_item)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    card = base_card(bundle, top_k, model_version(model_dir))
    card["parity"] = parity.as_dict()
    card["churn_risk_percentiles"] = risk_percentiles(bundle, out)
    card["heldout_accuracy"] = base
    card["variants"] = {v.name: v.as_dict() for v in built}
    card_file = write_card(out, card)
    bundle.spec.save(spec_path(out))
    return ExportResult(out, card_file, parity, built, card)
