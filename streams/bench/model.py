"""`memberpulse bench model`: sequences/s and latency per batch size and backend.

On the same held-out samples, one run: PyTorch eager (the network as trained, and the
serving graph that export writes, both on CPU), ONNX fp32 and ONNX INT8 (onnxruntime
CPU); on a machine where torch sees CUDA also torch CUDA fp32 and bf16 autocast, and ONNX
on CUDA where that provider loads. Each cell, in each of `ROUNDS` rounds: a warm-up call,
then timed calls until `MIN_SECONDS` or `MAX_CALLS`; reported: the median and 99th
percentile over all rounds' calls.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from memberpulse.models.features import FeatureBatch
from memberpulse.streams.bench.machine import describe_machine
from memberpulse.streams.serving.scorer import (
    CPU,
    CUDA,
    Scorer,
    default_threads,
    loadable_providers,
)

if TYPE_CHECKING:
    import torch

    from memberpulse.models.network import MemberTransformer

BATCH_SIZES: Final = (1, 16, 64, 256, 1024)
MIN_SECONDS: Final = 0.5  # per backend and round
ROUNDS: Final = 2
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
    import torch  # the `train` extra: imported here, so that serving installs without it

    from memberpulse.export.parity import exclusions
    from memberpulse.export.pipeline import export_model
    from memberpulse.export.variants import INT8
    from memberpulse.models.bundle import load_bundle, load_heldout

    bundle = load_bundle(model_dir)
    features, _, _ = load_heldout(model_dir)
    threads = settings.serving.scorer_threads or default_threads()
    torch.set_num_threads(threads)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "model.onnx"
        exported = export_model(model_dir, onnx, settings.serving.top_k, variants=True)
        scorers = {"onnx-fp32": Scorer(onnx, bundle.spec, [CPU], threads, buckets=BATCH_SIZES)}
        for variant in exported.variants:
            if variant.name == INT8 and variant.path is not None:
                scorers["onnx-int8"] = Scorer(
                    variant.path, bundle.spec, [CPU], threads, BATCH_SIZES
                )
            elif variant.name == INT8:
                notes.append(f"no ONNX INT8 rows: the INT8 variant was refused ({variant.refused})")
        if CUDA in loadable_providers():
            scorers["onnx-cuda-fp32"] = Scorer(onnx, bundle.spec, [CUDA, CPU], threads, BATCH_SIZES)
        else:
            notes.append("onnxruntime's CUDA provider does not load here: no ONNX GPU rows")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for batch in BATCH_SIZES:
            rows = _rows_of(features, batch)
            exclude = exclusions(rows, bundle.spec.first_item)
            calls: dict[str, Callable[[], object]] = {}
            for device in devices:
                calls |= _torch_calls(bundle.model, rows, exclude, settings.serving.top_k, device)
            for name, scorer in scorers.items():
                calls[name] = partial(scorer.score, rows, exclude)
            laps = _rounds(calls)
            results += [_row(name, batch, laps[name]) for name in calls]
    return {
        "machine": f"{describe_machine()}, {threads} threads, torch {torch.__version__}",
        "parameters": bundle.model.parameter_count(),
        "results": results,
        "notes": notes,
    }


def _rounds(calls: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Laps per backend over `ROUNDS` rounds, the order reversed every other round, so
    that a slow spell of a shared machine does not land on one backend only."""
    laps: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for round_ in range(ROUNDS):
        for name in order if round_ % 2 == 0 else order[::-1]:
            laps[name] += _time(calls[name])
    return laps


def _torch_calls(
    model: MemberTransformer,
    rows: FeatureBatch,
    exclude: np.ndarray[Any, Any],
    top_k: int,
    device: str,
) -> dict[str, Callable[[], object]]:
    """The network as trained (`torch-eager`: the `transformers` encoder and our heads) and
    the serving graph that export writes, run in torch (`torch-eager-serving-graph`); on
    CUDA the network in fp32 and under bf16 autocast."""
    import torch

    from memberpulse.export.serving_graph import ServingGraph

    # `.to()` moves a module in place: the CPU rows must keep a CPU network, so CUDA gets
    # its own copy (the first GPU run here crashed on exactly that).
    model = model.eval() if device == "cpu" else copy.deepcopy(model).eval().to(device)
    inputs = [torch.as_tensor(c, device=device) for c in rows]

    def run(module: torch.nn.Module, args: list[torch.Tensor], autocast: bool) -> object:
        with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=autocast):
            out = module(*args)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

    if device == "cpu":
        serving = ServingGraph(model, top_k).eval()
        with_exclude = [*inputs, torch.as_tensor(exclude)]
        return {
            "torch-eager": partial(run, model, inputs, False),
            "torch-eager-serving-graph": partial(run, serving, with_exclude, False),
        }
    return {
        "torch-cuda-fp32": partial(run, model, inputs, False),
        "torch-cuda-bf16": partial(run, model, inputs, True),
    }
