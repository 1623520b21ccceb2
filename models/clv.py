"""Customer-base baselines: BG/NBD for churn and purchase counts, Gamma-Gamma for spend.

The textbook "buy till you die" models a retention analyst fits on an order log:

- **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive, a customer buys as a Poisson process with rate λ ~ Gamma(r, α); after every
  purchase they drop out with probability p ~ Beta(a, b). From a customer's repeat
  purchases x, the time of the last one t_x and their age T (days since the first
  purchase) it gives P(alive), the expected purchases in the next t days and, used here
  as the churn score, the probability of no purchase in the next H days:
  1 − P(alive) · (1 − ((α + T) / (α + T + H))^(r + x)) — given alive, λ's posterior is
  Gamma(r + x, α + T) and a customer cannot drop out without buying.
- **Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves";
  Colombo & Jiang 1999): the value of each transaction is Gamma(p, ν) with
  ν ~ Gamma(q, γ); the expected value of a customer's next transactions is
  p (γ + m x) / (p x + q − 1) for x repeat transactions of mean value m. Spend over H =
  expected purchases × expected value.

Transactions are purchase *days* (several purchases on one calendar day are one
transaction), the convention of the `lifetimes` package. Members who never bought get
the churn rate and mean spend that members without a purchase had in the training
samples: these models start at the first purchase and say nothing about them.

Both are fitted by maximum likelihood (L-BFGS on log-parameters, scipy); tests recover
known parameters from data simulated by the models' own processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from memberpulse.models.contract import EVENT_TYPES, PURCHASE
from memberpulse.models.eventlog import EventLog
from memberpulse.models.timeutil import MS_PER_DAY

PURCHASE_CODE: Final = EVENT_TYPES.index(PURCHASE)
MAX_ITER: Final = 500
START: Final = (1.0, 1.0, 1.0, 1.0)  # every parameter starts at 1 (log 0), as in lifetimes
#: Parameters stay in [e^-b, e^b]: on a small log whose members all drop out alike, the
#: likelihood keeps rising as a, b → ∞ with a/(a+b) fixed, and Beta functions of ~1e140
#: overflow to nan. e^14 ≈ 1.2e6 is far beyond any fitted value in the literature.
LOG_PARAM_BOUND: Final = 14.0


class Summary(NamedTuple):
    """Per member, as of a time: repeat transactions, timing (days) and values."""

    x: NDArray[np.float64]  # repeat transactions (purchase days after the first)
    t_x: NDArray[np.float64]  # days from the first to the last transaction
    age: NDArray[np.float64]  # T: days from the first transaction to `at`
    monetary: NDArray[np.float64]  # mean value of the repeat transactions (0 when x = 0)
    bought: NDArray[np.bool_]  # any purchase before `at` (else the other fields are 0)


def summarise(log: EventLog, at: int, members: NDArray[np.int64]) -> Summary:
    """Transactions of `members` (log indexes) before `at`, aggregated by calendar day."""
    n = len(members)
    owner = np.repeat(np.arange(len(log.members)), np.diff(log.offsets))
    rows = np.flatnonzero((log.types == PURCHASE_CODE) & (log.ts < at))
    position = np.full(len(log.members), -1, dtype=np.int64)
    position[members] = np.arange(n)
    rows = rows[position[owner[rows]] >= 0]
    who = position[owner[rows]]
    day = log.ts[rows] // MS_PER_DAY
    value = np.nan_to_num(log.prices[rows]) * log.quantities[rows]
    # One transaction per (member, day): its time is the day's first purchase.
    key = who * (int(day.max(initial=0)) + 1) + day
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    t_member = who[first]
    t_ts = log.ts[rows][first].astype(np.float64)
    t_value = np.bincount(inverse, weights=value, minlength=len(unique))
    count = np.bincount(t_member, minlength=n).astype(np.float64)
    bought = count > 0
    start = np.full(n, np.inf)
    np.minimum.at(start, t_member, t_ts)
    last = np.full(n, -np.inf)
    np.maximum.at(last, t_member, t_ts)
    is_first = t_ts == start[t_member]
    repeat_value = np.bincount(t_member[~is_first], weights=t_value[~is_first], minlength=n)
    x = np.where(bought, count - 1, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(x > 0, repeat_value / np.maximum(x, 1), 0.0)
        t_x = np.where(bought, (last - start) / MS_PER_DAY, 0.0)
        age = np.where(bought, (at - start) / MS_PER_DAY, 0.0)
    return Summary(x, t_x, age, monetary, bought)


@dataclass(frozen=True)
class BetaGeoNBD:
    """Fitted BG/NBD parameters (time in days)."""

    r: float
    alpha: float
    a: float
    b: float

    @classmethod
    def fit(
        cls, x: NDArray[np.float64], t_x: NDArray[np.float64], age: NDArray[np.float64]
    ) -> BetaGeoNBD:
        """Maximum likelihood on (x, t_x, T) of customers with at least one purchase."""
        x, t_x, age = (np.asarray(v, dtype=np.float64) for v in (x, t_x, age))
        if not len(x) or (x < 0).any() or (t_x > age + 1e-9).any() or (age <= 0).any():
            raise ValueError(
                "BG/NBD needs customers with x ≥ 0 repeat purchases and 0 ≤ t_x ≤ T, T > 0"
            )

        def loss(log_params: NDArray[np.float64]) -> float:
            return -float(np.mean(_log_likelihood(np.exp(log_params), x, t_x, age)))

        bounds = [(-LOG_PARAM_BOUND, LOG_PARAM_BOUND)] * len(START)
        result = optimize.minimize(
            loss, np.log(START), method="L-BFGS-B", bounds=bounds, options={"maxiter": MAX_ITER}
        )
        if not np.isfinite(result.fun):
            raise ValueError(f"BG/NBD fit did not converge: {result.message}")
        r, alpha, a, b = (float(v) for v in np.exp(result.x))
        return cls(r, alpha, a, b)

    def p_alive(
        self, x: NDArray[np.float64], t_x: NDArray[np.float64], age: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """P(still a customer at T | x, t_x, T)."""
        return 1.0 / (1.0 + self._death_odds(x, t_x, age))

    def p_no_purchase(
        self,
        x: NDArray[np.float64],
        t_x: NDArray[np.float64],
        age: NDArray[np.float64],
        horizon: float,
    ) -> NDArray[np.float64]:
        """P(no purchase in (T, T + horizon] | x, t_x, T): the churn score."""
        quiet_if_alive = self._quiet_if_alive(x, age, horizon)
        churn: NDArray[np.float64] = 1.0 - self.p_alive(x, t_x, age) * (1.0 - quiet_if_alive)
        return churn

    def expected_purchases(
        self,
        x: NDArray[np.float64],
        t_x: NDArray[np.float64],
        age: NDArray[np.float64],
        horizon: float,
    ) -> NDArray[np.float64]:
        """E[transactions in (T, T + horizon] | x, t_x, T] (FHL 2005, eq. 10)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = horizon / (alpha + age + horizon)
        ratio = self._quiet_if_alive(x, age, horizon)
        hyper = special.hyp2f1(r + x, b + x, a + b + x - 1.0, z)
        numerator = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ratio * hyper)
        return np.asarray(numerator / (1.0 + self._death_odds(x, t_x, age)), dtype=np.float64)

    def _quiet_if_alive(
        self, x: NDArray[np.float64], age: NDArray[np.float64], horizon: float
    ) -> NDArray[np.float64]:
        """E[exp(−λ·horizon)] under λ's posterior Gamma(r + x, α + T): P(no purchase in
        the horizon | alive at T)."""
        log_ratio = np.log(self.alpha + age) - np.log(self.alpha + age + horizon)
        quiet: NDArray[np.float64] = np.exp((self.r + x) * log_ratio)
        return quiet

    def _death_odds(
        self, x: NDArray[np.float64], t_x: NDArray[np.float64], age: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """δ(x > 0) · a / (b + x − 1) · ((α + T) / (α + t_x))^(r + x)."""
        x = np.asarray(x, dtype=np.float64)
        log_odds = (
            np.log(self.a)
            - np.log(np.maximum(self.b + x - 1.0, 1e-300))
            + (self.r + x) * (np.log(self.alpha + age) - np.log(self.alpha + t_x))
        )
        return np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)

    def simulate(
        self, n: int, age: float, rng: np.random.Generator, horizon: float = 0.0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """(x, t_x, T, bought in (T, T + horizon]) of `n` customers observed for `age` days
        after their first purchase, drawn from the BG/NBD process itself (what the
        parameter-recovery and calibration tests fit)."""
        rate = rng.gamma(self.r, 1.0 / self.alpha, n)
        drop = rng.beta(self.a, self.b, n)
        x, t_x = np.zeros(n), np.zeros(n)
        later = np.zeros(n, dtype=bool)
        for i in range(n):
            now, count = 0.0, 0
            while True:
                now += rng.exponential(1.0 / rate[i])
                if now > age:
                    later[i] = now <= age + horizon
                    break
                count += 1
                t_x[i] = now
                if rng.random() < drop[i]:
                    break
            x[i] = count
        return x, t_x, np.full(n, age), later

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly parameters."""
        return asdict(self)


def _log_likelihood(
    params: NDArray[np.float64],
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    age: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Per-customer BG/NBD log-likelihood (FHL 2005, eq. 6), evaluated in logs."""
    r, alpha, a, b = params
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    base = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + age)
    repeat = x > 0
    dropped = np.where(
        repeat,
        special.betaln(a + 1.0, np.maximum(b + x - 1.0, 1e-12))
        - special.betaln(a, b)
        - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return np.asarray(common + np.logaddexp(base, dropped), dtype=np.float64)


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma spend parameters."""

    p: float
    q: float
    gamma: float

    @classmethod
    def fit(cls, x: NDArray[np.float64], monetary: NDArray[np.float64]) -> GammaGamma:
        """Maximum likelihood on customers with x ≥ 1 repeat transactions of mean value m > 0."""
        x, monetary = np.asarray(x, dtype=np.float64), np.asarray(monetary, dtype=np.float64)
        keep = (x > 0) & (monetary > 0)
        if keep.sum() < 2:
            raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases")
        x, monetary = x[keep], monetary[keep]

        def loss(log_params: NDArray[np.float64]) -> float:
            p, q, gamma = np.exp(log_params)
            px = p * x
            ll = (
                special.gammaln(px + q)
                - special.gammaln(px)
                - special.gammaln(q)
                + q * np.log(gamma)
                + (px - 1.0) * np.log(monetary)
                + px * np.log(x)
                - (px + q) * np.log(gamma + monetary * x)
            )
            return -float(np.mean(ll))

        start = np.log([1.0, 1.0, float(np.mean(monetary))])
        bounds = [(s - LOG_PARAM_BOUND, s + LOG_PARAM_BOUND) for s in start.tolist()]
        result = optimize.minimize(
            loss, start, method="L-BFGS-B", bounds=bounds, options={"maxiter": MAX_ITER}
        )
        if not np.isfinite(result.fun):
            raise ValueError(f"Gamma-Gamma fit did not converge: {result.message}")
        p, q, gamma = (float(v) for v in np.exp(result.x))
        return cls(p, q, gamma)

    def expected_value(
        self, x: NDArray[np.float64], monetary: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """E[value of a transaction | x, m]; the population mean p γ / (q − 1) when x = 0."""
        return np.asarray(
            self.p * (self.gamma + monetary * x) / (self.p * x + self.q - 1.0), dtype=np.float64
        )

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly parameters."""
        return asdict(self)


@dataclass(frozen=True)
class CustomerBase:
    """BG/NBD + Gamma-Gamma as the churn and spend baselines, with the fallbacks for
    members who never bought."""

    bgnbd: BetaGeoNBD
    gamma_gamma: GammaGamma | None
    no_purchase_churn: float  # churn rate of training members without a purchase
    no_purchase_spend: float  # their mean spend over the horizon

    @classmethod
    def fit(
        cls,
        log: EventLog,
        at: int,
        members: NDArray[np.int64],
        no_purchase_churn: float,
        no_purchase_spend: float,
    ) -> CustomerBase:
        """Fit on the transactions of `members` before `at`."""
        summary = summarise(log, at, members)
        keep = summary.bought & (summary.age > 0)
        if not keep.any():
            raise ValueError("no member bought anything before the cutoff: BG/NBD cannot be fit")
        bgnbd = BetaGeoNBD.fit(summary.x[keep], summary.t_x[keep], summary.age[keep])
        try:
            gg: GammaGamma | None = GammaGamma.fit(summary.x[keep], summary.monetary[keep])
        except ValueError:
            gg = None  # too few repeat buyers: the spend baseline is left out
        return cls(bgnbd, gg, no_purchase_churn, no_purchase_spend)

    def churn(self, summary: Summary, horizon_days: float) -> NDArray[np.float64]:
        """P(no purchase within the horizon) per member."""
        age = np.maximum(summary.age, 1e-9)
        p = self.bgnbd.p_no_purchase(summary.x, summary.t_x, age, horizon_days)
        return np.where(summary.bought, p, self.no_purchase_churn)

    def spend(self, summary: Summary, horizon_days: float) -> NDArray[np.float64] | None:
        """Expected spend over the horizon per member (None without a Gamma-Gamma fit)."""
        if self.gamma_gamma is None:
            return None
        age = np.maximum(summary.age, 1e-9)
        count = self.bgnbd.expected_purchases(summary.x, summary.t_x, age, horizon_days)
        value = self.gamma_gamma.expected_value(summary.x, summary.monetary)
        return np.where(summary.bought, count * value, self.no_purchase_spend)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (what `baselines.json` stores)."""
        return {
            "bgnbd": self.bgnbd.to_dict(),
            "gamma_gamma": None if self.gamma_gamma is None else self.gamma_gamma.to_dict(),
            "no_purchase_churn": self.no_purchase_churn,
            "no_purchase_spend": self.no_purchase_spend,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerBase:
        """Rebuild from `to_dict()`."""
        gg = data.get("gamma_gamma")
        return cls(
            BetaGeoNBD(**data["bgnbd"]),
            None if gg is None else GammaGamma(**gg),
            float(data["no_purchase_churn"]),
            float(data["no_purchase_spend"]),
        )
