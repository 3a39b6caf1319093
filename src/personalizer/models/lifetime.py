"""BG/NBD and Gamma-Gamma fitted for any shop: a time unit chosen from the history, and clear
fallbacks where a shop gives the models nothing to learn from.

`personalizer.models.clv` holds the models; this module decides how to fit them on a real shop and
what to answer when they cannot be fitted (a shop where nobody bought twice, an optimiser that
fails, a Gamma-Gamma shape q ≤ 1 whose mean spend is infinite). Every fallback logs a warning.

Inputs are RFM summaries (`frequency`, `recency`, `T`, `monetary_value`) counted in purchase days,
as `personalizer.features.rfm.rfm_summary(freq="D")`, with times in the unit of `LifetimeModels`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalizer.models.clv import BetaGeoModel, GammaGammaModel

log = logging.getLogger(__name__)

# Fitting on a random sample keeps a million-customer shop to seconds; 50k customers pin the
# four BG/NBD parameters far more tightly than their spread across seasons.
MAX_FIT_CUSTOMERS = 50_000
# Below this many repeat customers the dropout process (a, b) and the spend spread are not
# identified: the fallbacks answer instead.
MIN_REPEAT_CUSTOMERS = 10
# Weeks once the history is half a year long (the unit of the papers; parameters of order one),
# days for young shops whose weeks would be too coarse.
WEEKS_AFTER_DAYS = 182.0


def time_unit(history_days: float) -> str:
    """The time unit of the lifetime models for a shop with `history_days` of orders: "W" or "D"."""
    return "W" if history_days >= WEEKS_AFTER_DAYS else "D"


def unit_days(unit: str) -> float:
    """Length of `unit` ("D" or "W") in days."""
    if unit not in ("D", "W"):
        raise ValueError(f"unit must be 'D' or 'W'; got unit={unit!r}")
    return 7.0 if unit == "W" else 1.0


@dataclass(frozen=True, eq=False)
class LifetimeModels:
    """Fitted BG/NBD and Gamma-Gamma (or None where they fell back), and what the fallbacks use.

    Attributes:
        unit: time unit of the summaries, "D" or "W".
        bgnbd: the fitted BG/NBD, None when it fell back (every customer alive, purchases at the
            pooled repeat rate).
        gamma_gamma: the fitted Gamma-Gamma, None when it fell back (own mean spend for repeat
            customers, the population mean for the others).
        repeat_rate: pooled repeat purchase days per unit of time and customer.
        population_value: mean value of a purchase day across the shop.
    """

    unit: str
    bgnbd: BetaGeoModel | None
    gamma_gamma: GammaGammaModel | None
    repeat_rate: float
    population_value: float

    def p_alive(self, summary: pd.DataFrame) -> np.ndarray:
        """P(still a customer) per row of `summary` (1 for customers without repeat purchases)."""
        x, t_x, t_obs = _rfm(summary)
        if self.bgnbd is None:
            return np.ones_like(x)
        with np.errstate(all="ignore"):
            alive = self.bgnbd.probability_alive(x, t_x, t_obs)
        return np.where(np.isfinite(alive), alive, 1.0)

    def expected_purchases(self, summary: pd.DataFrame, horizon_days: float) -> np.ndarray:
        """Expected purchase days in the next `horizon_days` per row of `summary`."""
        x, t_x, t_obs = _rfm(summary)
        horizon = horizon_days / unit_days(self.unit)
        fallback = np.full_like(x, self.repeat_rate * horizon)
        if self.bgnbd is None:
            return fallback
        with np.errstate(all="ignore"):  # non-finite values fall back below
            expected = self.bgnbd.expected_purchases(horizon, x, t_x, t_obs)
        return np.where(np.isfinite(expected), expected, fallback)

    def next_order_in_days(self, summary: pd.DataFrame) -> np.ndarray:
        """Median wait to the next purchase in days; `inf` when it may never come (P(alive) ≤ ½)."""
        x, t_x, t_obs = _rfm(summary)
        if self.bgnbd is None:
            return np.full_like(x, np.inf)
        with np.errstate(all="ignore"):
            wait = self.bgnbd.expected_next_order_in(x, t_x, t_obs) * unit_days(self.unit)
        return np.where(np.isnan(wait), np.inf, wait)

    def value_per_purchase(self, summary: pd.DataFrame) -> np.ndarray:
        """Expected value of a future purchase day per row of `summary`."""
        x = summary["frequency"].to_numpy(dtype=float)
        m = summary["monetary_value"].to_numpy(dtype=float)
        fallback = np.where((x > 0) & (m > 0), m, self.population_value)
        if self.gamma_gamma is None:
            return fallback
        with np.errstate(all="ignore"):
            value = self.gamma_gamma.conditional_expected_value(x, np.where(m > 0, m, 0.0))
        return np.where(np.isfinite(value) & (m >= 0), value, fallback)


def fit_lifetime_models(
    summary: pd.DataFrame,
    unit: str,
    *,
    population_value: float,
    spend: bool = True,
    seed: int = 0,
) -> LifetimeModels:
    """Fit BG/NBD (and Gamma-Gamma when `spend`) on an RFM summary, falling back where degenerate.

    Args:
        summary: one row per customer with `frequency`, `recency`, `T` (in `unit`) and
            `monetary_value`.
        unit: "D" or "W", the unit of `recency` and `T`.
        population_value: mean value of a purchase day in the shop (the spend fallback).
        spend: also fit Gamma-Gamma.
        seed: seed of the sample fitted on when the shop has more than `MAX_FIT_CUSTOMERS`.

    Returns:
        The fitted models; a warning is logged for each one that fell back.
    """
    unit_days(unit)
    x, t_x, t_obs = _rfm(summary)
    exposure = float(t_obs.sum())
    repeat_rate = float(x.sum() / exposure) if exposure > 0 else 0.0
    repeaters = int((x > 0).sum())
    bgnbd: BetaGeoModel | None = None
    if repeaters < MIN_REPEAT_CUSTOMERS:
        log.warning(
            "BG/NBD not fitted: only %d of %d customers bought on more than one day (need %d); "
            "every customer counts as alive, expected purchases at the pooled repeat rate",
            repeaters,
            len(x),
            MIN_REPEAT_CUSTOMERS,
        )
    else:
        rows = _sample(len(x), seed)
        try:
            bgnbd = BetaGeoModel().fit(x[rows], t_x[rows], t_obs[rows])
        except (RuntimeError, ValueError, FloatingPointError) as err:
            log.warning("BG/NBD fit failed (%s); falling back to the pooled repeat rate", err)
    gamma_gamma = _fit_gamma_gamma(summary, seed) if spend else None
    return LifetimeModels(unit, bgnbd, gamma_gamma, repeat_rate, float(population_value))


def _fit_gamma_gamma(summary: pd.DataFrame, seed: int) -> GammaGammaModel | None:
    x = summary["frequency"].to_numpy(dtype=float)
    m = summary["monetary_value"].to_numpy(dtype=float)
    usable = np.flatnonzero((x > 0) & (m > 0) & np.isfinite(m))
    if len(usable) < MIN_REPEAT_CUSTOMERS:
        log.warning(
            "Gamma-Gamma not fitted: %d repeat customers with spend (need %d); predicted value "
            "uses each customer's own mean spend, or the shop's",
            len(usable),
            MIN_REPEAT_CUSTOMERS,
        )
        return None
    rows = usable[_sample(len(usable), seed)]
    try:
        model = GammaGammaModel().fit(x[rows], m[rows])
    except (RuntimeError, ValueError, FloatingPointError) as err:
        log.warning("Gamma-Gamma fit failed (%s); using mean spend instead", err)
        return None
    if model.params_["q"] <= 1.0:
        log.warning(
            "Gamma-Gamma q=%.3g ≤ 1 (spend too heavy-tailed for a finite mean); using mean spend",
            model.params_["q"],
        )
        return None
    return model


def _sample(n: int, seed: int) -> np.ndarray:
    """Sorted positions of at most `MAX_FIT_CUSTOMERS` of `n` rows (all of them when fewer)."""
    if n <= MAX_FIT_CUSTOMERS:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, MAX_FIT_CUSTOMERS, replace=False))


def _rfm(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in ("frequency", "recency", "T") if c not in summary]
    if missing:
        raise ValueError(f"summary: missing column(s) {missing}; found {list(summary.columns)}")
    return (
        summary["frequency"].to_numpy(dtype=float),
        summary["recency"].to_numpy(dtype=float),
        summary["T"].to_numpy(dtype=float),
    )
