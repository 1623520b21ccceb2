"""The onnxruntime scorer the worker uses: no torch, quiet provider choice, fixed buckets.

Providers: TensorRT, then CUDA, then CPU, each only when its provider library really
loads (the onnxruntime-gpu wheel lists CUDA even on a machine without CUDA libraries and
then logs loud errors when asked for it; trying `ctypes.CDLL` first keeps a CPU machine
quiet). Batches are padded up to a few fixed sizes so that onnxruntime reuses its
allocations instead of planning a new shape per batch; on CUDA each bucket gets
preallocated device buffers and runs through IO binding.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from memberpulse.models.features import FeatureBatch, FeatureSpec

TENSORRT: Final = "TensorrtExecutionProvider"
CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"
_LIBRARIES: Final = {TENSORRT: "tensorrt", CUDA: "cuda"}
# Powers of two: padding wastes under half a batch. With every fourth size only, 81 members
# ran as 256 (28.5 ms against 11.7 ms at 128; 2 threads, this repository's CI machine).
DEFAULT_BUCKETS: Final = (16, 32, 64, 128, 256, 512, 1024)
DEFAULT_EXCLUDED: Final = 32  # exclusion slots per member (recently bought items)
NO_ITEM: Final = -1
CPU_DISABLED_FUSIONS: Final = ("SkipLayerNormFusion",)  # see disabled_fusions


@dataclass(frozen=True)
class Scores:
    """Scores for a batch of members, in batch order."""

    churn: NDArray[np.float32]  # (B,) probability of no purchase within the horizon
    spend: NDArray[np.float32]  # (B,) expected spend over the horizon
    top_items: NDArray[np.int64]  # (B, K) catalogue positions, best first
    top_scores: NDArray[np.float32]  # (B, K)

    def __len__(self) -> int:
        return int(self.churn.shape[0])


def _provider_loads(name: str) -> bool:
    import onnxruntime as ort

    if name == CPU:
        return True
    library = Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{_LIBRARIES[name]}.so"
    if not library.exists():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")  # the driver: no GPU, no CUDA provider
        ctypes.CDLL(str(library))
    except OSError:
        return False
    return True


def loadable_providers(preferred: Sequence[str] = (TENSORRT, CUDA, CPU)) -> list[str]:
    """The preferred providers this machine can really load, best first (CPU always)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available and _provider_loads(p)]
    return chosen if CPU in chosen else [*chosen, CPU]


