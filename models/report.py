"""Scoring a set of samples with a model and its baselines: the metrics and the plot data.

Shared by `train` (validation window) and `evaluate` (the held-out time T), so both
report the same numbers the same way. Next-item metrics rank the full catalogue; a
target outside it counts as a miss; members with no event in the window are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from memberpulse.models import metrics as m
from memberpulse.models.baselines import (
    LogisticRegression,
    popularity_ranks,
    recent_ranks,
    rfm_features,
)
from memberpulse.models.config import TrainConfig
from memberpulse.models.dataset import Samples
from memberpulse.models.features import FeatureBatch, FeatureSpec
from memberpulse.models.network import MemberTransformer
from memberpulse.models.transitions import Transitions, table_scores

TOP_K: Final = 10
RECALL_KS: Final = (1, 5, 10, 20, 50, 100)
CALIBRATION_BINS: Final = 10
TIE_BREAK: Final = 1e-3  # popularity's share of the transition baseline's scores (ties)
RANK_CHUNK: Final = 2048  # members per (chunk, catalogue) score matrix


@dataclass
class External:
    """Baselines scored outside this module (they need the event log), per sample row:
    next-item target ranks, churn probabilities, spend forecasts, and what to report
    about each beside its figures (e.g. SASRec's `epochs_run`)."""

    ranks: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    churn: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    spend: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def take(self, rows: NDArray[np.int64]) -> External:
        """The same baselines on a subset of the rows."""
        return External(
            {k: v[rows] for k, v in self.ranks.items()},
            {k: v[rows] for k, v in self.churn.items()},
            {k: v[rows] for k, v in self.spend.items()},
            self.info,
        )


class Predictions(NamedTuple):
    """Model outputs for a sample set."""

    churn: NDArray[np.float64]  # probability
    spend: NDArray[np.float64]  # expected spend over the horizon, currency units
    ranks: NDArray[np.int64]  # 0-based rank of the next-item target (n_catalogue: none)


class Curves(NamedTuple):
    """What the plots draw."""

    roc: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]
    aucs: dict[str, float]
    calibration: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
    recall: dict[str, dict[int, float]]


@torch.no_grad()
def predict(
    model: MemberTransformer,
    samples: Samples,
    batch_size: int,
    device: torch.device,
    seen: m.SeenItems | None = None,
) -> Predictions:
    """Churn probability, expected spend and next-item target ranks, batch by batch (with
    `seen`, one entry per sample: those items left out of each ranking)."""
    model.eval().to(device)
    churn, spend, ranks = [], [], []
    targets = np.where(samples.next_item >= 0, samples.next_item, -1)
    scale = model.config.spend_scale
    for start in range(0, len(samples), batch_size):
        rows = np.arange(start, min(start + batch_size, len(samples)))
        columns = samples.features.take(rows)
        inputs = [torch.as_tensor(column, device=device) for column in columns]
        out = model(*inputs)
        churn.append(torch.sigmoid(out.churn_logit.float()).cpu().numpy())
        spend.append((torch.exp(out.spend_log.float()) * scale).cpu().numpy())
        scores = out.item_scores.float().cpu().numpy()
        ranks.append(
            m.ranks_of_targets(scores, targets[rows], None if seen is None else seen.take(rows))
        )
    return Predictions(
        np.concatenate(churn).astype(np.float64),
        np.concatenate(spend).astype(np.float64),
        np.concatenate(ranks).astype(np.int64),
    )


