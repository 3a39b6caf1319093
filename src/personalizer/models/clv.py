"""Customer lifetime value: BG/NBD for purchase counts and Gamma-Gamma for spend per purchase.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way", Marketing Science 24(2)):
while alive, a customer buys at Poisson rate λ ~ Gamma(r, α); after each purchase they drop out
for good with probability p ~ Beta(a, b). Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV",
JMR 42(4); Fader & Hardie 2013 note): the value of a purchase is Gamma(p, ν), ν ~ Gamma(q, γ) across
customers; γ is called `v` here, as in lifetimes. Both are fitted by maximum likelihood on the RFM
summary of `personalizer.features.rfm`: `frequency` (repeat purchases), `recency` and `T` in one time
unit, and `monetary_value` (mean value of the repeat purchases).

Inputs are array-likes of one value per customer; outputs are numpy arrays of the broadcast shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

logger = logging.getLogger(__name__)

ArrayLike = npt.ArrayLike


class _MaximumLikelihood:
    """Shared estimator machinery: positive parameters fitted on the log scale, JSON persistence."""

    param_names: ClassVar[tuple[str, ...]]

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (as stored by `__init__`)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def _maximise(self, log_likelihood: Callable[[np.ndarray], np.ndarray], n: int) -> None:
        """Maximise the mean log-likelihood (minus an L2 penalty on the parameters)."""
        if not np.isfinite(self.penalizer) or self.penalizer < 0:
            raise ValueError(f"penalizer must be ≥ 0; got penalizer={self.penalizer!r}")

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            value = -np.mean(log_likelihood(params)) + self.penalizer * np.sum(params**2)
            return float(value) if np.isfinite(value) else np.inf

        # Nelder-Mead finds the basin robustly from the neutral start; BFGS with central-difference
        # gradients then polishes it to the 4th significant digit the papers publish.
        start = np.zeros(len(self.param_names))
        coarse = minimize(objective, start, method="Nelder-Mead", options={"maxiter": 4000})
        fine = minimize(objective, coarse.x, method="BFGS", jac="3-point", options={"gtol": 1e-8})
        best = fine if fine.fun <= coarse.fun else coarse
        if not np.isfinite(best.fun):
            raise RuntimeError(f"{type(self).__name__}: the likelihood could not be maximised")
        if not (coarse.success or fine.success):
            logger.warning("%s: optimiser stopped early: %s", type(self).__name__, fine.message)
        params = np.exp(best.x)
        self.params_ = dict(zip(self.param_names, params.tolist(), strict=True))
        self.log_likelihood_ = float(np.sum(log_likelihood(params)))
        self.n_customers_ = n
        logger.info(
            "%s fitted on %d customers: %s, log-likelihood %.1f",
            type(self).__name__,
            n,
            ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items()),
            self.log_likelihood_,
        )

    def _learned(self) -> tuple[float, ...]:
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit first")
        return tuple(self.params_[k] for k in self.param_names)

    def save(self, path: Path | str) -> None:
        """Write parameters and learned state to the JSON file `path` (no pickles)."""
        self._learned()
        doc = {
            "model": type(self).__name__,
            "params": self.get_params(),
            "state": {k: v for k, v in vars(self).items() if k.endswith("_")},
        }
        Path(path).write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a model written by `save`."""
        doc = json.loads(Path(path).read_text())
        if doc.get("model") != cls.__name__:
            raise ValueError(f"{path}: holds a {doc.get('model')!r}, not a {cls.__name__}")
        obj = cls(**doc["params"])
        for key, value in doc["state"].items():
            setattr(obj, key, value)
        return obj


