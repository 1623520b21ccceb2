"""The model's reasons: occlusion over aggregate groups, checked on a known scoring rule
and on a trained network (occluding a named reason moves its risk the stated way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from memberpulse.models import explain
from memberpulse.models.bundle import load_bundle, load_heldout
from memberpulse.models.features import AGGREGATES, FeatureBatch


def test_every_aggregate_column_is_in_exactly_one_reason_group() -> None:
    columns = np.concatenate(explain.GROUP_COLUMNS)
    assert sorted(columns.tolist()) == list(range(len(AGGREGATES)))
    assert len(set(explain.CODES)) == len(explain.GROUPS)


def _batch(aggregates: np.ndarray) -> FeatureBatch:
    n, length = aggregates.shape[0], 4
    ids = np.ones((n, length), dtype=np.int32)
    return FeatureBatch(ids, ids, ids, ids, ids, ids, np.ones((n, length), bool), aggregates)


def test_occluded_rows_reset_exactly_one_group_each() -> None:
    rng = np.random.default_rng(0)
    batch = _batch(rng.normal(size=(3, len(AGGREGATES))).astype(np.float32))
    out = explain.occluded(batch)
    assert out.rows == 3 * len(explain.GROUPS)
    for row in range(3):
        for g, columns in enumerate(explain.GROUP_COLUMNS):
            variant = out.aggregates[row * len(explain.GROUPS) + g]
            assert (variant[columns] == 0).all()
            others = np.setdiff1d(np.arange(len(AGGREGATES)), columns)
            assert np.array_equal(variant[others], batch.aggregates[row, others])


def test_reasons_recover_a_known_scoring_rule() -> None:
    """risk = σ(2·days since last seen − 1.5·total purchases): a member long unseen is at
    risk because of it; one who rarely bought, because of that; the order follows."""
    seen = AGGREGATES.index("days_since_last_seen")
    bought = AGGREGATES.index("total_purchases")

    def score(batch: FeatureBatch) -> np.ndarray:
        a = batch.aggregates.astype(np.float64)
        return 1 / (1 + np.exp(-(2.0 * a[:, seen] - 1.5 * a[:, bought])))

    aggregates = np.zeros((3, len(AGGREGATES)), dtype=np.float32)
    aggregates[0, seen] = 2.0  # long unseen
    aggregates[1, bought] = -2.0  # far fewer purchases than typical
    aggregates[2, [seen, bought]] = (0.5, -1.5)  # both; few purchases weighs more
    found = explain.explain(score, _batch(aggregates))
    assert [code for code, _ in found[0].reasons] == ["not_seen_recently"]
    assert [code for code, _ in found[1].reasons] == ["few_orders"]
    assert [code for code, _ in found[2].reasons] == ["few_orders", "not_seen_recently"]
    for explanation in found:
        assert all(effect > 0 for _, effect in explanation.reasons)


def test_a_member_with_nothing_raising_the_risk_still_gets_the_strongest_factor() -> None:
    effects = np.array([[-0.3, -0.01, -0.2, -0.5, -0.4, -0.6, -0.7]])
    (only,) = explain.reasons_of(effects)
    assert only.reasons == ((explain.CODES[1], -0.01),)


def test_occluding_a_trained_models_reason_lowers_its_risk_as_stated(
    models: tuple[Path, Path],
) -> None:
    bundle = load_bundle(models[0])
    features, _, _ = load_heldout(models[0])

    @torch.no_grad()
    def score(batch: FeatureBatch) -> np.ndarray:
        out = bundle.model(*(torch.as_tensor(column) for column in batch))
        return torch.sigmoid(out.churn_logit).double().numpy()

    risk = score(features)
    riskiest = np.argsort(-risk)[:20]
    subset = features.take(riskiest)
    found = explain.explain(score, subset)
    position = {code: g for g, code in enumerate(explain.CODES)}
    for row, explanation in enumerate(found):
        assert explanation.reasons  # never empty
        code, effect = explanation.reasons[0]
        one = subset.take(np.array([row]))
        aggregates = one.aggregates.copy()
        aggregates[0, explain.GROUP_COLUMNS[position[code]]] = 0.0  # a typical member's
        changed = score(one._replace(aggregates=aggregates))[0]
        assert np.isclose(risk[riskiest[row]] - changed, effect, atol=1e-4)
        if effect > 0:  # the reason raised the risk: taking it away lowers it
            assert changed < risk[riskiest[row]]
