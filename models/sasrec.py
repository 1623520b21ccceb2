"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): the
textbook sequential recommender, as the next-item baseline of every report.

Faithful to the paper and its reference code (the authors' TensorFlow release and the
widely used PyTorch port, pmixer/SASRec.pytorch):

- item embeddings scaled by √d plus learned absolute position embeddings, dropout, the
  padding positions zeroed after every block;
- `blocks` self-attention blocks with a causal mask: pre-LayerNorm queries,
  multi-head attention, a residual, then LayerNorm → point-wise feed-forward (two
  linear layers with ReLU and dropout) with its own residual; a final LayerNorm;
- prediction by the dot product of a position's output with the (shared) item
  embedding;
- the paper's loss at **every position**: binary cross-entropy of the next item against
  one sampled negative (an item outside the member's window, as the reference code's
  `random_neq` draws one outside the member's items);
- Adam (β = 0.9, 0.98), learning rate 1e-3, batch 128, each epoch one window — the
  latest `max_length` + 1 training items — per member;
- early stopping on validation NDCG@10 over the full catalogue (not the paper's 100
  sampled negatives; the protocol the issue and later literature use), with a patience
  of `patience` epochs; the best epoch's weights are kept.

Defaults are the paper's: d = 50, 2 blocks, 1 head, dropout 0.2 (its MovieLens setting;
0.5 for its sparse Amazon sets), maximum length 50 (its setting for the sparse sets;
200 for MovieLens-1M). Items are catalogue positions + 1; 0 pads; items outside the
catalogue share one input id that is never ranked.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional as F

from memberpulse.models import metrics as m
from memberpulse.models.config import SASRecConfig

PAD: Final = 0
NEGATIVE_DRAWS: Final = 50  # re-draws of a negative inside the window (the reference: until out)
SASREC_FILE: Final = "sasrec.pt"
EVAL_K: Final = 10


class SASRec(nn.Module):
    """The network; `n_items` catalogue items, ids 1..n_items, n_items + 1 = "other"."""

    causal: Tensor

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.n_items, self.config = n_items, config
        d = config.hidden
        self.item = nn.Embedding(n_items + 2, d, padding_idx=PAD)
        self.position = nn.Embedding(config.max_length, d)
        self.dropout = nn.Dropout(config.dropout)
        self.attention_norms = nn.ModuleList(
            nn.LayerNorm(d, eps=1e-8) for _ in range(config.blocks)
        )
        self.attentions = nn.ModuleList(
            nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
            for _ in range(config.blocks)
        )
        self.forward_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(config.blocks))
        self.feed_forwards = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d, d),
                nn.Dropout(config.dropout),
                nn.ReLU(),
                nn.Linear(d, d),
                nn.Dropout(config.dropout),
            )
            for _ in range(config.blocks)
        )
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        causal = torch.triu(torch.ones(config.max_length, config.max_length, dtype=torch.bool), 1)
        self.register_buffer("causal", causal, persistent=False)
        for parameter in self.parameters():  # the reference code's Xavier initialisation
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)

    def forward(self, sequences: Tensor) -> Tensor:
        """(B, L) ids, right-aligned → (B, L, d) outputs."""
        length = sequences.shape[1]
        x = self.item(sequences) * math.sqrt(self.config.hidden)
        x = x + self.position.weight[-length:]
        x = self.dropout(x)
        keep = (sequences != PAD).unsqueeze(-1)
        x = x * keep
        mask = self.causal[:length, :length]
        for norm, attention, forward_norm, feed_forward in zip(
            self.attention_norms,
            self.attentions,
            self.forward_norms,
            self.feed_forwards,
            strict=True,
        ):
            query = norm(x)
            attended, _ = attention(query, x, x, attn_mask=mask, need_weights=False)
            x = query + attended
            x = forward_norm(x)
            x = x + feed_forward(x)
            x = x * keep
        out: Tensor = self.last_norm(x)
        return out

    def scores(self, sequences: Tensor) -> Tensor:
        """(B, L) → (B, n_items): the last position's scores over the catalogue."""
        last = self(sequences)[:, -1]
        catalogue = self.item.weight[1 : self.n_items + 1]
        out: Tensor = last @ catalogue.T
        return out


@dataclass
class FittedSASRec:
    """A trained SASRec with what the report states about it."""

    model: SASRec
    epochs_run: int
    best_epoch: int
    valid_ndcg: float
    seconds: float

    def ranks(
        self,
        windows: NDArray[np.int64],
        targets: NDArray[np.int64],
        seen: m.SeenItems | None = None,
    ) -> NDArray[np.int64]:
        """Rank of each target (catalogue position; −1 = outside: a miss) given windows,
        `seen` items left out."""
        return _ranks(self.model, windows, targets, seen=seen)

    def summary(self) -> dict[str, Any]:
        """`epochs_run`, the best epoch, its validation NDCG@10 and the hyper-parameters."""
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "valid_ndcg@10": self.valid_ndcg,
            "seconds": round(self.seconds, 1),
            "hyperparameters": asdict(self.model.config),
        }

    def save(self, directory: Path) -> None:
        """Write `sasrec.pt` into a model directory."""
        torch.save(
            {
                "state_dict": self.model.state_dict(),
                "n_items": self.model.n_items,
                "config": asdict(self.model.config),
                "summary": self.summary(),
            },
            directory / SASREC_FILE,
        )

    @classmethod
    def load(cls, directory: Path) -> FittedSASRec | None:
        """The SASRec saved in a model directory, or None when it was not trained."""
        path = directory / SASREC_FILE
        if not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = SASRec(int(saved["n_items"]), SASRecConfig(**saved["config"]))
        model.load_state_dict(saved["state_dict"])
        model.eval()
        summary = saved["summary"]
        return cls(
            model,
            int(summary["epochs_run"]),
            int(summary["best_epoch"]),
            float(summary["valid_ndcg@10"]),
            float(summary["seconds"]),
        )


