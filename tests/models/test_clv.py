"""BG/NBD and Gamma-Gamma: maximum-likelihood fits recover the parameters of data drawn
from their own processes, predictions are calibrated, summaries count purchase days."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from memberpulse.models.clv import BetaGeoNBD, CustomerBase, GammaGamma, summarise
from memberpulse.models.eventlog import from_table
from memberpulse.models.timeutil import MS_PER_DAY

TRUE = BetaGeoNBD(r=0.25, alpha=4.0, a=0.8, b=2.5)  # CDNOW-like (FHL 2005, table 1)


@pytest.fixture(scope="module")
def customers() -> tuple[np.ndarray, ...]:
    return TRUE.simulate(20_000, 270.0, np.random.default_rng(0), horizon=30.0)


def test_bgnbd_fit_recovers_the_parameters_it_was_simulated_with(
    customers: tuple[np.ndarray, ...],
) -> None:
    x, t_x, age, _ = customers
    fitted = BetaGeoNBD.fit(x, t_x, age)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=0.15), name


def test_bgnbd_no_purchase_probability_is_calibrated_on_simulated_futures(
    customers: tuple[np.ndarray, ...],
) -> None:
    x, t_x, age, later = customers
    predicted = TRUE.p_no_purchase(x, t_x, age, 30.0)
    for group in (x == 0, (x > 0) & (x < 5), x >= 5):  # by purchase frequency
        assert group.sum() > 500
        assert predicted[group].mean() == pytest.approx(1 - later[group].mean(), abs=0.02)


def test_bgnbd_expected_purchases_grow_with_frequency_and_fall_with_recency() -> None:
    x = np.array([1.0, 5.0, 5.0])
    t_x = np.array([200.0, 200.0, 20.0])  # the third bought last long ago
    expected = TRUE.expected_purchases(x, t_x, np.full(3, 270.0), 30.0)
    assert expected[1] > expected[0] > 0
    assert expected[2] < expected[1]
    alive = TRUE.p_alive(x, t_x, np.full(3, 270.0))
    assert alive[2] < alive[1] <= 1.0


def test_gamma_gamma_fit_recovers_its_parameters() -> None:
    rng = np.random.default_rng(1)
    p, q, gamma = 6.0, 4.0, 15.0
    scale = rng.gamma(q, 1.0 / gamma, 8_000)  # ν per customer
    x = rng.integers(1, 12, 8_000).astype(float)
    draws = zip(scale, x, strict=True)
    monetary = np.array([rng.gamma(p, 1.0 / v, int(k)).mean() for v, k in draws])
    fitted = GammaGamma.fit(x, monetary)
    assert fitted.p == pytest.approx(p, rel=0.15)
    assert fitted.q == pytest.approx(q, rel=0.15)
    assert fitted.gamma == pytest.approx(gamma, rel=0.2)
    mean = fitted.expected_value(np.zeros(1), np.zeros(1))[0]  # x = 0: the population mean
    assert mean == pytest.approx(fitted.p * fitted.gamma / (fitted.q - 1))


def test_bgnbd_fit_refuses_impossible_summaries() -> None:
    with pytest.raises(ValueError, match="t_x ≤ T"):
        BetaGeoNBD.fit(np.array([1.0]), np.array([10.0]), np.array([5.0]))


def _log(rows: list[tuple[str, float, str, float | None]]) -> pa.Table:
    return pa.table(
        {
            "member_id": [r[0] for r in rows],
            "ts": [int(r[1] * MS_PER_DAY) for r in rows],
            "type": [r[2] for r in rows],
            "item_id": ["i"] * len(rows),
            "price": [r[3] for r in rows],
        }
    )


def test_summary_counts_purchase_days_not_purchases() -> None:
    log = from_table(
        _log(
            [
                ("a", 10.0, "purchase", 5.0),
                ("a", 10.5, "purchase", 7.0),  # same calendar day: one transaction
                ("a", 20.25, "purchase", 4.0),
                ("a", 30.0, "purchase", 8.0),
                ("a", 50.0, "purchase", 100.0),  # after `at`: unseen
                ("b", 12.0, "click", None),  # never bought
            ]
        )
    )
    a, b = log.members.index("a"), log.members.index("b")
    summary = summarise(log, 40 * MS_PER_DAY, np.array([a, b]))
    assert summary.bought.tolist() == [True, False]
    assert summary.x.tolist() == [2.0, 0.0]  # days 20 and 30 repeat day 10
    assert summary.t_x[0] == pytest.approx(20.0)
    assert summary.age[0] == pytest.approx(30.0)
    assert summary.monetary[0] == pytest.approx(6.0)  # (4 + 8) / 2


def test_customer_base_scores_never_buyers_with_their_training_rate() -> None:
    base = CustomerBase(TRUE, GammaGamma(6.0, 4.0, 15.0), 0.9, 3.0)
    rebuilt = CustomerBase.from_dict(base.to_dict())
    assert rebuilt == base
    log = from_table(_log([("a", 1.0, "purchase", 5.0), ("b", 2.0, "click", None)]))
    summary = summarise(log, 10 * MS_PER_DAY, np.array([0, 1]))
    never = int(np.flatnonzero(~summary.bought)[0])
    assert base.churn(summary, 30.0)[never] == 0.9
    spend = base.spend(summary, 30.0)
    assert spend is not None
    assert spend[never] == 3.0
    assert 0 < base.churn(summary, 30.0)[1 - never] < 1