def default_threads() -> int:
    """Intra-op threads: the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def disabled_fusions(providers: Sequence[str]) -> list[str]:
    """onnxruntime fusions to leave out for these providers.

    On CPU, onnxruntime 1.31's fused SkipLayerNormalization kernel took ~1.9 ms per
    (256, 33, 64) call here, where the Add and LayerNormalization it replaces took ~0.7;
    leaving the fusion out made the INT8 serving graph 6-12 % faster at batch 256 (measured
    on this 2-core machine). GPU providers keep it.
    """
    return list(CPU_DISABLED_FUSIONS) if providers and providers[0] == CPU else []


class Scorer:
    """Scores encoded member batches with one ONNX model."""

    def __init__(
        self,
        path: Path,
        spec: FeatureSpec,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        excluded: int = DEFAULT_EXCLUDED,
        io_binding: bool | None = None,
        allow_spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.path, self.spec = Path(path), spec
        self.buckets = tuple(sorted(buckets))
        self.excluded = excluded
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        if not allow_spinning:  # idle pool threads sleep instead of burning a core
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: provider fallbacks are decided above
        chosen = list(providers) if providers is not None else loadable_providers()
        self.session = ort.InferenceSession(
            str(self.path), options, providers=chosen, disabled_optimizers=disabled_fusions(chosen)
        )
        self.providers: list[str] = self.session.get_providers()
        self.device = "cuda" if CUDA in self.providers or TENSORRT in self.providers else "cpu"
        # IO binding: always on a GPU (inputs copied once into preallocated device buffers,
        # no per-call allocation); optional on CPU, where it exercises the same path.
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        self._bindings: dict[int, Any] = {}
        self.warm_up()

    def warm_up(self) -> None:
        """Run every bucket once (allocations, kernel selection) before real traffic."""
        for size in self.buckets:
            self._run(self._padding(size), np.full((size, self.excluded), NO_ITEM, np.int64))

    def score(self, batch: FeatureBatch, exclude: NDArray[np.int64] | None = None) -> Scores:
        """Scores for every member of `batch`; `exclude`: (B, E) catalogue positions or −1."""
        n = batch.rows
        if exclude is None:
            exclude = np.full((n, self.excluded), NO_ITEM, dtype=np.int64)
        exclude = self._fit_exclusions(exclude)
        parts = []
        largest = self.buckets[-1]
        for start in range(0, n, largest):
            stop = min(start + largest, n)
            parts.append(self._score_chunk(batch.take(slice(start, stop)), exclude[start:stop]))
        if not parts:
            return Scores(*(np.zeros((0, *s), dtype=d) for s, d in self._empty()))
        return Scores(*(np.concatenate(columns) for columns in zip(*parts, strict=True)))

    def _empty(self) -> list[tuple[tuple[int, ...], Any]]:
        k = int(self.session.get_outputs()[2].shape[1] or 0)
        return [((), np.float32), ((), np.float32), ((k,), np.int64), ((k,), np.float32)]

    def _fit_exclusions(self, exclude: NDArray[np.int64]) -> NDArray[np.int64]:
        width = exclude.shape[1]
        if width == self.excluded:
            return exclude.astype(np.int64, copy=False)
        if width > self.excluded:
            raise ValueError(f"at most {self.excluded} excluded items per member, got {width}")
        pad = np.full((exclude.shape[0], self.excluded - width), NO_ITEM, dtype=np.int64)
        return np.concatenate([exclude.astype(np.int64), pad], axis=1)

    def _score_chunk(
        self, batch: FeatureBatch, exclude: NDArray[np.int64]
    ) -> tuple[NDArray[Any], ...]:
        n = batch.rows
        size = next(b for b in self.buckets if b >= n)
        if size > n:  # pad with empty members (all events masked): cheap and shape-stable
            pad = self._padding(size - n)
            batch = FeatureBatch._make(
                np.concatenate([column, filler]) for column, filler in zip(batch, pad, strict=True)
            )
            exclude = np.concatenate([exclude, np.full((size - n, self.excluded), NO_ITEM)])
        outputs = self._run(batch, exclude)
        return tuple(output[:n] for output in outputs)

    def _padding(self, rows: int) -> FeatureBatch:
        length = self.spec.sequence_length
        ids = [np.zeros((rows, length), dtype=np.int32) for _ in range(6)]
        mask = np.zeros((rows, length), dtype=bool)
        aggregates = np.zeros((rows, len(self.spec.agg_mean)), dtype=np.float32)
        return FeatureBatch._make((*ids, mask, aggregates))

    def _run(self, batch: FeatureBatch, exclude: NDArray[np.int64]) -> list[NDArray[Any]]:
        feed = dict(zip(FeatureBatch._fields, batch, strict=True))
        feed["exclude"] = exclude
        if not self.io_binding:
            outputs: list[NDArray[Any]] = self.session.run(None, feed)
            return outputs
        return self._run_bound(feed, batch.rows)

    def _run_bound(self, feed: dict[str, NDArray[Any]], rows: int) -> list[NDArray[Any]]:
        """Inputs copied into this bucket's preallocated buffers, outputs bound on the device."""
        import onnxruntime as ort

        bound = self._bindings.get(rows)
        if bound is None:
            binding = self.session.io_binding()
            buffers = {
                name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, 0)
                for name, value in feed.items()
            }
            for name, value in buffers.items():
                binding.bind_ortvalue_input(name, value)
            for output in self.session.get_outputs():
                binding.bind_output(output.name, self.device, 0)
            self._bindings[rows] = (binding, buffers)
        else:
            binding, buffers = bound
            for name, value in feed.items():
                buffers[name].update_inplace(np.ascontiguousarray(value))
        self.session.run_with_iobinding(binding)
        copied: list[NDArray[Any]] = binding.copy_outputs_to_cpu()
        return copied

    def item_ids(self, positions: NDArray[np.int64]) -> list[list[str]]:
        """Catalogue positions → raw item ids."""
        items = self.spec.items
        return [[items[p] for p in row if p >= 0] for row in positions.tolist()]
