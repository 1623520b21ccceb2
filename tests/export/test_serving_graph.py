"""The inference-arranged serving graph computes what the trained network computes.

Random (untrained) weights, so nothing depends on a training run; every arrangement the
serving graph makes (folded tables, fused Q|K|V, last-layer pruning, scatter-min
exclusions) is checked against the reference on padded, empty and full sequences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from memberpulse.export import serving_graph
from memberpulse.export.serving_graph import ReferenceGraph, ServingGraph
from memberpulse.models.config import NetworkConfig
from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.features import AGGREGATES, FIRST_ID, TIME_BUCKETS
from memberpulse.models.network import MemberTransformer, Vocabulary

LENGTH = 12
VOCAB = Vocabulary(
    n_item_ids=FIRST_ID + 40, first_item=FIRST_ID + 8, n_categories=9, n_price_buckets=7,
    sequence_length=LENGTH,
)  # fmt: skip
TOP_K = 5


def _inputs(batch: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)

    def ids(high: int) -> Tensor:
        return torch.randint(1, high, (batch, LENGTH), generator=g, dtype=torch.int32)

    # Left padding of random length: row 0 has no events at all, row 1 a full history.
    lengths = torch.randint(0, LENGTH + 1, (batch,), generator=g)
    lengths[0], lengths[1] = 0, LENGTH
    mask = torch.arange(LENGTH).unsqueeze(0) >= (LENGTH - lengths).unsqueeze(1)
    sizes = (VOCAB.n_item_ids, len(EVENT_TYPES) + 1, TIME_BUCKETS, TIME_BUCKETS,
             VOCAB.n_price_buckets, VOCAB.n_categories)  # fmt: skip
    columns = [ids(size) for size in sizes]
    columns = [torch.where(mask, c, torch.zeros_like(c)) for c in columns]
    aggregates = torch.randn(batch, len(AGGREGATES), generator=g)
    exclude = torch.randint(-1, VOCAB.n_catalogue, (batch, 6), generator=g)
    exclude[0] = -1  # nothing excluded
    exclude[2, :3] = exclude[2, 3]  # the same position excluded three times
    return [*columns, mask, aggregates, exclude]


def _model(layers: int, causal: bool, seed: int) -> MemberTransformer:
    torch.manual_seed(seed)
    config = NetworkConfig(hidden=16, heads=4, ffn=24, layers=layers, causal=causal)
    model = MemberTransformer(config, VOCAB).eval()
    with torch.no_grad():  # padding rows start at zero; make them count too
        for table in (model.item, model.event_type, model.age, model.gap, model.price):
            table.weight.add_(torch.randn_like(table.weight) * 0.1)
        model.repeat.add_(torch.randn_like(model.repeat))  # repeat scores count too
    rng = np.random.default_rng(seed)
    shape = (VOCAB.n_item_ids, config.transitions)
    follow = rng.integers(-1, VOCAB.n_catalogue, shape)  # −1: fewer follow-ups
    model.set_transitions(follow, rng.random(shape).astype(np.float32), weight=0.7)
    return model


@pytest.mark.parametrize(("layers", "causal"), [(1, True), (2, True), (3, False)])
@pytest.mark.parametrize("fold_limit", [serving_graph.MAX_FOLDED_ROWS, 1])
def test_serving_graph_matches_the_network(
    layers: int, causal: bool, fold_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_graph, "MAX_FOLDED_ROWS", fold_limit)
    model = _model(layers, causal, seed=layers)
    inputs = _inputs(batch=33, seed=layers)
    with torch.no_grad():
        churn, spend, items, scores = ReferenceGraph(model, TOP_K)(*inputs)
        s_churn, s_spend, s_items, s_scores = ServingGraph(model, TOP_K)(*inputs)
    torch.testing.assert_close(s_churn, churn, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s_spend, spend, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s_scores, scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(s_items, items)


def test_excluded_positions_never_come_back_and_minus_one_excludes_nothing() -> None:
    model = _model(2, True, seed=5)
    inputs = _inputs(batch=16, seed=5)
    with torch.no_grad():
        items = ServingGraph(model, TOP_K)(*inputs)[2]
        free = ServingGraph(model, TOP_K)(*inputs[:-1], torch.full((16, 2), -1))[2]
        plain = torch.topk(model(*inputs[:-1]).item_scores, TOP_K, dim=1).indices
    exclude = inputs[-1]
    for row, banned in zip(items.tolist(), exclude.tolist(), strict=True):
        assert not set(row) & {b for b in banned if b >= 0}
    assert torch.equal(free, plain)


def test_top_k_outside_the_catalogue_is_refused() -> None:
    model = _model(1, True, seed=0)
    with pytest.raises(ValueError, match="top_k must be in"):
        ServingGraph(model, VOCAB.n_catalogue + 1)


def test_every_tensor_of_the_serving_graph_is_registered() -> None:
    """Folded tables and rearranged weights move with `.to(device)` and are exported as
    constants: each is a buffer or parameter of the module tree."""
    model = _model(2, True, seed=1)
    graph = ServingGraph(model, TOP_K)
    names = {name for name, _ in graph.named_buffers()}
    assert {"gap_type.0.table", "price_category.0.table", "catalogue"} <= names
    assert "last.q_weight" in names