def windows(
    positions: NDArray[np.int64],
    offsets: NDArray[np.int64],
    stops: NDArray[np.int64],
    length: int,
    n_items: int,
) -> NDArray[np.int64]:
    """Right-aligned (n, length) SASRec id windows: row i holds the up to `length` items
    before log row `stops[i]` of the member whose rows start at `offsets[i]`.

    `positions`: every log row's catalogue position (−1 outside the catalogue, which
    becomes the shared "other" id n_items + 1).
    """
    rows = np.asarray(stops, dtype=np.int64)[:, None] + np.arange(-length, 0)[None, :]
    valid = rows >= np.asarray(offsets, dtype=np.int64)[:, None]
    found = positions[np.maximum(rows, 0)] if len(positions) else np.zeros_like(rows)
    ids = np.where(found >= 0, found + 1, n_items + 1)
    return np.where(valid, ids, PAD).astype(np.int64)


def fit(
    train: NDArray[np.int64],
    valid_inputs: NDArray[np.int64],
    valid_targets: NDArray[np.int64],
    n_items: int,
    config: SASRecConfig,
    device: torch.device,
    report: Any = None,
) -> FittedSASRec:
    """Train on (n, max_length + 1) windows (`windows(…, max_length + 1, n_items)`); validate on
    (n, max_length) inputs and their targets (catalogue positions, −1 = outside)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    train = train[(train[:, :-1] != PAD).any(axis=1) & (train[:, 1:] != PAD).any(axis=1)]
    model = SASRec(n_items, config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.98))
    best, best_epoch, best_state, stale, epoch = -1.0, 0, None, 0, 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = generator.permutation(len(train))
        for start in range(0, len(order), config.batch_size):
            batch = train[order[start : start + config.batch_size]]
            negatives = _negatives(batch, n_items, generator)
            loss = _loss(model, batch, negatives, device)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        ranks = _ranks(model, valid_inputs, valid_targets, config.eval_batch_size, device)
        ndcg = m.ndcg_at_k(ranks, EVAL_K) if len(ranks) else 0.0
        if ndcg > best:
            best, best_epoch, stale = ndcg, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if report is not None:
            report(f"SASRec epoch {epoch}: validation NDCG@10 {ndcg:.4f} (best {best:.4f})")
        if stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().cpu()
    return FittedSASRec(model, epoch, best_epoch, best, time.perf_counter() - started)


def _negatives(
    batch: NDArray[np.int64], n_items: int, generator: np.random.Generator
) -> NDArray[np.int64]:
    """One negative per target position: a catalogue item outside the member's window."""
    targets = batch[:, 1:]
    negatives = generator.integers(1, n_items + 1, size=targets.shape)
    for _ in range(NEGATIVE_DRAWS):
        inside = (negatives[:, :, None] == batch[:, None, :]).any(axis=-1)
        if not inside.any():
            break
        negatives[inside] = generator.integers(1, n_items + 1, size=int(inside.sum()))
    return negatives


def _loss(
    model: SASRec, batch: NDArray[np.int64], negatives: NDArray[np.int64], device: torch.device
) -> Tensor:
    sequences = torch.as_tensor(batch[:, :-1], device=device)
    positives = torch.as_tensor(batch[:, 1:], device=device)
    negative = torch.as_tensor(negatives, device=device)
    out = model(sequences)  # (B, L, d)
    known = (positives != PAD) & (positives <= model.n_items)  # "other" is never a target
    pos_logits = (out * model.item(positives)).sum(-1)
    neg_logits = (out * model.item(negative)).sum(-1)
    loss = F.binary_cross_entropy_with_logits(
        pos_logits[known], torch.ones_like(pos_logits[known])
    ) + F.binary_cross_entropy_with_logits(neg_logits[known], torch.zeros_like(neg_logits[known]))
    return loss


@torch.no_grad()
def _ranks(
    model: SASRec,
    inputs: NDArray[np.int64],
    targets: NDArray[np.int64],
    batch_size: int = 1024,
    device: torch.device | None = None,
    seen: m.SeenItems | None = None,
) -> NDArray[np.int64]:
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for start in range(0, len(inputs), batch_size):
        chunk = torch.as_tensor(inputs[start : start + batch_size], device=device)
        scores = model.scores(chunk).float().cpu().numpy()
        rows = np.arange(start, min(start + batch_size, len(inputs)))
        part = None if seen is None else seen.take(rows)
        out.append(m.ranks_of_targets(scores, targets[rows], part))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
