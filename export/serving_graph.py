"""The graphs that compute what serving needs: the reference and the exported one.

`ReferenceGraph` is the trained network as it is (the `transformers` BERT encoder and
our heads) plus the serving post-processing: churn probability, expected spend and the
top-K catalogue items after exclusions. It is the truth the parity gate compares with.

`ServingGraph` computes the same outputs from the same weights, arranged for inference
(exact rewrites, no approximation; the parity gate proves the exported file agrees with
`ReferenceGraph` on held-out members before anything is written):

- Embedding tables are folded: the gap and event-type tables become one (gap, type)
  table and the price-bucket and category tables one table over their combinations
  (while a combined table stays under `MAX_FOLDED_ROWS` rows), so each event costs three
  lookups instead of five. BERT's position and token-type embeddings are constants folded
  into the event rows and into the member token's bias.
- The 1/√d attention scale is folded into the query weights and the attention mask is
  built once, not per layer. (Q, K and V stay three products: one fused product plus a
  Split measured slower, since each part is copied out again before its transpose.)
- The last layer computes keys and values for every token but queries, attention output
  and feed-forward only for the two tokens the heads read (the aggregate token and the
  latest event): for the other positions the last layer's output is never used.
- Catalogue scores multiply by a transposed copy of the catalogue rows stored as its own
  constant, so the INT8 quantiser can quantise that product too, and excluded positions
  are set to −inf with one scatter-min (−1 entries scatter +inf, a no-op).

In profiles of a 2-layer, 64-wide model at batch 256 on the 2-core development machine,
this took the ONNX graph from about 65 to about 29 ms and INT8 from 58 to about 23;
BENCHMARKS.md has the `bench model` figures.
"""

from __future__ import annotations

import math
from typing import Final, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.bert.modeling_bert import BertLayer

from memberpulse.models.network import MemberTransformer, latest_output

MAX_FOLDED_ROWS: Final = 65_536  # a folded embedding table larger than this stays split


def _check_top_k(model: MemberTransformer, top_k: int) -> None:
    if not 0 < top_k <= model.vocab.n_catalogue:
        raise ValueError(f"top_k must be in 1..{model.vocab.n_catalogue}, got {top_k}")


