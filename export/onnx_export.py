"""torch → ONNX: the serving graph, the model card, offline graph optimisation.

The exported graph (`serving_graph.ServingGraph`) holds everything serving needs per
member batch: churn probability, expected spend and the top-K catalogue items, with an
`exclude` input of catalogue positions (−1 = none) whose scores are set to −inf before
the top-K, so the worker drops recently bought items without fetching more than K. Batch
and exclusion axes are dynamic. Opset 20, for its native `Gelu` (opset 18 spells GELU
as five element-wise nodes that onnxruntime does not fuse back).

Next to `PATH` (the .onnx file) export writes `PATH.card.json` (also embedded in the
ONNX metadata) and `PATH.spec.json` (the model's feature spec).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import Tensor

from memberpulse.export.serving_graph import ServingGraph
from memberpulse.models.bundle import Bundle
from memberpulse.models.features import FeatureBatch, schema_hash
from memberpulse.streams.serving.files import card_path
from memberpulse.streams.serving.scorer import CPU, CPU_DISABLED_FUSIONS

INPUTS: Final = (*FeatureBatch._fields, "exclude")
OUTPUTS: Final = ("churn", "spend", "top_items", "top_scores")
OPSET: Final = 20
CARD_METADATA_KEY: Final = "memberpulse_card"
EXAMPLE_BATCH: Final = 4
_EXPORTER_NOISE: Final = (r".*isinstance\(treespec, LeafSpec\)", r"# The axis name")


def example_inputs(
    bundle: Bundle, batch: int = EXAMPLE_BATCH, excluded: int = 2
) -> tuple[Tensor, ...]:
    """Valid dummy inputs of the model's shapes (for tracing and warm-up)."""
    length = bundle.spec.sequence_length
    ids = tuple(torch.ones(batch, length, dtype=torch.int32) for _ in range(6))
    mask = torch.ones(batch, length, dtype=torch.bool)
    aggregates = torch.zeros(batch, len(bundle.spec.agg_mean), dtype=torch.float32)
    exclude = torch.full((batch, excluded), -1, dtype=torch.int64)
    return (*ids, mask, aggregates, exclude)


def export_graph(bundle: Bundle, path: Path, top_k: int) -> None:
    """Write the serving graph of `bundle` to `path` (dynamic batch and exclusion axes)."""
    graph = ServingGraph(bundle.model.eval(), top_k).eval()
    batch, excluded = torch.export.Dim("batch"), torch.export.Dim("excluded")
    dynamic = (*tuple({0: batch} for _ in FeatureBatch._fields), {0: batch, 1: excluded})
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter prints progress lines, logs that torchvision's ops cannot be registered
    # (not installed, not used) and raises deprecation warnings from torch's own internals
    # (torch 2.13: LeafSpec, axis renaming); none of it is actionable here.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.ExitStack() as restore,
    ):
        restore.callback(registration.setLevel, level)
        for message in _EXPORTER_NOISE:
            warnings.filterwarnings("ignore", message=message)
        torch.onnx.export(
            graph,
            example_inputs(bundle),
            str(path),
            dynamo=True,
            opset_version=OPSET,
            dynamic_shapes=dynamic,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            verbose=False,
        )


def optimise(path: Path) -> None:
    """Replace `path` with onnxruntime's offline-optimised graph (portable level)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # EXTENDED fuses attention/GELU/LayerNorm with contrib ops every provider has; the
    # ALL level adds layout changes tied to the CPU it ran on, so it stays online only.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    tmp = path.with_suffix(".opt.onnx")
    options.optimized_model_filepath = str(tmp)
    # Fusions a provider is better off without stay out of the file; a provider that wants
    # them applies them when it loads the graph (see `scorer.disabled_fusions`).
    ort.InferenceSession(
        str(path), options, providers=[CPU], disabled_optimizers=list(CPU_DISABLED_FUSIONS)
    )
    tmp.replace(path)


def embed_card(path: Path, card: dict[str, Any]) -> None:
    """Store the card JSON in the ONNX file's metadata."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, json.dumps(card, sort_keys=True)
    onnx.save(model, str(path))


def base_card(bundle: Bundle, top_k: int, version: str) -> dict[str, Any]:
    """The card fields known before any check ran."""
    config = bundle.config
    metrics_file = bundle.path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return {
        "version": version,
        "feature_schema": schema_hash(),
        "training": {
            "log_start": config.get("log_start"),
            "until": config.get("until"),
            "until_iso": config.get("until_iso"),
            "horizon_days": bundle.horizon_days,
            "protocol": config.get("protocol"),
            "seed": config.get("seed"),
            "network": config.get("network"),
        },
        "metrics": metrics,
        "export": {
            "opset": OPSET,
            "top_k": top_k,
            "inputs": list(INPUTS),
            "outputs": list(OUTPUTS),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__,
        },
        "catalogue_size": len(bundle.spec.items),
        "sequence_length": bundle.spec.sequence_length,
    }


def write_card(path: Path, card: dict[str, Any]) -> Path:
    """Write the card beside the ONNX file and into its metadata."""
    out = card_path(path)
    out.write_text(json.dumps(card, indent=1, sort_keys=True, default=_plain))
    embed_card(path, json.loads(json.dumps(card, default=_plain)))
    return out


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
