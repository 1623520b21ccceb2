"""The parity gate: the ONNX graph must compute what the PyTorch model computes.

Both run on the model's held-out samples (its validation window), with each member's own
recent catalogue items as the exclusion input so that the masking path is exercised too.
Gate: churn within 1e-4 (absolute, fp32), spend within 1e-3 (relative), and the top-K
lists equal as sets for ≥ 99 % of members (order may flip between near-tied scores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from memberpulse.export.onnx_export import INPUTS
from memberpulse.export.serving_graph import ReferenceGraph
from memberpulse.models import metrics
from memberpulse.models.bundle import Bundle, load_heldout
from memberpulse.models.errors import ParityError
from memberpulse.models.features import FeatureBatch

CHURN_ATOL: Final = 1e-4
SPEND_RTOL: Final = 1e-3
TOPK_AGREEMENT: Final = 0.99
BATCH: Final = 512
EXCLUDED: Final = 8  # recent catalogue items per member used as the exclusion input
RECALL_K: Final = 10


@dataclass(frozen=True)
class Parity:
    """How closely two implementations agree on the held-out samples."""

    members: int
    churn_max_abs: float
    spend_max_rel: float
    topk_set_agreement: float
    topk_order_agreement: float

    def passed(self, churn_atol: float = CHURN_ATOL, spend_rtol: float = SPEND_RTOL) -> bool:
        """Within the gate's tolerances."""
        return (
            self.churn_max_abs <= churn_atol
            and self.spend_max_rel <= spend_rtol
            and self.topk_set_agreement >= TOPK_AGREEMENT
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly figures."""
        return asdict(self)


@dataclass(frozen=True)
class Outputs:
    """Serving outputs for a set of members."""

    churn: NDArray[np.float64]
    spend: NDArray[np.float64]
    top_items: NDArray[np.int64]
    top_scores: NDArray[np.float64]


def exclusions(features: FeatureBatch, first_item: int, width: int = EXCLUDED) -> NDArray[np.int64]:
    """Each member's latest `width` catalogue items as positions, −1 padded."""
    items = features.items[:, -width:].astype(np.int64)
    return np.where(items >= first_item, items - first_item, -1)


def torch_outputs(
    bundle: Bundle, features: FeatureBatch, exclude: NDArray[np.int64], top_k: int
) -> Outputs:
    """The PyTorch reference (the network as trained) on CPU, batch by batch."""
    graph = ReferenceGraph(bundle.model.eval(), top_k).eval()
    parts = []
    with torch.no_grad():
        for rows in _batches(features.rows):
            inputs = [torch.as_tensor(c[rows]) for c in features] + [torch.as_tensor(exclude[rows])]
            parts.append([t.numpy() for t in graph(*inputs)])
    return _join(parts)


def onnx_outputs(session: Any, features: FeatureBatch, exclude: NDArray[np.int64]) -> Outputs:
    """An onnxruntime session's outputs, batch by batch."""
    parts = []
    for rows in _batches(features.rows):
        feed = {name: column[rows] for name, column in zip(INPUTS, features, strict=False)}
        feed["exclude"] = exclude[rows]
        parts.append(session.run(None, feed))
    return _join(parts)


def compare(reference: Outputs, candidate: Outputs) -> Parity:
    """Agreement figures of two output sets for the same members."""
    churn = float(np.abs(reference.churn - candidate.churn).max(initial=0.0))
    denominator = np.maximum(np.abs(reference.spend), 1e-12)
    spend = float((np.abs(reference.spend - candidate.spend) / denominator).max(initial=0.0))
    same_order = (reference.top_items == candidate.top_items).all(axis=1)
    same_set = np.sort(reference.top_items, axis=1) == np.sort(candidate.top_items, axis=1)
    n = len(reference.churn)
    return Parity(
        members=n,
        churn_max_abs=churn,
        spend_max_rel=spend,
        topk_set_agreement=float(same_set.all(axis=1).mean()) if n else 1.0,
        topk_order_agreement=float(same_order.mean()) if n else 1.0,
    )


def check_parity(bundle: Bundle, session: Any, top_k: int) -> Parity:
    """Run both implementations on the held-out samples; raise `ParityError` on a miss."""
    features, _, _ = load_heldout(bundle.path)
    exclude = exclusions(features, bundle.spec.first_item)
    parity = compare(
        torch_outputs(bundle, features, exclude, top_k), onnx_outputs(session, features, exclude)
    )
    if not parity.passed():
        raise ParityError(
            f"ONNX export disagrees with PyTorch on {parity.members} held-out members: "
            f"churn max |Δ| {parity.churn_max_abs:.2e} (gate {CHURN_ATOL}), spend max rel "
            f"{parity.spend_max_rel:.2e} (gate {SPEND_RTOL}), top-K sets equal for "
            f"{parity.topk_set_agreement:.2%} (gate {TOPK_AGREEMENT:.0%})"
        )
    return parity


def accuracy(outputs: Outputs, churn: NDArray[Any], next_item: NDArray[Any]) -> dict[str, float]:
    """Churn ROC-AUC and next-item recall@10 of serving outputs (no exclusions)."""
    known = next_item != -2
    hits = (outputs.top_items[:, :RECALL_K] == next_item[:, None]).any(axis=1)
    return {
        "churn_roc_auc": metrics.roc_auc(churn, outputs.churn),
        f"recall@{RECALL_K}": float(hits[known].mean()) if known.any() else float("nan"),
    }


def _batches(n: int) -> list[slice]:
    return [slice(start, min(start + BATCH, n)) for start in range(0, n, BATCH)]


def _join(parts: list[list[Any]]) -> Outputs:
    columns = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    return Outputs(
        columns[0].astype(np.float64),
        columns[1].astype(np.float64),
        columns[2].astype(np.int64),
        columns[3].astype(np.float64),
    )
