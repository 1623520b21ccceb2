"""PNG plots of a training run: loss curves, ROC, calibration and recall@K.

matplotlib is imported inside each function, so importing this module is cheap. Figures
are built with the object API on an Agg canvas (no pyplot): nothing global is touched,
no backend is switched for the caller, and there is no figure registry to leak into.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI: Final = 120
FIGSIZE: Final = (6.4, 4.8)  # inches
GRID_ALPHA: Final = 0.3
CHANCE_STYLE: Final[Mapping[str, Any]] = {"color": "grey", "linestyle": "--", "linewidth": 1.0}
BAR_ALPHA: Final = 0.25

__all__ = ["plot_calibration", "plot_loss_curves", "plot_recall_at_k", "plot_roc"]


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path | str, dpi: int) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi, format="png")
    fig.clear()
    return out


def plot_loss_curves(
    history: Mapping[str, Sequence[float]], path: Path | str, dpi: int = DPI
) -> Path:
    """One line per history key (train/valid losses…) against the epoch number."""
    if not history:
        raise ValueError("history: expected at least one series, got none")
    fig, ax = _figure()
    for name, values in history.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
    ax.grid(alpha=GRID_ALPHA)
    ax.legend()
    return _save(fig, path, dpi)


def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    aucs: Mapping[str, float],
    path: Path | str,
    dpi: int = DPI,
) -> Path:
    """ROC curves of the model and baselines on one chart, with the chance diagonal."""
    fig, ax = _figure()
    ax.plot([0.0, 1.0], [0.0, 1.0], label="chance", **CHANCE_STYLE)
    for name, (fpr, tpr) in curves.items():
        auc = aucs.get(name, float("nan"))
        label = name if np.isnan(auc) else f"{name} (AUC {auc:.3f})"
        ax.plot(np.asarray(fpr), np.asarray(tpr), label=label)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Churn ROC")
    ax.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0), aspect="equal")
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(loc="lower right")
    return _save(fig, path, dpi)


def plot_calibration(
    mean_pred: ArrayLike,
    observed: ArrayLike,
    counts: ArrayLike,
    path: Path | str,
    dpi: int = DPI,
) -> Path:
    """Reliability diagram: observed rate against mean predicted probability per bin."""
    pred, obs, count = (np.asarray(v, dtype=np.float64) for v in (mean_pred, observed, counts))
    if not pred.shape == obs.shape == count.shape:
        raise ValueError(f"expected equal shapes, got {pred.shape}, {obs.shape}, {count.shape}")
    fig, ax = _figure()
    ax.plot([0.0, 1.0], [0.0, 1.0], label="perfectly calibrated", **CHANCE_STYLE)
    ax.plot(pred, obs, marker="o", label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed churn rate")
    ax.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0), title="Churn calibration")
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(loc="upper left")
    share = ax.twinx()  # how many members each point stands for
    share.bar(pred, count, width=1.0 / max(len(pred), 1), alpha=BAR_ALPHA, color="grey")
    share.set_ylabel("members per bin")
    return _save(fig, path, dpi)


def plot_recall_at_k(
    curves: Mapping[str, Mapping[int, float]], path: Path | str, dpi: int = DPI
) -> Path:
    """recall@K against K (log scale) for the model and each baseline."""
    if not curves:
        raise ValueError("curves: expected at least one series, got none")
    fig, ax = _figure()
    for name, recall in curves.items():
        ks = sorted(recall)
        ax.plot(ks, [recall[k] for k in ks], marker="o", label=name)
    ax.set_xscale("log")
    ax.set(xlabel="K", ylabel="recall@K", ylim=(0.0, 1.0), title="Next-item recall@K")
    ax.grid(alpha=GRID_ALPHA)
    ax.legend()
    return _save(fig, path, dpi)