def evaluate_samples(
    model: MemberTransformer,
    samples: Samples,
    spec: FeatureSpec,
    baselines: dict[str, Any],
    config: TrainConfig,
    device: torch.device,
    external: External | None = None,
    seen: m.SeenItems | None = None,
) -> tuple[dict[str, Any], Curves]:
    """Model and baseline metrics on `samples` (the JSON layout of `memberpulse evaluate`).

    With `seen` (one entry per sample), every next-item ranking leaves those items out
    (`external`'s ranks must have been computed the same way), and the "recent items"
    baseline, which ranks only seen items ahead of the rest, is not reported."""
    external = external or External()
    pred = predict(model, samples, config.eval_batch_size, device, seen)
    y = samples.churn.astype(np.float64)
    rfm = LogisticRegression.from_dict(baselines["rfm"])
    rfm_prob = rfm.predict_proba(rfm_features(*samples.rfm.T))
    both = len(np.unique(y)) == 2
    churn_model = _churn_metrics(y, pred.churn) if both else {}
    churn_rfm = {"roc_auc": m.roc_auc(y, rfm_prob), "brier": m.brier(y, rfm_prob)} if both else {}
    churn_baselines = {"rfm": churn_rfm}
    for name, prob in external.churn.items():
        churn_baselines[name] = (
            {"roc_auc": m.roc_auc(y, prob), "brier": m.brier(y, prob)} if both else {}
        )

    has_next = samples.next_item != -2
    counts = np.asarray(baselines["item_counts"], dtype=np.int64)
    targets = np.where(samples.next_item >= 0, samples.next_item, -1)[has_next]
    rows = np.flatnonzero(has_next)
    kept = None if seen is None else seen.take(rows)
    ranks = {"model": pred.ranks[has_next], "popularity": popularity_ranks(counts, targets)}
    if kept is None:
        histories = _histories(samples, spec)
        ranks["recent"] = recent_ranks([histories[i] for i in rows], targets, counts)
    else:
        ranks["popularity"] = m.ranks_without_seen(
            ranks["popularity"], targets, kept, lambda _, items: popularity_ranks(counts, items)
        )
    table = model_transitions(model)
    if table is not None:
        ranks["transitions"] = transition_ranks(
            table, samples.features.take(rows), targets, counts, kept
        )
    for name, external_ranks in external.ranks.items():
        ranks[name] = external_ranks[has_next]
    next_item = {name: {**_ranking(r), **external.info.get(name, {})} for name, r in ranks.items()}
    metrics: dict[str, Any] = {
        "n_members": len(samples),
        "churn_rate": float(y.mean()) if len(y) else None,
        "churn": {"model": churn_model, "baselines": churn_baselines},
        "next_item": {
            "model": next_item["model"],
            "baselines": {k: v for k, v in next_item.items() if k != "model"},
            "n_targets": int(has_next.sum()),
            "catalogue": len(spec.items),
        },
        "spend": {
            "model": {
                "mae": m.mae(samples.spend, pred.spend),
                "rmse": m.rmse(samples.spend, pred.spend),
            },
            "baselines": {
                name: {"mae": m.mae(samples.spend, value), "rmse": m.rmse(samples.spend, value)}
                for name, value in external.spend.items()
            },
            "mean_actual": float(samples.spend.mean()),
        },
    }
    metrics["verdicts"] = verdicts(metrics)
    curves = Curves(
        roc={"model": m.roc_curve(y, pred.churn), "rfm": m.roc_curve(y, rfm_prob)} if both else {},
        aucs={
            "model": churn_model.get("roc_auc", float("nan")),
            "rfm": churn_rfm.get("roc_auc", float("nan")),
        },
        calibration=m.calibration_curve(y, pred.churn, CALIBRATION_BINS),
        recall={name: m.recall_curve(r, RECALL_KS) for name, r in ranks.items()},
    )
    return metrics, curves


BASELINE_NAMES: Final = {
    "rfm": "RFM logistic regression",
    "bgnbd": "BG/NBD",
    "bgnbd_gg": "BG/NBD × Gamma-Gamma",
    "sasrec": "SASRec",
    "markov": "the first-order Markov chain",
    "popularity": "popularity",
    "recent": "recent items",
    "transitions": "the transition table alone",
}
# Per task: the figure compared and whether higher is better.
VERDICT_FIGURES: Final = {
    "churn": ("roc_auc", True),
    "next_item": (f"ndcg@{TOP_K}", True),
    "spend": ("mae", False),
}


