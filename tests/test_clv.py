"""Lifetime value: RFM summaries, BG/NBD and Gamma-Gamma reproduce the published CDNOW fits.

Known answers (../shared/datasets/README.md, Fader, Hardie & Lee 2005): on the 2,357-customer CDNOW
sample with a 39-week calibration, BG/NBD r=0.243, α=4.414, a=0.793, b=2.426 (log-likelihood
−9582.4); Gamma-Gamma p=6.25, q=3.74, v=15.45 on the 946 repeat customers; 1,882 repeat purchases in
weeks 40–78. The rest are behavioural tests on data simulated from known parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from conftest import dataset
from personalizer.data.adapters import cdnow
from personalizer.features.rfm import calibration_and_holdout, rfm_summary
from personalizer.models.clv import BetaGeoModel, GammaGammaModel

CALIBRATION_END = "1997-09-30"  # end of week 39, counting from 1997-01-01
OBSERVATION_END = "1998-06-30"  # end of week 78
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.45}


def assert_published(params: dict[str, float], published: dict[str, float], decimals: int) -> None:
    """Fitted parameters equal the published ones at the published number of decimals."""
    assert {k: round(params[k], decimals) for k in published} == published


def simulate_bgnbd(
    r: float, alpha: float, a: float, b: float, T: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frequency and recency of customers who follow the BG/NBD story over (0, T]."""
    rng = np.random.default_rng(seed)
    n = len(T)
    rate, dropout = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    x, t_x, now, active = np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n, bool)
    while active.any():
        now[active] += rng.exponential(1 / rate[active])
        active &= now <= T
        x[active] += 1
        t_x[active] = now[active]
        active &= rng.random(n) >= dropout  # dropout happens right after a purchase
    return x, t_x


# --- CDNOW: the published fits -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    return pd.read_csv(dataset("cdnow", "cdnow_customers_summary_with_transactions.csv"))


@pytest.fixture(scope="module")
def cdnow_raw() -> pd.DataFrame:
    """RFM + holdout of the raw sample through the project's CDNOW adapter, indexed by the
    summary files' ID (the sample's second column), in weeks with purchases merged per day."""
    path = dataset("cdnow", "CDNOW_sample.txt")
    frames = {table: parts[0] for table, parts, _ in cdnow.read(path, batch_rows=10_000)}
    summary = calibration_and_holdout(
        frames["orders"], CALIBRATION_END, OBSERVATION_END, freq="D", unit="W"
    )
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, usecols=[0, 1])
    new_id = pd.Series(raw[1].astype(int).to_numpy(), index=raw[0].str.lstrip("0"))
    summary.index = new_id[~new_id.index.duplicated()].reindex(summary.index).to_numpy()
    return summary.sort_index()


