"""`memberpulse bench model`: sequences/s and latency per batch size and backend.

On the same held-out samples, one run: PyTorch eager (CPU), ONNX fp32 and ONNX INT8
(onnxruntime CPU); on a machine where torch sees CUDA also torch CUDA fp32 and bf16
autocast, and ONNX on CUDA where that provider loads. Each cell: a warm-up call, then
timed calls until `MIN_SECONDS` or `MAX_CALLS`, reporting the median and 99th percentile.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from memberpulse.export.parity import exclusions
from memberpulse.export.pipeline import export_model
from memberpulse.export.scorer import CPU, CUDA, Scorer, default_threads, loadable_providers
from memberpulse.models.bundle import load_bundle, load_heldout
from memberpulse.models.features import FeatureBatch

BATCH_SIZES: Final = (1, 16, 64, 256, 1024)
MIN_SECONDS: Final = 1.0
MAX_CALLS: Final = 200
MIN_CALLS: Final = 5


def _time(call: Callable[[], object]) -> list[float]:
    call()  # warm-up
    laps: list[float] = []
    started = time.perf_counter()
    while len(laps) < MIN_CALLS or (
        time.perf_counter() - started < MIN_SECONDS and len(laps) < MAX_CALLS
    ):
        t0 = time.perf_counter()
        call()
        laps.append(time.perf_counter() - t0)
    return laps


def _row(backend: str, batch: int, laps: list[float]) -> dict[str, Any]:
    p50 = float(np.median(laps))
    return {
        "backend": backend,
        "batch_size": batch,
        "seq_per_s": batch / p50,
        "p50_ms": p50 * 1e3,
        "p99_ms": float(np.percentile(laps, 99)) * 1e3,
        "calls": len(laps),
    }


def _rows_of(features: FeatureBatch, batch: int) -> FeatureBatch:
    index = np.arange(batch) % features.rows
    return features.take(index)


def bench_model(model_dir: Path, settings: Any) -> dict[str, Any]:
    """The benchmark report (JSON layout of `memberpulse bench model --json`)."""
    bundle = load_bundle(model_dir)
    features, _, _ = load_heldout(model_dir)
    threads = settings.scorer_threads or default_threads()
    torch.set_num_threads(threads)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "model.onnx"
        export_model(model_dir, onnx, settings.model_top_k, variants=True)
        int8 = onnx.with_name("model.int8.onnx")
        scorers = {"onnx-fp32": Scorer(onnx, bundle.spec, [CPU], threads, buckets=BATCH_SIZES)}
        if int8.exists():
            scorers["onnx-int8"] = Scorer(int8, bundle.spec, [CPU], threads, buckets=BATCH_SIZES)
        if CUDA in loadable_providers():
            scorers["onnx-cuda-fp32"] = Scorer(onnx, bundle.spec, [CUDA, CPU], threads, BATCH_SIZES)
        else:
            notes.append("onnxruntime's CUDA provider does not load here: no ONNX GPU rows")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for batch in BATCH_SIZES:
            rows = _rows_of(features, batch)
            exclude = exclusions(rows, bundle.spec.first_item)
            for device in devices:
                results += _torch_rows(bundle.model, rows, device, batch)
            for name, scorer in scorers.items():
                results.append(_row(name, batch, _time(partial(scorer.score, rows, exclude))))
    return {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{threads} threads, torch {torch.__version__}",
        "parameters": bundle.model.parameter_count(),
        "results": results,
        "notes": notes,
    }


def _torch_rows(model: Any, rows: FeatureBatch, device: str, batch: int) -> list[dict[str, Any]]:
    model = model.eval().to(device)
    inputs = [torch.as_tensor(c, device=device) for c in rows]

    def run(autocast: bool) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=autocast):
                out = model(*inputs)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out

        return call

    name = "torch-eager" if device == "cpu" else "torch-cuda-fp32"
    out = [_row(name, batch, _time(run(False)))]
    if device == "cuda":
        out.append(_row("torch-cuda-bf16", batch, _time(run(True))))
    model.to("cpu")
    return out