def verdicts(metrics: dict[str, Any]) -> list[str]:
    """One sentence per (task, baseline): whether the model beats it, in words."""
    out = []
    for task, (figure, higher) in VERDICT_FIGURES.items():
        model = metrics[task].get("model", {}).get(figure)
        if model is None or not np.isfinite(model):
            continue
        for name, figures in metrics[task].get("baselines", {}).items():
            value = figures.get(figure)
            if value is None or not np.isfinite(value):
                continue
            wins = model > value if higher else model < value
            verb = "beats" if wins else ("ties" if model == value else "loses to")
            out.append(
                f"{task.replace('_', ' ')}: the model {verb} {BASELINE_NAMES.get(name, name)} "
                f"on {figure} ({model:.4f} against {value:.4f})"
            )
    return out


def model_transitions(model: MemberTransformer) -> Transitions | None:
    """The transition table installed in `model`, or None when it has none."""
    weights = model.transition_log_counts.detach().cpu().numpy()
    if not weights.any():
        return None
    items = model.transition_items.detach().cpu().numpy()
    return Transitions(np.where(weights > 0, items, -1), weights)


def transition_ranks(
    table: Transitions,
    features: FeatureBatch,
    targets: NDArray[np.int64],
    counts: NDArray[Any],
    seen: m.SeenItems | None = None,
) -> NDArray[np.int64]:
    """Target ranks under the table alone (the last purchase's most frequent follow-ups;
    popularity breaks ties, far below the smallest step between two table weights);
    `seen` items left out."""
    tie_break = TIE_BREAK * np.log1p(counts) / max(float(np.log1p(counts).max()), 1.0)
    ranks = []
    for start in range(0, features.rows, RANK_CHUNK):
        rows = np.arange(start, min(start + RANK_CHUNK, features.rows))
        scores = table_scores(table, features.take(rows), len(counts)) + tie_break
        ranks.append(
            m.ranks_of_targets(scores, targets[rows], None if seen is None else seen.take(rows))
        )
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def _churn_metrics(y: NDArray[np.float64], prob: NDArray[np.float64]) -> dict[str, float]:
    return {
        "roc_auc": m.roc_auc(y, prob),
        "pr_auc": m.pr_auc(y, prob),
        "brier": m.brier(y, prob),
        "ece": m.ece(y, prob, CALIBRATION_BINS),
    }


def _ranking(ranks: NDArray[np.int64]) -> dict[str, float]:
    if not len(ranks):
        return {f"recall@{TOP_K}": float("nan"), f"ndcg@{TOP_K}": float("nan")}
    return {
        f"recall@{TOP_K}": m.recall_at_k(ranks, TOP_K),
        f"ndcg@{TOP_K}": m.ndcg_at_k(ranks, TOP_K),
    }


def _histories(samples: Samples, spec: FeatureSpec) -> list[NDArray[np.int64]]:
    """Each member's recent items as catalogue positions, oldest first (−1: not in it)."""
    items = samples.features.items.astype(np.int64)
    mask = samples.features.mask
    positions = np.where(items >= spec.first_item, items - spec.first_item, -1)
    return [row[keep] for row, keep in zip(positions, mask, strict=True)]


def write_plots(out: Path, history: dict[str, list[float]], curves: Curves) -> list[Path]:
    """Loss, ROC, calibration and recall@K plots as PNG files in `out`."""
    from memberpulse.models import plots  # matplotlib only when plotting

    losses = {name: values for name, values in history.items() if name.endswith("loss")}
    written = [plots.plot_loss_curves(losses, out / "loss.png")] if losses else []
    if curves.roc:
        written.append(plots.plot_roc(curves.roc, curves.aucs, out / "roc.png"))
    written.append(plots.plot_calibration(*curves.calibration, out / "calibration.png"))
    written.append(plots.plot_recall_at_k(curves.recall, out / "recall_at_k.png"))
    return written
