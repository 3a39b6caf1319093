"""Category propensity: out of time it ranks buyers of each category above the popularity, recency
and raw-frequency baselines on a seeded synthetic shop, its scores follow the planted category
tastes, the formula gives known answers on a hand-made shop, and the edge cases hold (no category,
one order, unknown customers, slugs, the category cap, nothing read from after `as_of`).

One shop of 4,000 customers (about 2,100 of whom buy before CUTOFF) is simulated once for the
module; labels are orders in the 90 days from CUTOFF.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from personalizer.data.synthetic import ShopConfig, make_catalog, simulate_chunk
from personalizer.models.category_propensity import (
    CategoryPropensity,
    bgnbd_expected_orders,
    category_slug,
    evaluate_category_propensity,
    validation_window,
)

CONFIG = ShopConfig(n_customers=4000, seed=13, chunk_size=4000)
CUTOFF = pd.Timestamp("2026-06-01")
HORIZON = 90.0


@pytest.fixture(scope="module")
def shop() -> dict[str, pd.DataFrame]:
    catalog = make_catalog(CONFIG)
    tables = simulate_chunk(CONFIG, catalog, 0)
    return {
        "orders": tables["orders"],
        "products": catalog.products,
        "taste": tables["truth/customers"].set_index("customer_id"),
    }


@pytest.fixture(scope="module")
def scored(shop: dict[str, pd.DataFrame]) -> tuple[CategoryPropensity, pd.DataFrame, pd.Series]:
    """The default model fitted before CUTOFF, and its predictions at CUTOFF (BG/NBD E)."""
    orders, products = shop["orders"], shop["products"]
    model = CategoryPropensity().fit(orders, products, CUTOFF, HORIZON)
    expected = bgnbd_expected_orders(orders, CUTOFF, HORIZON)
    return model, model.predict(orders, products, CUTOFF, expected), expected


def lines(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Order lines from (customer_id, order_id, product_id, ordered_at), one item at 10.00."""
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "product_id", "ordered_at"])
    return frame.assign(quantity=1.0, unit_price=10.0, ordered_at=pd.to_datetime(frame.ordered_at))


# ------------------------------------------------------------------------- out of time
def test_model_beats_the_baselines_out_of_time(shop: dict[str, pd.DataFrame]) -> None:
    model = CategoryPropensity()
    table = evaluate_category_propensity(
        shop["orders"], shop["products"], CUTOFF, HORIZON, model=model
    ).set_index("model")
    print(f"\nalpha {model.alpha_}, half-life {model.half_life_days_} days")
    print(table.round(4).to_string())
    assert list(table.index) == [
        "category_propensity",
        "popularity",
        "personal_frequency",
        "recency",
    ]
    assert (table["categories"] == 12).all()
    assert table["customers"].iloc[0] > 1500
    auc = table["auc"]
    assert auc["category_propensity"] > auc["popularity"] + 0.02
    assert auc["category_propensity"] > auc["recency"] + 0.05
    assert auc["category_propensity"] >= auc["personal_frequency"]
    loss = table["log_loss"]
    assert loss["category_propensity"] < loss["popularity"]
    assert loss["category_propensity"] < loss["personal_frequency"]
    assert math.isnan(loss["recency"])  # a ranking, not a probability
    assert model.alpha_ in model.alphas
    assert model.half_life_days_ in model.half_lives
    assert model.validation_ is not None
    assert len(model.validation_) == len(model.alphas) * len(model.half_lives)


