"""The network's layout: event outputs see only earlier events, the member token sees all."""

from __future__ import annotations

import pytest
import torch

from memberpulse.models.config import NetworkConfig
from memberpulse.models.contract import EVENT_TYPES
from memberpulse.models.features import AGGREGATES, FIRST_ID, TIME_BUCKETS
from memberpulse.models.network import MemberTransformer, Vocabulary

LENGTH = 10
VOCAB = Vocabulary(
    n_item_ids=FIRST_ID + 30, first_item=FIRST_ID, n_categories=5, n_price_buckets=6,
    sequence_length=LENGTH,
)  # fmt: skip


def _inputs(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = (VOCAB.n_item_ids, len(EVENT_TYPES) + 1, TIME_BUCKETS, TIME_BUCKETS,
             VOCAB.n_price_buckets, VOCAB.n_categories)  # fmt: skip
    columns = [torch.randint(1, size, (4, LENGTH), generator=g) for size in sizes]
    mask = torch.ones(4, LENGTH, dtype=torch.bool)
    return [*columns, mask, torch.randn(4, len(AGGREGATES), generator=g)]


@pytest.fixture
def model() -> MemberTransformer:
    torch.manual_seed(0)
    config = NetworkConfig(hidden=16, heads=2, ffn=32, layers=2, dropout=0.0)
    return MemberTransformer(config, VOCAB).eval()


def test_event_outputs_ignore_later_events_ages_and_aggregates(model: MemberTransformer) -> None:
    """What makes the next-item loss at every position honest: output j is a function of
    events 0..j only (not of the cutoff's ages or aggregates, which know what followed)."""
    base = _inputs(1)
    changed = [c.clone() for c in base]
    j = 5
    changed[0][:, j + 1 :] = FIRST_ID + 3  # later items
    changed[2] = torch.randint(1, TIME_BUCKETS, changed[2].shape)  # every age
    changed[7] = changed[7] + 1.0  # the aggregates
    with torch.no_grad():
        before, after = model.hidden(base), model.hidden(changed)
    assert torch.allclose(before[:, : j + 1], after[:, : j + 1], atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])  # the member token sees them


def test_churn_reads_the_aggregates_and_the_latest_age(model: MemberTransformer) -> None:
    base = _inputs(2)
    older = [c.clone() for c in base]
    older[2][:, -1] = (older[2][:, -1] % (TIME_BUCKETS - 1)) + 1  # latest event's age
    with torch.no_grad():
        assert not torch.allclose(model(*base).churn_logit, model(*older).churn_logit)


def test_a_checkpoint_of_the_previous_layout_is_refused(model: MemberTransformer) -> None:
    args = model.bundle_args()
    args.pop("layout")
    with pytest.raises(ValueError, match="layout 2"):
        MemberTransformer.from_bundle_args(args)


def test_repeat_weights_at_every_position_agree_with_the_latest_positions_scores(
    model: MemberTransformer,
) -> None:
    """Training adds repeat scores at every position (`repeat_weights`), serving at the
    latest one (`add_history`): at the latest position they must be the same numbers."""
    with torch.no_grad():
        model.repeat.copy_(torch.randn_like(model.repeat))
    items, types, _, _, _, _, mask, _ = _inputs(3)
    items[:, 2] = items[:, 7]  # a repeated item: its scores add up
    mask[0, :4] = False  # padding contributes nothing
    with torch.no_grad():
        latest = model.add_history(torch.zeros(4, VOCAB.n_catalogue), items, types, mask)
        weights = model.repeat_weights(types)[:, -1]  # (B, L) at the latest position
    first = VOCAB.first_item
    expected = torch.zeros(4, VOCAB.n_catalogue)
    for b in range(4):
        for position in range(LENGTH):
            if mask[b, position] and items[b, position] >= first:
                expected[b, items[b, position] - first] += weights[b, position]
    assert torch.allclose(latest, expected, atol=1e-6)
    assert torch.equal(model.repeat_weights(types)[:, 3, 5], torch.zeros(4))  # l > j: none