class BetaGeoModel(_MaximumLikelihood):
    """BG/NBD: how many purchases a customer will make, and whether they are still a customer.

    Args:
        penalizer: L2 penalty on the parameters, added to the mean negative log-likelihood (0 is
            plain maximum likelihood; small values such as 0.001 steady fits on little data).

    Attributes:
        params_: the fitted `r`, `alpha`, `a`, `b`.
        log_likelihood_: total log-likelihood of the fit (without the penalty).
        n_customers_: customers fitted on.
    """

    param_names = ("r", "alpha", "a", "b")

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Self:
        """Fit on an RFM summary (all three in the same time unit)."""
        x, t_x, t_obs = _check_rfm(frequency, recency, T)
        x, t_x, t_obs = x.ravel(), t_x.ravel(), t_obs.ravel()
        if x.size == 0:
            raise ValueError("frequency: no customers to fit on")
        self._maximise(lambda params: _bgnbd_log_likelihood(params, x, t_x, t_obs), x.size)
        return self

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """P(the customer has not dropped out by `T`), FHL 2005 eq. 13."""
        r, alpha, a, b = self._learned()
        x, t_x, t_obs = _check_rfm(frequency, recency, T)
        return _probability_alive(r, alpha, a, b, x, t_x, t_obs)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """Expected purchases in the next `t` after `T`, given the history (FHL 2005 eq. 10)."""
        r, alpha, a, b = self._learned()
        t = _check_nonnegative("t", t)
        x, t_x, t_obs = _check_rfm(frequency, recency, T)
        alive = _probability_alive(r, alpha, a, b, x, t_x, t_obs)
        return alive * _purchases_while_alive(r, alpha, a, b, t, x, t_obs)

    def expected_purchases_unconditional(self, t: ArrayLike) -> np.ndarray:
        """Expected repeat purchases in `t` after a random new customer's first (FHL 2005 eq. 9)."""
        r, alpha, a, b = self._learned()
        t = _check_nonnegative("t", t)
        return _purchases_while_alive(r, alpha, a, b, t, np.zeros_like(t), np.zeros_like(t))

    def expected_next_order_in(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, quantile: float = 0.5
    ) -> np.ndarray:
        """Time after `T` by which the next purchase has happened with probability `quantile`.

        The median wait by default. An active customer always buys again (dropout only follows
        a purchase), after an exponential wait whose rate has the posterior Gamma(r + x, α + T), so
        P(next purchase within t) = P(alive) · (1 − ((α + T) / (α + T + t))^(r + x)). It never
        exceeds P(alive): the answer is `inf` for customers with P(alive) ≤ `quantile`.
        """
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1); got quantile={quantile!r}")
        r, alpha, a, b = self._learned()
        x, t_x, t_obs = _check_rfm(frequency, recency, T)
        alive = _probability_alive(r, alpha, a, b, x, t_x, t_obs)
        # 1 - quantile / alive is in (0, 1) exactly where the quantile is reached.
        with np.errstate(divide="ignore", invalid="ignore"):
            survive = 1.0 - quantile / alive
            wait = (alpha + t_obs) * np.expm1(-np.log(survive) / (r + x))
        return np.where(alive > quantile, wait, np.inf)


class GammaGammaModel(_MaximumLikelihood):
    """Gamma-Gamma: a customer's expected value per purchase, from their repeat purchases.

    Assumes spend per purchase is independent of purchase frequency; check the correlation of
    `frequency` and `monetary_value` among repeat customers before relying on it.

    Args:
        penalizer: L2 penalty on the parameters, as in `BetaGeoModel`.

    Attributes:
        params_: the fitted `p`, `q`, `v` (Fader & Hardie's γ).
        log_likelihood_: total log-likelihood of the fit (without the penalty).
        n_customers_: repeat customers fitted on.
    """

    param_names = ("p", "q", "v")

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> Self:
        """Fit on the customers with at least one repeat purchase (the others carry no spend)."""
        x, m = _check_spend(frequency, monetary_value)
        repeat = x > 0
        x, m = x[repeat], m[repeat]
        if x.size == 0:
            raise ValueError("frequency: no customer with a repeat purchase to fit on")
        self._maximise(lambda params: _gamma_gamma_log_likelihood(params, x, m), x.size)
        return self

    def conditional_expected_value(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> np.ndarray:
        """Expected value of a customer's future purchases: a weighted mean of their own mean and the
        population's, p·(v + x·m) / (p·x + q − 1). Customers without repeat purchases get the
        population mean p·v / (q − 1), `inf` when q ≤ 1."""
        p, q, v = self._learned()
        x, m = _check_spend(frequency, monetary_value)
        m = np.where(x > 0, m, 0.0)
        denominator = p * x + q - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            value = p * (v + x * m) / denominator
        return np.where(denominator > 0, value, np.inf)

    def customer_lifetime_value(
        self,
        bgnbd: BetaGeoModel,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        monetary_value: ArrayLike,
        *,
        horizon: float,
        discount_rate: float = 0.0,
        step: float = 1.0,
    ) -> np.ndarray:
        """Discounted expected value of the purchases in the next `horizon` after `T`.

        The horizon is cut into periods of length `step`; the purchases expected in period k are
        valued at the conditional expected value and discounted by (1 + discount_rate)^k.

        Args:
            bgnbd: a fitted BG/NBD model on the same time unit.
            frequency, recency, T, monetary_value: the RFM summary.
            horizon: how far ahead, in the unit of `T` (e.g. 52 for a year in weeks).
            discount_rate: discount rate per `step` (e.g. 0.01 a month with monthly steps).
            step: length of a discounting period in the unit of `T`.
        """
        if not (np.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be > 0; got horizon={horizon!r}")
        if not (np.isfinite(step) and step > 0):
            raise ValueError(f"step must be > 0; got step={step!r}")
        if not (np.isfinite(discount_rate) and discount_rate >= 0):
            raise ValueError(f"discount_rate must be ≥ 0; got discount_rate={discount_rate!r}")
        value = self.conditional_expected_value(frequency, monetary_value)
        ends = np.minimum(np.arange(1, int(np.ceil(horizon / step - 1e-9)) + 1) * step, horizon)
        total = np.zeros_like(value, dtype=float)
        before = np.zeros_like(total)
        for k, end in enumerate(ends, start=1):
            cumulative = bgnbd.expected_purchases(end, frequency, recency, T)
            total = total + (cumulative - before) / (1.0 + discount_rate) ** k
            before = cumulative
        return total * value


def _bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, t_obs: np.ndarray
) -> np.ndarray:
    """Log-likelihood of each customer's (x, t_x, T), FHL 2005 eq. 6, in log space throughout."""
    r, alpha, a, b = params
    shared = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    still_alive = -(r + x) * np.log(alpha + t_obs)
    # Dropped out right after the last purchase; B(a+1, b+x-1) / B(a, b+x) = a / (b+x-1).
    dropped = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return shared + np.where(x > 0, np.logaddexp(still_alive, dropped), still_alive)


def _probability_alive(
    r: float,
    alpha: float,
    a: float,
    b: float,
    x: np.ndarray,
    t_x: np.ndarray,
    t_obs: np.ndarray,
) -> np.ndarray:
    log_odds_dead = (
        np.log(a)
        - np.log(b + np.maximum(x, 1) - 1)
        + (r + x) * (np.log(alpha + t_obs) - np.log(alpha + t_x))
    )
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def _purchases_while_alive(
    r: float, alpha: float, a: float, b: float, t: np.ndarray, x: np.ndarray, t_obs: np.ndarray
) -> np.ndarray:
    """Expected purchases in the next t of a customer alive at T (FHL 2005 eq. 10 without the
    P(alive) factor; with x = T = 0 it is the unconditional eq. 9).

    The published form (a+b+x-1)/(a-1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; z)]
    is evaluated after Euler's transformation, ₂F₁(A, B; C; z) = (1−z)^(C−A−B) ₂F₁(C−A, C−B; C; z),
    which turns it into (1−z)^(a−1) ₂F₁(a+b−1−r, a−1; a+b+x−1; z): small upper parameters, no
    huge powers, fast convergence however large the frequency.
    """
    if abs(a - 1.0) < 1e-7:  # removable singularity at a = 1
        a = 1.0 + 1e-7
    z = t / (alpha + t_obs + t)
    term = (1.0 - z) ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
    return (a + b + x - 1.0) / (a - 1.0) * (1.0 - term)


def _gamma_gamma_log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Log-density of each repeat customer's mean spend m over x purchases (Fader & Hardie 2013)."""
    p, q, v = params
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(x * m + v)
    )