def test_bgnbd_reproduces_the_published_cdnow_fit(cdnow_summary: pd.DataFrame) -> None:
    model = BetaGeoModel().fit(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"])
    assert_published(model.params_, PUBLISHED_BGNBD, 3)
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert model.n_customers_ == 2357


def test_gamma_gamma_reproduces_the_published_cdnow_fit(cdnow_summary: pd.DataFrame) -> None:
    model = GammaGammaModel().fit(cdnow_summary["x"], cdnow_summary["zbar"])
    assert model.n_customers_ == 946
    assert_published(model.params_, PUBLISHED_GAMMA_GAMMA, 2)


def test_rfm_summary_of_the_raw_sample_is_the_published_summary(
    cdnow_raw: pd.DataFrame, cdnow_summary: pd.DataFrame
) -> None:
    # Exact only when purchases are merged per customer and day (freq="D"): 223 transactions
    # share a customer and a day with another, and counting them apart changes `frequency` for 80
    # customers. The file's zbar is our monetary_value rounded half-up to the cent.
    published = cdnow_summary.set_index("ID")
    assert len(cdnow_raw) == 2357
    assert (cdnow_raw["frequency"] == published["x"]).all()
    assert np.allclose(cdnow_raw["recency"], published["t_x"], atol=0.005)
    assert np.allclose(cdnow_raw["T"], published["T"], atol=0.005)
    assert np.allclose(cdnow_raw["monetary_value"], published["zbar"], atol=0.0055)


def test_fits_on_the_raw_sample_match_the_published_ones(cdnow_raw: pd.DataFrame) -> None:
    bgnbd = BetaGeoModel().fit(cdnow_raw["frequency"], cdnow_raw["recency"], cdnow_raw["T"])
    assert_published(bgnbd.params_, PUBLISHED_BGNBD, 3)
    spend = GammaGammaModel().fit(cdnow_raw["frequency"], cdnow_raw["monetary_value"])
    # Unrounded means give v = 15.443; the published 15.45 comes from the means rounded to the
    # cent (the summary file's zbar): the likelihood is flat enough along v to move it by 0.005.
    assert_published(spend.params_, {"p": 6.25, "q": 3.74}, 2)
    assert spend.params_["v"] == pytest.approx(15.443, abs=0.002)


def test_holdout_purchases_are_forecast_within_15_percent(cdnow_raw: pd.DataFrame) -> None:
    assert cdnow_raw["frequency_holdout"].sum() == 1882
    assert (cdnow_raw["duration_holdout"] == 39).all()
    model = BetaGeoModel().fit(cdnow_raw["frequency"], cdnow_raw["recency"], cdnow_raw["T"])
    forecast = model.expected_purchases(
        cdnow_raw["duration_holdout"], cdnow_raw["frequency"], cdnow_raw["recency"], cdnow_raw["T"]
    ).sum()
    # The model forecasts 1,653 of the 1,882 (−12%): BG/NBD under-forecasts this holdout, and
    # the formula itself is checked against numerical integration below.
    assert forecast == pytest.approx(1653.4, abs=1.0)
    assert abs(forecast - 1882) / 1882 < 0.15


# --- BG/NBD behaviour ----------------------------------------------------------------------------

TRUTH = {"r": 0.5, "alpha": 6.0, "a": 0.7, "b": 3.0}


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T = np.random.default_rng(1).uniform(52, 104, 10_000)
    x, t_x = simulate_bgnbd(**TRUTH, T=T, seed=0)
    return x, t_x, T


@pytest.fixture(scope="module")
def fitted(simulated: tuple[np.ndarray, np.ndarray, np.ndarray]) -> BetaGeoModel:
    return BetaGeoModel().fit(*simulated)


def test_fit_recovers_the_parameters_of_simulated_customers(fitted: BetaGeoModel) -> None:
    got = fitted.params_
    assert got["r"] == pytest.approx(TRUTH["r"], rel=0.1)
    assert got["alpha"] == pytest.approx(TRUTH["alpha"], rel=0.1)
    # a and b are weakly identified one by one; the mean dropout probability a / (a + b) is not.
    assert got["a"] == pytest.approx(TRUTH["a"], rel=0.3)
    assert got["b"] == pytest.approx(TRUTH["b"], rel=0.3)
    assert got["a"] / (got["a"] + got["b"]) == pytest.approx(0.7 / 3.7, abs=0.02)


def test_unconditional_expectation_matches_simulation() -> None:
    model = BetaGeoModel()
    model.params_ = dict(TRUTH)
    x, _ = simulate_bgnbd(**TRUTH, T=np.full(40_000, 52.0), seed=3)
    expected = float(model.expected_purchases_unconditional(52.0))
    assert x.mean() == pytest.approx(expected, rel=0.03)
    assert float(model.expected_purchases_unconditional(0.0)) == 0.0


@pytest.mark.parametrize(
    ("t", "x", "t_x", "T"),
    [
        (39, 0, 0, 38.86),
        (39, 2, 30.43, 38.86),
        (10, 5, 20, 30),
        (200, 50, 35, 38),
        (52, 500, 99, 100),
    ],
)
def test_conditional_expectation_matches_numerical_integration(
    t: float, x: float, t_x: float, T: float
) -> None:
    # Alive at T, λ ~ Gamma(r + x, α + T) and p ~ Beta(a, b + x); E[purchases | λ, p] over t is
    # (1 − e^(−λpt)) / p (FHL 2005 eq. 7). Integrate λ in closed form and p numerically.
    r, alpha, a, b = PUBLISHED_BGNBD.values()
    model = BetaGeoModel()
    model.params_ = dict(PUBLISHED_BGNBD)

    def integrand(p: float) -> float:
        rest = ((alpha + T) / (alpha + T + p * t)) ** (r + x)
        return float(stats.beta.pdf(p, a, b + x) * (1 - rest) / p)

    while_alive = integrate.quad(integrand, 0, 1, limit=200)[0]
    expected = float(model.probability_alive(x, t_x, T)) * while_alive
    assert float(model.expected_purchases(t, x, t_x, T)) == pytest.approx(expected, rel=1e-7)


def test_probability_alive_falls_as_the_gap_since_the_last_purchase_grows(
    fitted: BetaGeoModel,
) -> None:
    alive = fitted.probability_alive(3, [40, 30, 20, 10, 1], 40)
    assert np.all(np.diff(alive) < 0)
    assert 0 < alive[-1] < alive[0] < 1
    assert fitted.probability_alive(0, 0, 40) == 1.0  # no purchase yet, so no chance to drop out


def test_expected_purchases_grow_with_frequency_and_horizon(fitted: BetaGeoModel) -> None:
    by_frequency = fitted.expected_purchases(26, np.arange(1, 12), 50, 50)
    assert np.all(np.diff(by_frequency) > 0)
    by_horizon = fitted.expected_purchases([1, 10, 52, 520], 4, 40, 50)
    assert np.all(np.diff(by_horizon) > 0)


def test_next_order_is_the_quantile_of_the_wait(fitted: BetaGeoModel) -> None:
    # For a short wait, P(next purchase within t) ≈ E[purchases in t]: the two are separate
    # formulas, so this checks one against the other.
    soon = fitted.expected_next_order_in(5, 49, 50, quantile=0.001)
    assert float(fitted.expected_purchases(soon, 5, 49, 50)) == pytest.approx(0.001, rel=0.01)
    median = fitted.expected_next_order_in([2, 5, 10], 49, 50)
    assert np.all(np.isfinite(median))
    assert np.all(np.diff(median) < 0)
    # A customer more likely gone than not never reaches the median.
    gone = fitted.expected_next_order_in(5, 5, 100)
    assert fitted.probability_alive(5, 5, 100) < 0.5
    assert np.isinf(gone)


def test_large_frequencies_stay_finite() -> None:
    frequency = np.array([0, 1, 3, 500, 20_000])
    recency = np.array([0, 10, 30, 99, 100])
    model = BetaGeoModel().fit(frequency, recency, np.full(5, 100.0))
    assert all(np.isfinite(v) for v in model.params_.values())
    ahead = model.expected_purchases(52, frequency, recency, 100)
    assert np.all(np.isfinite(ahead))
    assert ahead[-1] > ahead[-2]


# --- Gamma-Gamma and lifetime value --------------------------------------------------------------


def test_gamma_gamma_recovers_simulated_spend() -> None:
    rng = np.random.default_rng(7)
    p, q, v = 6.0, 4.0, 15.0
    x = 1 + rng.poisson(3, 5000)
    nu = rng.gamma(q, 1 / v, len(x))
    mean_spend = rng.gamma(p * x, 1 / nu) / x
    model = GammaGammaModel().fit(x, mean_spend)
    assert model.params_["p"] == pytest.approx(p, rel=0.15)
    assert model.params_["q"] == pytest.approx(q, rel=0.15)
    assert model.params_["v"] == pytest.approx(v, rel=0.2)


def test_expected_value_shrinks_towards_the_population_mean() -> None:
    model = GammaGammaModel()
    model.params_ = dict(PUBLISHED_GAMMA_GAMMA)
    p, q, v = PUBLISHED_GAMMA_GAMMA.values()
    population = p * v / (q - 1)
    assert float(model.conditional_expected_value(0, 0)) == pytest.approx(population)
    few, many = model.conditional_expected_value([1, 20], 100.0)
    assert population < few < many < 100.0


def test_lifetime_value_sums_discounted_purchases(fitted: BetaGeoModel) -> None:
    spend = GammaGammaModel()
    spend.params_ = dict(PUBLISHED_GAMMA_GAMMA)
    rfm = ([0, 2, 6], [0, 30, 50], [52, 52, 52], [0.0, 40.0, 25.0])
    value = spend.conditional_expected_value(rfm[0], rfm[3])
    one_step = spend.customer_lifetime_value(fitted, *rfm, horizon=52, step=52)
    assert np.allclose(one_step, fitted.expected_purchases(52, *rfm[:3]) * value)
    monthly = spend.customer_lifetime_value(fitted, *rfm, horizon=52, step=4.33)
    assert np.allclose(monthly, one_step)  # no discounting: the steps only split the sum
    discounted = spend.customer_lifetime_value(
        fitted, *rfm, horizon=52, step=4.33, discount_rate=0.01
    )
    assert np.all(discounted < monthly)
    longer = spend.customer_lifetime_value(fitted, *rfm, horizon=104, step=4.33, discount_rate=0.01)
    assert np.all(longer > discounted)


# --- Persistence and bad inputs ------------------------------------------------------------------


def test_save_and_load_round_trip(fitted: BetaGeoModel, tmp_path: Path) -> None:
    fitted.save(tmp_path / "bgnbd.json")
    loaded = BetaGeoModel.load(tmp_path / "bgnbd.json")
    assert loaded.params_ == fitted.params_
    assert loaded.get_params() == fitted.get_params()
    args = ([0, 3, 8], [0, 20, 60], [70, 70, 70])
    assert np.array_equal(
        loaded.expected_purchases(10, *args), fitted.expected_purchases(10, *args)
    )
    with pytest.raises(ValueError, match="holds a 'BetaGeoModel', not a GammaGammaModel"):
        GammaGammaModel.load(tmp_path / "bgnbd.json")

    spend = GammaGammaModel(penalizer=0.01)
    spend.params_ = dict(PUBLISHED_GAMMA_GAMMA)
    spend.save(tmp_path / "gg.json")
    assert GammaGammaModel.load(tmp_path / "gg.json").get_params() == {"penalizer": 0.01}


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, 2], [-1.0, 3.0], [10, 10], r"recency must be ≥ 0; got recency=-1.0 at position 0"),
        ([1, 2], [5.0, 12.0], [10, 10], r"recency must be ≤ T; got recency=12.0 at position 1"),
        ([1.5], [5.0], [10], r"frequency must be a whole number .*; got frequency=1.5"),
        ([-1], [0.0], [10], r"frequency must be ≥ 0; got frequency=-1.0"),
        ([0], [4.0], [10], r"recency must be 0 when frequency is 0; got recency=4.0"),
        ([1], [np.nan], [10], r"recency must be finite; got recency=nan"),
        ([1, 2], [1.0, 2.0, 3.0], [10], r"differ in shape"),
    ],
)
def test_bad_rfm_is_refused_with_the_field_and_value(
    frequency: list, recency: list, T: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BetaGeoModel().fit(frequency, recency, T)


def test_bad_spend_and_settings_are_refused(fitted: BetaGeoModel) -> None:
    with pytest.raises(ValueError, match=r"monetary_value must be > 0 .*; got monetary_value=0.0"):
        GammaGammaModel().fit([0, 2, 3], [0.0, 0.0, 10.0])
    with pytest.raises(ValueError, match="no customer with a repeat purchase"):
        GammaGammaModel().fit([0, 0], [0.0, 0.0])
    with pytest.raises(ValueError, match="penalizer must be ≥ 0; got penalizer=-1"):
        BetaGeoModel(penalizer=-1).fit([1], [1.0], [2.0])
    with pytest.raises(ValueError, match="quantile must be in"):
        fitted.expected_next_order_in(1, 1, 2, quantile=1.0)
    with pytest.raises(ValueError, match=r"t must be ≥ 0; got t=-1\.0"):
        fitted.expected_purchases(-1, 1, 1, 2)
    spend = GammaGammaModel()
    spend.params_ = dict(PUBLISHED_GAMMA_GAMMA)
    with pytest.raises(ValueError, match="horizon must be > 0; got horizon=0"):
        spend.customer_lifetime_value(fitted, 1, 1, 2, 10.0, horizon=0)
    with pytest.raises(RuntimeError, match="BetaGeoModel is not fitted"):
        BetaGeoModel().probability_alive(1, 1, 2)


# --- RFM summaries -------------------------------------------------------------------------------


def orders_of(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["customer_id", "ordered_at", "quantity", "unit_price"]
    ).assign(ordered_at=lambda d: pd.to_datetime(d["ordered_at"]))


ORDERS = orders_of(
    ("c1", "2024-01-01 09:00", 1, 10.0),
    ("c1", "2024-01-01 18:00", 2, 5.0),  # same day: one purchase with the line above
    ("c1", "2024-01-08 10:00", 1, 30.0),
    ("c1", "2024-01-15 10:00", 3, 10.0),
    ("c2", "2024-01-10 12:00", 1, 99.0),
    ("c2", "2024-02-20 12:00", 1, 1.0),  # after `until`: ignored
    ("c3", "2024-02-01 12:00", 1, 5.0),  # first purchase after `until`: not a customer yet
)


def test_rfm_summary_counts_periods_and_repeat_value() -> None:
    summary = rfm_summary(ORDERS, "2024-01-31")
    assert list(summary.columns) == ["frequency", "recency", "T", "monetary_value"]
    assert summary.index.name == "customer_id"
    assert summary.loc["c1"].tolist() == [2, 14, 30, 30.0]  # repeats worth 30 and 30
    assert summary.loc["c2"].tolist() == [0, 0, 21, 0.0]
    assert "c3" not in summary.index


def test_rfm_summary_units_and_value_column() -> None:
    weeks = rfm_summary(ORDERS, "2024-01-31", unit="W")
    assert weeks.loc["c1", "recency"] == 2
    assert weeks.loc["c1", "T"] == pytest.approx(30 / 7)
    weekly = rfm_summary(ORDERS, "2024-01-31", freq="W")  # whole weeks, as lifetimes' freq="W"
    assert weekly.loc["c1"].tolist()[:3] == [2, 2, 4]
    valued = rfm_summary(ORDERS.assign(revenue=1.0), "2024-01-31", monetary="revenue")
    assert valued.loc["c1", "monetary_value"] == 1.0


def test_calibration_and_holdout_counts_later_purchase_periods() -> None:
    later = orders_of(("c1", "2024-02-05 10:00", 1, 8.0), ("c1", "2024-02-05 11:00", 1, 2.0))
    both = calibration_and_holdout(pd.concat([ORDERS, later]), "2024-01-31", "2024-02-29")
    assert both.loc["c1", ["frequency_holdout", "monetary_value_holdout"]].tolist() == [1, 10.0]
    assert both.loc["c2", ["frequency_holdout", "monetary_value_holdout"]].tolist() == [1, 1.0]
    assert (both["duration_holdout"] == 29).all()
    with pytest.raises(ValueError, match="observation_end must fall in a later period"):
        calibration_and_holdout(ORDERS, "2024-01-31", "2024-01-31")


def test_rfm_summary_names_missing_columns() -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['unit_price'\]"):
        rfm_summary(ORDERS.drop(columns="unit_price"), "2024-01-31")
