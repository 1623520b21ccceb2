"""The member-sequence transformer: recent events + member aggregates → churn, next item, spend.

Per event, the embedding is item + type + gap bucket + price bucket + category; the
aggregate vector, plus the age of the latest event (time since the member was last
seen), becomes one extra token *after* the events. A `transformers` BERT encoder (built
from a config, never downloaded, causal attention) reads the L + 1 tokens, so:

- the output at event j has seen events 0..j only — nothing of the cutoff, of the
  aggregates or of later events — and predicts event j + 1's item: the next-item
  objective runs at every position of the sequence, as SASRec's does, with no leak
  from what the aggregates know about the events after j;
- the member token, last, has seen every event and the aggregates: churn and spend
  read it joined with the latest event's output.

Heads:
- churn: a logit (probability of no purchase within the horizon);
- next item: scores over the real catalogue only, a query from the latest event's
  output dotted with the item embedding table's catalogue rows (tied weights; PAD, UNK
  and hash buckets are never ranked), plus a bias and, optionally, the transition table;
- spend: the log of the expected spend over the horizon, in units of `spend_scale`
  (trained with a Poisson loss, whose minimiser is the mean).

(Layout 3. Layout 2 put the aggregate token first and added the event ages, both as of
the cutoff, to every event: positions before the last then saw what happened after
them, so only the last positions could be trained on next items.)

`forward` has no Python branching on tensor values, so it exports to ONNX as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel

from memberpulse.models.config import NetworkConfig
from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.features import AGGREGATES, FIRST_ID, TIME_BUCKETS, FeatureSpec
from memberpulse.models.transitions import PURCHASE_TYPE_ID


@dataclass(frozen=True)
class Vocabulary:
    """Embedding table sizes, from the feature spec (saved with the checkpoint)."""

    n_item_ids: int
    first_item: int
    n_categories: int
    n_price_buckets: int
    sequence_length: int
    n_aggregates: int = len(AGGREGATES)

    @classmethod
    def of(cls, spec: FeatureSpec) -> Vocabulary:
        """The sizes a spec implies."""
        return cls(
            spec.n_item_ids,
            spec.first_item,
            spec.n_categories,
            spec.n_price_buckets,
            spec.sequence_length,
        )

    @property
    def n_catalogue(self) -> int:
        """Items the next-item head ranks."""
        return self.n_item_ids - self.first_item


class Outputs(NamedTuple):
    """Raw head outputs: churn logit (B,), log expected spend (B,), item scores (B, N)."""

    churn_logit: Tensor
    spend_log: Tensor
    item_scores: Tensor


LAYOUT: Final = 3  # the token layout above; checkpoints of another layout are refused


def latest_output(hidden: Tensor, mask: Tensor) -> Tensor:
    """The latest event's output, (B, L + 1, H) → (B, H); zeros for a member without
    events, whose last position is padding that attended to nothing (implementations
    disagree on what a fully masked row computes)."""
    return torch.where(mask[:, -1:], hidden[:, -2], torch.zeros_like(hidden[:, -2]))


class MemberTransformer(nn.Module):
    """The network; built from (NetworkConfig, Vocabulary) alone."""

    transition_items: Tensor
    transition_log_counts: Tensor
    transition_weight: Tensor

    def __init__(self, config: NetworkConfig, vocab: Vocabulary) -> None:
        super().__init__()
        self.config, self.vocab = config, vocab
        hidden = config.hidden
        self.item = nn.Embedding(vocab.n_item_ids, hidden, padding_idx=0)
        self.event_type = nn.Embedding(len(EVENT_TYPES) + 1, hidden, padding_idx=0)
        self.age = nn.Embedding(TIME_BUCKETS, hidden, padding_idx=0)
        self.gap = nn.Embedding(TIME_BUCKETS, hidden, padding_idx=0)
        self.price = nn.Embedding(vocab.n_price_buckets, hidden, padding_idx=0)
        self.category = nn.Embedding(vocab.n_categories, hidden, padding_idx=0)
        self.aggregate = nn.Sequential(
            nn.Linear(vocab.n_aggregates, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        bert = BertConfig(
            vocab_size=FIRST_ID,  # unused: tokens come in as inputs_embeds
            hidden_size=hidden,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=config.ffn,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
            max_position_embeddings=vocab.sequence_length + 1,
            type_vocab_size=1,
            is_decoder=config.causal,  # a causal mask; no cross-attention is added
        )
        self.encoder = BertModel(bert, add_pooling_layer=False)
        self.trunk = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden),
            nn.Dropout(config.dropout),
        )
        self.churn_head = nn.Linear(hidden, 1)
        # Churn at shorter horizons (shares of the horizon, config.short_horizons): training
        # targets only, never served — when the next purchase comes, not only whether.
        self.short_churn_head = nn.Linear(hidden, len(config.short_horizons))
        self.spend_head = nn.Linear(hidden, 1)
        self.item_query = nn.Linear(hidden, hidden)
        self.item_bias = nn.Parameter(torch.zeros(vocab.n_catalogue))
        # Repeat scores: a learned score for an item the member already touched, by that
        # event's type and its distance from the predicting position (0 = itself).
        self.repeat = nn.Parameter(torch.zeros(len(EVENT_TYPES) + 1, vocab.sequence_length))
        # The item-to-item transition table (models/transitions.py) and its weight; weight
        # 0 (as during training) leaves the network's own scores unchanged.
        shape = (vocab.n_item_ids, config.transitions)
        self.register_buffer("transition_items", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("transition_log_counts", torch.zeros(shape))
        self.register_buffer("transition_weight", torch.zeros(()))

    def forward(
        self,
        items: Tensor,
        types: Tensor,
        ages: Tensor,
        gaps: Tensor,
        prices: Tensor,
        categories: Tensor,
        mask: Tensor,
        aggregates: Tensor,
    ) -> Outputs:
        """(B, L) ids and mask, (B, A) aggregates → `Outputs`."""
        hidden = self.hidden((items, types, ages, gaps, prices, categories, mask, aggregates))
        latest = latest_output(hidden, mask)
        z = self.member(hidden[:, -1], latest)
        scores = self.item_scores(latest) + self.transition_scores(items, types, mask)
        scores = self.add_history(scores, items, types, mask)
        return Outputs(self.churn_head(z).squeeze(-1), self.spend_head(z).squeeze(-1), scores)

    def hidden(self, features: Sequence[Tensor]) -> Tensor:
        """The encoder's output for each event and then the member token: (B, L + 1, H).

        `features`: the eight `FeatureBatch` columns as tensors, in their order.
        """
        items, types, ages, gaps, prices, categories, mask, aggregates = features
        if items.dim() != 2 or items.shape[1] != self.vocab.sequence_length:
            raise ValueError(
                f"expected (B, {self.vocab.sequence_length}) item ids, got {tuple(items.shape)}"
            )
        events = (
            self.item(items)
            + self.event_type(types)
            + self.gap(gaps)
            + self.price(prices)
            + self.category(categories)
        )  # (B, L, H)
        member = self.aggregate(aggregates) + self.age(ages[:, -1])  # (B, H)
        tokens = torch.cat([events, member.unsqueeze(1)], dim=1)  # (B, L + 1, H)
        attend = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1).to(torch.long)
        output: Tensor = self.encoder(inputs_embeds=tokens, attention_mask=attend).last_hidden_state
        return output

    def member(self, member_token: Tensor, latest: Tensor) -> Tensor:
        """The member representation: the member token's output joined with the latest
        event's, (B, H) each → (B, H)."""
        joined: Tensor = self.trunk(torch.cat([member_token, latest], dim=-1))
        return joined

    def item_scores(self, events: Tensor) -> Tensor:
        """Scores over the real catalogue from event outputs, (…, H) → (…, N), tied to the
        item embeddings."""
        scores: Tensor = self.item_query(events) @ self.catalogue().T + self.item_bias
        return scores

    def catalogue(self) -> Tensor:
        """The catalogue rows of the item embedding table: (N, H)."""
        return self.item.weight[self.vocab.first_item :]

    def add_history(self, scores: Tensor, items: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(B, N) `scores` plus, at the latest position, the repeat score of every
        catalogue item the member's sequence holds (summed over its occurrences)."""
        length = items.shape[1]
        distance = torch.arange(length - 1, -1, -1, device=items.device)  # latest: 0
        bonus = self.repeat[types.long(), distance.unsqueeze(0).expand_as(items)]  # (B, L)
        first = self.vocab.first_item
        known = mask & (items >= first)
        index = torch.where(known, items.long() - first, 0)
        weights = torch.where(known, bonus, torch.zeros_like(bonus))
        return scores.scatter_add(1, index, weights.to(scores.dtype))

    def repeat_weights(self, types: Tensor) -> Tensor:
        """(B, J, L): the repeat score event l adds to its item at position j (0 unless
        l ≤ j) — the every-position form of `add_history`, for training. Built from an
        embedding lookup and a one-hot product, whose backward passes are deterministic
        on CPU (indexing's and gather's accumulate in a thread-dependent order)."""
        length = types.shape[1]
        steps = torch.arange(length, device=types.device)
        distance = steps.unsqueeze(1) - steps.unsqueeze(0)  # (J, L): j − l
        per_event = F.embedding(types.long(), self.repeat)  # (B, L, distance)
        onehot = F.one_hot(distance.clamp(min=0), length).to(per_event.dtype)  # (J, L, D)
        onehot = onehot * (distance >= 0).unsqueeze(-1).to(per_event.dtype)
        return torch.einsum("bld,jld->bjl", per_event, onehot)

    def transition_scores(self, items: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """(B, N): the transition table's row of each member's latest purchase in the
        sequence, times `transition_weight` (zeros for a member without one)."""
        bought = (types == PURCHASE_TYPE_ID) & mask
        positions = torch.arange(bought.shape[1], device=items.device)
        latest, at = torch.where(bought, positions, -1).max(dim=1)  # (B,)
        last = torch.where(latest >= 0, items.gather(1, at.unsqueeze(1)).squeeze(1), 0)
        follow = self.transition_items[last.long()]  # (B, M)
        weights = self.transition_log_counts[last.long()] * self.transition_weight
        zeros = torch.zeros(items.shape[0], self.vocab.n_catalogue, device=items.device)
        return zeros.scatter_add(1, follow, weights)

    @torch.no_grad()
    def set_transitions(
        self, items: NDArray[np.int64], log_counts: NDArray[np.float32], weight: float
    ) -> None:
        """Install a transition table (−1 = no item) and its weight."""
        if items.shape != tuple(self.transition_items.shape):
            raise ValueError(
                f"expected a {tuple(self.transition_items.shape)} table, got {items.shape}"
            )
        self.transition_items.copy_(torch.as_tensor(np.maximum(items, 0)))
        self.transition_log_counts.copy_(torch.as_tensor(np.where(items >= 0, log_counts, 0.0)))
        self.transition_weight.fill_(weight)

    @torch.no_grad()
    def init_item_prior(self, counts: Tensor) -> None:
        """Start the item bias at log-popularity (centred): ranking begins at the popularity
        baseline instead of at random, and the network learns what differs from it."""
        if counts.shape != self.item_bias.shape:
            raise ValueError(
                f"expected {tuple(self.item_bias.shape)} counts, got {tuple(counts.shape)}"
            )
        prior = torch.log1p(counts.to(self.item_bias.dtype))
        self.item_bias.copy_(prior - prior.mean())

    def parameter_count(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def bundle_args(self) -> dict[str, object]:
        """What a checkpoint stores to rebuild this network."""
        return {
            "network": asdict(self.config),
            "vocabulary": asdict(self.vocab),
            "layout": LAYOUT,
        }

    @classmethod
    def from_bundle_args(cls, args: dict[str, Any]) -> MemberTransformer:
        """Rebuild from `bundle_args()`; refuses a checkpoint of another token layout,
        whose weights would load but mean something else."""
        layout = args.get("layout", 2)
        if layout != LAYOUT:
            raise ValueError(
                f"the checkpoint has network layout {layout}, this version reads layout "
                f"{LAYOUT}: retrain the model with this version"
            )
        return cls(NetworkConfig(**args["network"]), Vocabulary(**args["vocabulary"]))
