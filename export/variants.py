"""Quantised variants: INT8 (dynamic quantisation, CPU) and FP16 (GPU), each with its cost.

A variant is kept only when it loses at most `MAX_AUC_LOSS` churn ROC-AUC against the
fp32 export on the held-out window; its accuracy delta (ROC-AUC and recall@10) and its
measured speed-up go into the card. FP16 is timed only where a CUDA provider loads;
elsewhere the card says it was not measured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from memberpulse.export.parity import Outputs, accuracy, onnx_outputs
from memberpulse.models.features import FeatureBatch
from memberpulse.streams.serving.scorer import CPU, CUDA, disabled_fusions, loadable_providers

MAX_AUC_LOSS: Final = 0.005
SPEED_BATCH: Final = 256
SPEED_REPEATS: Final = 5  # timed calls per model and round
SPEED_ROUNDS: Final = 4
INT8: Final = "int8"
FP16: Final = "fp16"


@dataclass(frozen=True)
class Variant:
    """One quantised variant and what it costs."""

    name: str
    path: Path | None  # None when refused
    provider: str
    accuracy: dict[str, float]
    delta: dict[str, float]  # variant minus fp32
    speedup: float | None  # fp32 time / variant time at SPEED_BATCH (medians), None: not measured
    refused: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly record for the card."""
        record = asdict(self)
        record["path"] = None if self.path is None else self.path.name
        return record


def session(path: Path, providers: list[str]) -> Any:
    """A quiet onnxruntime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), options, providers=providers, disabled_optimizers=disabled_fusions(providers)
    )


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic INT8 quantisation of MatMul weights (activations are quantised per batch)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exporter's intermediate shape annotations disagree with onnx's strict shape
    # inference, which the quantiser runs (seen: a Gemm over the aggregate vector, 73 vs
    # 64): drop them and let it infer afresh. Gemm layers (the small heads) stay fp32.
    model = onnx.load(str(source))
    del model.graph.value_info[:]
    clean = target.with_suffix(".noshapes.onnx")
    onnx.save(model, str(clean))
    # The quantiser logs a generic "consider pre-processing" advice on the root logger
    # (shape inference and graph optimisation, which this graph gets from onnxruntime).
    root = logging.getLogger()
    advice = _DropMessage("pre-processing before quantization")
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(clean), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
        )
    finally:
        root.removeFilter(advice)
        clean.unlink(missing_ok=True)
    return target


class _DropMessage(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def convert_fp16(source: Path, target: Path) -> Path:
    """FP16 weights and activations, fp32 inputs and outputs (the worker's arrays stay fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # ScatterElements with a reduction has no fp16 CPU kernel (onnxruntime 1.31); the
    # exclusion and transition scatters are (B, ≤ 32) updates, cheap in fp32.
    blocked = [*DEFAULT_OP_BLOCK_LIST, "ScatterElements"]
    model = convert_float_to_float16(
        onnx.load(str(source)), keep_io_types=True, op_block_list=blocked
    )
    onnx.save(model, str(target))
    return target


def measure_speedup(
    base: Any, variant: Any, features: FeatureBatch, exclude: np.ndarray[Any, Any]
) -> float:
    """Median `base` time over median `variant` time for one SPEED_BATCH batch, the two
    measured in alternating rounds so that a slow spell of the machine hits both."""
    rows = slice(0, min(SPEED_BATCH, features.rows))
    feed = {name: column[rows] for name, column in zip(FeatureBatch._fields, features, strict=True)}
    feed["exclude"] = exclude[rows]
    laps: dict[int, list[float]] = {0: [], 1: []}
    for round_ in range(SPEED_ROUNDS):
        for which in (0, 1) if round_ % 2 == 0 else (1, 0):
            sess = (base, variant)[which]
            sess.run(None, feed)  # warm-up
            for _ in range(SPEED_REPEATS):
                started = time.perf_counter()
                sess.run(None, feed)
                laps[which].append(time.perf_counter() - started)
    return float(np.median(laps[0]) / np.median(laps[1]))


def build_variants(
    raw: Path,
    fp32: Path,
    features: FeatureBatch,
    churn: np.ndarray[Any, Any],
    next_item: np.ndarray[Any, Any],
) -> tuple[dict[str, float], list[Variant]]:
    """The fp32 accuracy and the INT8 and FP16 variants (made from the unoptimised `raw`
    graph, written beside `fp32`)."""
    none = np.full((features.rows, 1), -1, dtype=np.int64)
    base_session = session(fp32, [CPU])
    base = accuracy(onnx_outputs(base_session, features, none), churn, next_item)
    variants = []

    int8 = quantize_int8(raw, fp32.with_name(fp32.stem + ".int8.onnx"))
    int8_session = session(int8, [CPU])
    variants.append(
        _judge(INT8, int8, CPU, onnx_outputs(int8_session, features, none), churn, next_item,
               base, measure_speedup(base_session, int8_session, features, none))
    )  # fmt: skip

    fp16 = convert_fp16(raw, fp32.with_name(fp32.stem + ".fp16.onnx"))
    gpu = CUDA in loadable_providers()
    providers = [CUDA, CPU] if gpu else [CPU]
    fp16_session = session(fp16, providers)
    fp16_speedup = None
    if gpu:
        fp16_speedup = measure_speedup(session(fp32, providers), fp16_session, features, none)
    fp16_variant = _judge(FP16, fp16, providers[0], onnx_outputs(fp16_session, features, none),
                          churn, next_item, base, fp16_speedup)  # fmt: skip
    if not gpu:
        note = "speed-up not measured: no CUDA provider loads here (accuracy measured on CPU)"
        fp16_variant = replace(fp16_variant, note=note)
    variants.append(fp16_variant)
    return base, variants


def _judge(
    name: str,
    path: Path,
    provider: str,
    outputs: Outputs,
    churn: np.ndarray[Any, Any],
    next_item: np.ndarray[Any, Any],
    base: dict[str, float],
    speedup: float | None,
) -> Variant:
    measured = accuracy(outputs, churn, next_item)
    delta = {k: measured[k] - base[k] for k in base}
    loss = -delta["churn_roc_auc"]
    refused = None
    if loss > MAX_AUC_LOSS:
        refused = f"loses {loss:.4f} churn ROC-AUC (limit {MAX_AUC_LOSS})"
        path.unlink(missing_ok=True)
    return Variant(name, None if refused else path, provider, measured, delta, speedup, refused)