def _top_k(scores: Tensor, exclude: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k (ids, scores) of (B, N) `scores` with (B, E) `exclude` positions (−1: none)
    set to −inf first."""
    blocked = torch.where(exclude < 0, math.inf, -math.inf).to(scores.dtype)
    scores = scores.scatter_reduce(1, exclude.clamp(min=0), blocked, "amin", include_self=True)
    top_scores, top_items = torch.topk(scores, k, dim=1)
    return top_items, top_scores


class ReferenceGraph(nn.Module):
    """The network as trained, with the serving post-processing (the parity reference)."""

    def __init__(self, model: MemberTransformer, top_k: int) -> None:
        super().__init__()
        _check_top_k(model, top_k)
        self.model, self.top_k = model, top_k

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
        exclude: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Features + (B, E) excluded catalogue positions → churn, spend, top-K ids/scores."""
        out = self.model(items, types, ages, gaps, prices, categories, mask, aggregates)
        churn = torch.sigmoid(out.churn_logit)
        spend = torch.exp(out.spend_log) * self.model.config.spend_scale
        top_items, top_scores = _top_k(out.item_scores, exclude, self.top_k)
        return churn, spend, top_items, top_scores


class _Folded(nn.Module):
    """One embedding lookup standing for the sum of several tables' rows."""

    table: Tensor

    def __init__(self, tables: list[nn.Embedding]) -> None:
        super().__init__()
        weights = [t.weight.detach() for t in tables]
        total = weights[0]
        for w in weights[1:]:
            total = (total[:, None, :] + w[None, :, :]).reshape(-1, w.shape[1])
        self.register_buffer("table", total.clone())
        self.sizes = [w.shape[0] for w in weights]

    def forward(self, *ids: Tensor) -> Tensor:
        index = ids[0]
        for size, more in zip(self.sizes[1:], ids[1:], strict=True):
            index = index * size + more
        return F.embedding(index, self.table)


def _fold(tables: list[nn.Embedding]) -> nn.ModuleList:
    """`tables` as one folded lookup, or one lookup each if the product is too large."""
    if math.prod(t.num_embeddings for t in tables) <= MAX_FOLDED_ROWS:
        return nn.ModuleList([_Folded(tables)])
    return nn.ModuleList(_Folded([t]) for t in tables)


class _Layer(nn.Module):
    """One BERT layer's weights, rearranged: the attention scale folded into Q."""

    q_weight: Tensor
    q_bias: Tensor

    def __init__(self, layer: BertLayer, heads: int) -> None:
        super().__init__()
        attention = layer.attention.self
        scale = attention.scaling
        q, k, v = attention.query, attention.key, attention.value
        self.heads = heads
        self.register_buffer("q_weight", (q.weight.detach() * scale).clone())
        self.register_buffer("q_bias", (q.bias.detach() * scale).clone())
        self.key, self.value = k, v
        self.attention_output = layer.attention.output
        self.intermediate = layer.intermediate
        self.output = layer.output

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """Every position: (B, T, H), additive mask (B, 1, T, T) → (B, T, H)."""
        q = F.linear(x, self.q_weight, self.q_bias)
        k, v = self.key(x), self.value(x)
        return self._finish(x, self._attend(q, k, v, bias))

    def at(self, x: Tensor, queries: Tensor, bias: Tensor) -> Tensor:
        """Only the (B, S, H) `queries` rows, attending over all of `x`; `bias` (B, 1, S, T)."""
        q = F.linear(queries, self.q_weight, self.q_bias)
        k, v = self.key(x), self.value(x)
        return self._finish(queries, self._attend(q, k, v, bias))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        b, s, hidden = q.shape
        t, h = k.shape[1], self.heads
        q = q.reshape(b, s, h, hidden // h).transpose(1, 2)  # (B, h, S, d)
        k = k.reshape(b, t, h, hidden // h).transpose(1, 2)  # (B, h, T, d)
        v = v.reshape(b, t, h, hidden // h).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)  # (B, h, S, T)
        return (weights @ v).transpose(1, 2).reshape(b, s, hidden)

    def _finish(self, residual: Tensor, attended: Tensor) -> Tensor:
        out = self.attention_output
        x: Tensor = out.LayerNorm(out.dense(attended) + residual)
        y: Tensor = self.output.LayerNorm(self.output.dense(self.intermediate(x)) + x)
        return y


class ServingGraph(nn.Module):
    """The exported graph: `ReferenceGraph`'s outputs, computed for inference (see the
    module docstring). Built from a trained model; shares its weights."""

    event_position: Tensor
    member_position: Tensor
    catalogue: Tensor

    def __init__(self, model: MemberTransformer, top_k: int) -> None:
        super().__init__()
        _check_top_k(model, top_k)
        self.model, self.top_k = model, top_k
        self.causal = model.config.causal
        self.gap_type = _fold([model.gap, model.event_type])
        self.price_category = _fold([model.price, model.category])
        embeddings = model.encoder.embeddings
        length = model.vocab.sequence_length
        position = embeddings.position_embeddings.weight.detach()[: length + 1]
        position = position + embeddings.token_type_embeddings.weight.detach()[0]
        self.register_buffer("event_position", position[:length].clone())  # (L, H)
        self.register_buffer("member_position", position[length].clone())  # (H,)
        self.embedding_norm = embeddings.LayerNorm
        heads = model.encoder.config.num_attention_heads
        layers = [_Layer(cast(BertLayer, layer), heads) for layer in model.encoder.encoder.layer]
        self.layers = nn.ModuleList(layers[:-1])  # every position
        self.last = layers[-1]  # only the positions the heads read
        first = model.vocab.first_item
        self.register_buffer("catalogue", model.item.weight.detach()[first:].T.contiguous())

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
        exclude: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Features + (B, E) excluded catalogue positions → churn, spend, top-K ids/scores."""
        m = self.model
        events = (
            m.item(items)
            + self._lookup(self.gap_type, [gaps, types])
            + self._lookup(self.price_category, [prices, categories])
            + self.event_position
        )  # (B, L, H)
        member = m.aggregate(aggregates) + m.age(ages[:, -1]) + self.member_position  # (B, H)
        x = self.embedding_norm(torch.cat([events, member.unsqueeze(1)], dim=1))  # (B, T, H)
        keys = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, T)
        allowed = keys.unsqueeze(1)  # (B, 1, T)
        if self.causal:
            t = x.shape[1]
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        bias = torch.where(allowed, 0.0, torch.finfo(x.dtype).min).unsqueeze(1)  # (B, 1, T, T)
        for layer in self.layers:
            x = layer(x, bias)
        # What the heads read: the latest event and the member token (the last two).
        read = self.last.at(x, x[:, -2:], bias[:, :, -2:])  # (B, 2, H)
        latest, member_out = latest_output(read, mask), read[:, 1]
        z = m.trunk(torch.cat([member_out, latest], dim=-1))  # = MemberTransformer.member
        churn = torch.sigmoid(m.churn_head(z).squeeze(-1))
        spend = torch.exp(m.spend_head(z).squeeze(-1)) * m.config.spend_scale
        scores = m.item_query(latest) @ self.catalogue + m.item_bias  # (B, N)
        scores = scores + m.transition_scores(items, types, mask)
        scores = m.add_history(scores, items, types, mask)
        top_items, top_scores = _top_k(scores, exclude, self.top_k)
        return churn, spend, top_items, top_scores

    @staticmethod
    def _lookup(folded: nn.ModuleList, ids: list[Tensor]) -> Tensor:
        if len(folded) == 1:
            single: Tensor = folded[0](*ids)
            return single
        total: Tensor = folded[0](ids[0])
        for lookup, column in zip(folded[1:], ids[1:], strict=True):
            total = total + lookup(column)
        return total