def test_propensity_follows_the_planted_tastes(
    shop: dict[str, pd.DataFrame], scored: tuple[CategoryPropensity, pd.DataFrame, pd.Series]
) -> None:
    """Propensity is volume × mix: E (unrelated to taste) dilutes its rank correlation with the
    taste, which popularity (E alone) lacks entirely; the mix it implies, q = −log(1 − p) / E,
    follows the taste far more closely."""
    model, predicted, expected = scored
    taste = shop["taste"].reindex(predicted["customer_id"])
    past = shop["orders"][shop["orders"]["ordered_at"] < CUTOFF]
    category = shop["products"].set_index("product_id")["category"].map(category_slug)
    held = past.assign(slug=past["product_id"].map(category)).groupby("slug")["order_id"]
    share = held.nunique() / past["order_id"].nunique()
    e = expected.to_numpy()
    rho: dict[str, list[float]] = {"model": [], "popularity": [], "implied_mix": []}
    for slug in model.categories_ or ():
        truth = taste[f"taste_{slug}"].to_numpy()
        score = predicted[f"propensity_{slug}"].to_numpy()
        rho["model"].append(spearmanr(score, truth).statistic)
        rho["popularity"].append(spearmanr(-np.expm1(-e * share[slug]), truth).statistic)
        rho["implied_mix"].append(spearmanr(-np.log1p(-score) / e, truth).statistic)
    mean = {name: float(np.mean(values)) for name, values in rho.items()}
    print("\nmean Spearman with the planted taste:", {k: round(v, 3) for k, v in mean.items()})
    assert len(rho["model"]) == 12
    assert mean["model"] > 0.1
    assert min(rho["model"]) > 0.05
    assert mean["model"] > mean["popularity"] + 0.1
    assert mean["implied_mix"] > 0.3


def test_predictions_are_one_probability_per_customer_and_category(
    scored: tuple[CategoryPropensity, pd.DataFrame, pd.Series],
) -> None:
    model, predicted, expected = scored
    slugs = model.categories_ or ()
    assert list(predicted.columns) == ["customer_id", *(f"propensity_{s}" for s in slugs)]
    assert "propensity_pet_supplies" in predicted.columns
    assert predicted["customer_id"].tolist() == expected.index.tolist()
    assert predicted["customer_id"].is_unique
    values = predicted.drop(columns="customer_id").to_numpy()
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    assert (values <= 1).all()


def test_nothing_after_as_of_is_read(
    shop: dict[str, pd.DataFrame], scored: tuple[CategoryPropensity, pd.DataFrame, pd.Series]
) -> None:
    model, predicted, expected = scored
    past = shop["orders"][shop["orders"]["ordered_at"] < CUTOFF]
    again = CategoryPropensity().fit(past, shop["products"], CUTOFF, HORIZON)
    assert (again.alpha_, again.half_life_days_) == (model.alpha_, model.half_life_days_)
    pd.testing.assert_frame_equal(
        again.predict(past, shop["products"], CUTOFF, expected), predicted
    )


# ------------------------------------------------------------------------- known answers
PRODUCTS = pd.DataFrame(
    {"product_id": ["p1", "p2", "p3", "p4"], "category": ["Coffee", "Tea", None, "Pet Supplies"]}
)
HAND = lines(
    [
        ("a", "o1", "p1", "2024-01-01"),
        ("a", "o2", "p1", "2024-02-01"),
        ("a", "o2", "p2", "2024-02-01"),
        ("a", "o3", "p3", "2024-03-01"),  # no category: an order, but of no category
        ("b", "o4", "p2", "2024-03-15"),  # b: a single order
        ("c", "o5", "p4", "2024-01-10"),
        ("a", "o6", "p4", "2024-05-01"),  # after AS_OF: never read
    ]
)
AS_OF = "2024-04-01"
# Shop mix before AS_OF: 5 orders, 2 with coffee, 2 with tea, 1 with pet supplies.
SHARE = {"coffee": 0.4, "tea": 0.4, "pet_supplies": 0.2}


def p(expected: float, held: float, total: float, alpha: float, share: float) -> float:
    return 1 - math.exp(-expected * (held + alpha * share) / (total + alpha))


def test_formula_gives_known_answers_with_one_order_and_without_orders() -> None:
    model = CategoryPropensity(alphas=(1.0,), half_lives=(math.inf,))
    model.fit(HAND, PRODUCTS, AS_OF, HORIZON)
    assert model.categories_ == ("coffee", "tea", "pet_supplies")  # most ordered, ties by name
    expected = pd.Series({"a": 1.0, "b": 2.0, "d": 1.5})  # d never ordered
    out = model.predict(HAND, PRODUCTS, AS_OF, expected).set_index("customer_id")
    assert out.loc["a", "propensity_coffee"] == pytest.approx(p(1.0, 2, 3, 1.0, 0.4))
    assert out.loc["a", "propensity_pet_supplies"] == pytest.approx(p(1.0, 0, 3, 1.0, 0.2))
    assert out.loc["b", "propensity_tea"] == pytest.approx(p(2.0, 1, 1, 1.0, 0.4))
    assert out.loc["b", "propensity_coffee"] == pytest.approx(p(2.0, 0, 1, 1.0, 0.4))
    for slug, share in SHARE.items():  # no orders: the shop's mix
        assert out.loc["d", f"propensity_{slug}"] == pytest.approx(p(1.5, 0, 0, 1.0, share))
    # One tea order moves b towards tea, but the prior keeps coffee possible.
    assert out.loc["b", "propensity_tea"] > out.loc["d", "propensity_tea"]
    assert 0 < out.loc["b", "propensity_coffee"] < out.loc["b", "propensity_tea"]