def _as_float(name: str, values: ArrayLike) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: not numeric: {values!r}") from err
    _fail_where(name, out, ~np.isfinite(out), "must be finite")
    return out


def _fail_where(name: str, values: np.ndarray, bad: np.ndarray, rule: str) -> None:
    """Raise a ValueError naming the field, the rule and the first offending value."""
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0])
        value = float(np.atleast_1d(values)[where])
        at = f" at position {where[0] if len(where) == 1 else where}" if np.ndim(bad) else ""
        raise ValueError(f"{name} {rule}; got {name}={value!r}{at}")


def _check_nonnegative(name: str, values: ArrayLike) -> np.ndarray:
    out = _as_float(name, values)
    _fail_where(name, out, out < 0, "must be ≥ 0")
    return out


def _check_frequency(frequency: ArrayLike) -> np.ndarray:
    x = _check_nonnegative("frequency", frequency)
    _fail_where("frequency", x, x != np.round(x), "must be a whole number of repeat purchases")
    return x


def _check_rfm(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float arrays of a common shape."""
    x = _check_frequency(frequency)
    t_x = _check_nonnegative("recency", recency)
    t_obs = _check_nonnegative("T", T)
    try:
        x, t_x, t_obs = np.broadcast_arrays(x, t_x, t_obs)
    except ValueError as err:
        raise ValueError(
            f"frequency, recency and T differ in shape: {x.shape}, {t_x.shape}, {t_obs.shape}"
        ) from err
    _fail_where("recency", t_x, t_x > t_obs, "must be ≤ T")
    _fail_where("recency", t_x, (x == 0) & (t_x > 0), "must be 0 when frequency is 0")
    return x, t_x, t_obs


def _check_spend(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = _check_frequency(frequency)
    m = _as_float("monetary_value", monetary_value)
    try:
        x, m = np.broadcast_arrays(x, m)
    except ValueError as err:
        raise ValueError(
            f"frequency and monetary_value differ in shape: {x.shape}, {m.shape}"
        ) from err
    _fail_where(
        "monetary_value", m, (x > 0) & (m <= 0), "must be > 0 for customers with repeat purchases"
    )
    return x, m