def test_recency_half_life_discounts_old_orders() -> None:
    model = CategoryPropensity(alphas=(1.0,), half_lives=(30.0,))
    model.fit(HAND, PRODUCTS, AS_OF, HORIZON)
    out = model.predict(HAND, PRODUCTS, AS_OF, pd.Series({"a": 1.0})).set_index("customer_id")
    age = {"o1": 91, "o2": 60, "o3": 31}  # days before AS_OF (2024 is a leap year)
    w = {o: 2 ** (-d / 30) for o, d in age.items()}
    every = {**w, "o4": 2 ** (-17 / 30), "o5": 2 ** (-82 / 30)}
    coffee_share = (w["o1"] + w["o2"]) / sum(every.values())
    want = p(1.0, w["o1"] + w["o2"], sum(w.values()), 1.0, coffee_share)
    assert out.loc["a", "propensity_coffee"] == pytest.approx(want)


def test_no_category_gives_customer_id_only(caplog: pytest.LogCaptureFixture) -> None:
    bare = PRODUCTS.assign(category=None)
    with caplog.at_level(logging.WARNING):
        model = CategoryPropensity().fit(HAND, bare, AS_OF, HORIZON)
        out = model.predict(HAND, bare, AS_OF, pd.Series({"a": 1.0, "b": 0.5}))
    assert model.categories_ == ()
    assert list(out.columns) == ["customer_id"]
    assert out["customer_id"].tolist() == ["a", "b"]
    assert "no ordered product has a category" in caplog.text


def test_category_cap_and_shared_slugs() -> None:
    products = PRODUCTS.assign(category=["Coffee", "coffee!", None, "Pet Supplies"])
    model = CategoryPropensity(max_categories=1, alphas=(1.0,), half_lives=(math.inf,))
    model.fit(HAND, products, AS_OF, HORIZON)
    assert model.categories_ == ("coffee",)  # "Coffee" and "coffee!" are one category
    out = model.predict(HAND, products, AS_OF, pd.Series({"a": 1.0}))
    assert list(out.columns) == ["customer_id", "propensity_coffee"]
    # o1 and o2 hold coffee (o2 twice, counted once); 3 of 5 shop orders.
    assert out["propensity_coffee"].iloc[0] == pytest.approx(p(1.0, 2, 3, 1.0, 3 / 5))


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Pet Supplies", "pet_supplies"),
        ("  Home & Décor!! ", "home_decor"),
        ("3D-Printing / CAD", "3d_printing_cad"),
        ("electronics_accessories", "electronics_accessories"),
        ("---", ""),
    ],
)
def test_category_slug(name: str, slug: str) -> None:
    assert category_slug(name) == slug


def test_validation_window_is_at_most_a_share_of_a_short_history() -> None:
    start, days = validation_window(HAND, AS_OF, HORIZON)
    assert days == pytest.approx(0.3 * 91)  # 91 days of history, a 90-day horizon
    assert start == pd.Timestamp(AS_OF) - pd.Timedelta(days=days)
    assert validation_window(HAND, "2025-04-01", 30.0)[1] == 30.0


def test_bad_expected_orders_are_refused() -> None:
    model = CategoryPropensity().fit(HAND, PRODUCTS, AS_OF, HORIZON)
    with pytest.raises(ValueError, match="expected_orders"):
        model.predict(HAND, PRODUCTS, AS_OF, pd.Series([1.0, np.nan], index=["a", "b"]))
    with pytest.raises(ValueError, match="repeated"):
        model.predict(HAND, PRODUCTS, AS_OF, pd.Series([1.0, 2.0], index=["a", "a"]))
    with pytest.raises(ValueError, match="not fitted"):
        CategoryPropensity().predict(HAND, PRODUCTS, AS_OF, pd.Series({"a": 1.0}))
