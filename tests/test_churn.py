"""Churn: customer features with known answers, out-of-time labels without leakage, the direction of
the score, readable reasons, persistence, the scoring contract, and the Online Retail target.

Online Retail (../shared/datasets/README.md): cutoff 2011-09-01, H = 90, customers who bought
before the cutoff; recency alone AUC 0.684, LightGBM on RFM trained out of time 0.719; the target
is AUC ≥ 0.74 with Brier < 0.22, above both baselines on the same split.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import online_retail_transactions
from personalizer.config import Settings
from personalizer.data.synthetic import ShopConfig, make_catalog, simulate_chunk
from personalizer.evaluation.churn import evaluate_churn
from personalizer.features.customer_history import CustomerHistory
from personalizer.features.customers import FEATURE_NAMES, customer_features
from personalizer.features.engagement_times import machine_opens
from personalizer.features.rfm import rfm_summary
from personalizer.models.churn import ChurnModel, churn_labels
from personalizer.models.churn_baselines import compare_churn
from personalizer.models.churn_scoring import SCORE_COLUMNS, score_customers

AS_OF = pd.Timestamp("2026-06-01")
FAST = {"n_windows": 2, "n_folds": 3, "num_threads": 1, "seed": 3}


def lines(rows: list[tuple[str, str, str, float, float, str]]) -> pd.DataFrame:
    """Order lines from (customer_id, order_id, product_id, quantity, unit_price, ordered_at)."""
    frame = pd.DataFrame(
        rows,
        columns=["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"],
    )
    return frame.assign(ordered_at=pd.to_datetime(frame["ordered_at"], format="ISO8601"))


def regular_customer(customer: str, last: pd.Timestamp, every: int, n: int) -> pd.DataFrame:
    """`n` orders of 30.00, one every `every` days, the last at `last`."""
    times = [last - pd.Timedelta(days=every * k) for k in range(n)]
    return lines(
        [(customer, f"{customer}-{k}", "p00001", 1, 30.0, str(t)) for k, t in enumerate(times)]
    )


@pytest.fixture(scope="module")
def shop() -> dict[str, pd.DataFrame]:
    config = ShopConfig(n_customers=2000, seed=17, chunk_size=2000)
    catalog = make_catalog(config)
    tables = simulate_chunk(config, catalog, 0)
    return {"orders": tables["orders"], "events": tables["events"], "products": catalog.products}


@pytest.fixture(scope="module")
def model(shop: dict[str, pd.DataFrame]) -> ChurnModel:
    return ChurnModel(**FAST).fit(shop["orders"], AS_OF, shop["events"], products=shop["products"])


# ------------------------------------------------------------------------------ features
HAND = lines(
    [
        ("a", "a1", "p1", 1, 10.0, "2024-01-01"),
        ("a", "a2", "p1", 2, 10.0, "2024-02-01"),
        ("a", "a3", "p2", 3, 10.0, "2024-03-02"),
        ("a", "a3r", "p2", -1, 10.0, "2024-03-05"),  # a returned line
        ("a", "a4", "p3", 1, 99.0, "2024-08-01"),  # after as_of: ignored
        ("b", "b1", "p1", 1, 5.0, "2024-06-30 12:00"),
    ]
)
HAND_AS_OF = "2024-07-01"


def test_features_have_known_values() -> None:
    f = customer_features(HAND, HAND_AS_OF)
    assert list(f.index) == ["a", "b"]
    assert list(f.columns) == list(FEATURE_NAMES)
    a, b = f.loc["a"], f.loc["b"]
    # 2024 is a leap year: Jan 1, Feb 1 and Mar 2 are 182, 151 and 121 days before Jul 1.
    assert (a["recency_days"], a["tenure_days"]) == (121, 182)
    assert (a["orders_total"], a["spend_total"]) == (3, 60.0)
    assert (a["orders_90d"], a["orders_180d"], a["orders_365d"]) == (0, 2, 3)
    assert (a["spend_prev_90d"], a["spend_90d"], a["spend_trend_90d"]) == (50.0, 0.0, -1.0)
    assert (a["gap_mean_days"], a["gap_median_days"], a["gap_last_days"]) == (30.5, 30.5, 30)
    assert a["gap_max_days"] == 31
    assert a["overdue_ratio"] == pytest.approx(121 / 30.5)
    assert (a["products_distinct"], a["repeat_product_share"]) == (2, 0.5)
    assert (a["returns_total"], a["return_rate"]) == (1, pytest.approx(1 / 3))
    assert (a["items_per_order"], a["order_value_max"], a["order_value_last"]) == (2, 30, 30)
    assert b["recency_days"] == 0.5
    assert np.isnan(b["gap_median_days"])
    assert np.isnan(b["spend_trend_90d"])
    assert f[["emails_90d", "site_days_30d"]].isna().all().all()  # no events given
    assert f["p_alive"].between(0, 1).all()
    assert (f["expected_purchases"] >= 0).all()


@pytest.mark.parametrize(
    ("properties", "machine"),
    [
        ({"user_agent": "Mozilla/5.0"}, True),
        ({"user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5)"}, False),
        ({"mpp": True}, True),
        ({"is_machine_open": 1}, True),
        ({"machine": 10}, False),
        ({"campaign": "machine"}, False),
    ],
)
@pytest.mark.parametrize("coded", [False, True])
def test_churn_features_and_send_times_agree_on_what_a_machine_open_is(
    properties: dict[str, object], machine: bool, coded: bool
) -> None:
    events = pd.DataFrame(
        {
            "customer_id": ["b", "b"],
            "type": ["email_delivered", "email_open"],
            "occurred_at": ["2024-06-10 08:00", "2024-06-10 09:00"],
            "properties": [None, json.dumps(properties)],
        }
    )
    if coded:  # as training reads the warehouse
        events = events.astype(dict.fromkeys(("customer_id", "type", "properties"), "category"))
    b = customer_features(HAND, HAND_AS_OF, events).loc["b"]
    assert machine_opens(events).tolist() == [False, machine]
    assert (b["machine_opens_90d"], b["opens_90d"]) == ((1, 0) if machine else (0, 1))


def test_email_engagement_weighs_clicks_up_and_machine_opens_down() -> None:
    def event(kind: str, at: str, agent: str | None = None) -> dict[str, object]:
        props = json.dumps({"user_agent": agent}) if agent else None
        return {"customer_id": "b", "type": kind, "occurred_at": at, "properties": props}

    events = pd.DataFrame(
        [
            event("email_delivered", "2024-06-01"),
            event("email_delivered", "2024-06-10"),
            event("email_open", "2024-06-01 00:05", "Mozilla/5.0"),  # Apple MPP proxy
            event("email_open", "2024-06-10 09:00", "Microsoft Office/16.0"),
            event("email_click", "2024-06-10 09:01"),
            event("return", "2024-06-30 13:00"),
            event("product_view", "2024-06-20"),
            event("add_to_cart", "2024-06-20"),
            event("email_open", "2024-07-02"),  # after as_of
        ]
    )
    b = customer_features(HAND, HAND_AS_OF, events).loc["b"]
    assert (b["emails_90d"], b["opens_90d"], b["machine_opens_90d"], b["clicks_90d"]) == (
        2,
        1,
        1,
        1,
    )
    assert b["engagement_90d"] == pytest.approx((1 + 0.2 * 1 + 3 * 1) / 2)
    assert b["days_since_engaged"] == pytest.approx(20.0 + 14.98 / 24, abs=1e-3)
    assert (b["site_days_30d"], b["carts_30d"], b["unsubscribed"]) == (1, 1, 0)
    assert b["returns_total"] == 1


def test_lifetime_summary_is_the_rfm_summary(shop: dict[str, pd.DataFrame]) -> None:
    orders = shop["orders"][shop["orders"]["ordered_at"] < AS_OF]
    expected = rfm_summary(orders, AS_OF, freq="D", unit="W")
    ours = CustomerHistory.build(shop["orders"]).rfm_summary(AS_OF, "W")[expected.columns]
    pd.testing.assert_frame_equal(
        ours, expected, check_dtype=False, check_names=False, check_index_type=False
    )


def test_features_ignore_what_happens_after_as_of(shop: dict[str, pd.DataFrame]) -> None:
    orders, events = shop["orders"], shop["events"]
    before = customer_features(orders, AS_OF, events)
    cut = customer_features(
        orders[orders["ordered_at"] < AS_OF], AS_OF, events[events["occurred_at"] < AS_OF]
    )
    pd.testing.assert_frame_equal(before, cut)


# ------------------------------------------------------------------------------- model
def test_labels_are_built_out_of_time(model: ChurnModel, shop: dict[str, pd.DataFrame]) -> None:
    # The latest training moment is as_of − H, whose outcome window ends at as_of.
    assert pd.Timestamp(model.windows_[0]["as_of"]) == AS_OF - pd.Timedelta(days=90)
    labels = churn_labels(HAND, "2024-02-15", horizon_days=30)
    assert labels.to_dict() == {"a": 0}  # "a" ordered on Mar 2, within 30 days
    assert churn_labels(HAND, "2024-03-03", horizon_days=30).to_dict() == {"a": 1}


def test_changing_orders_after_as_of_changes_nothing_in_fit(
    shop: dict[str, pd.DataFrame], model: ChurnModel
) -> None:
    orders, events = shop["orders"], shop["events"]
    later = orders["ordered_at"] >= AS_OF
    changed = orders[~later | (orders.index % 2 == 0)].copy()  # half the future orders gone...
    extra = regular_customer("zz-future", AS_OF + pd.Timedelta(days=40), 7, 5)  # ...and others new
    changed = pd.concat([changed, extra], ignore_index=True)
    events = events[(events["occurred_at"] < AS_OF) | (events["type"] == "page_view")]
    refit = ChurnModel(**FAST).fit(changed, AS_OF, events, products=shop["products"])
    assert refit.booster_ is not None
    assert model.booster_ is not None
    assert refit.booster_.model_to_string() == model.booster_.model_to_string()
    assert refit.calibrator_ == model.calibrator_


def test_a_long_gap_against_the_usual_interval_raises_churn(
    model: ChurnModel, shop: dict[str, pd.DataFrame]
) -> None:
    on_time = regular_customer("zz-on-time", AS_OF - pd.Timedelta(days=5), 14, 10)
    lapsed = regular_customer("zz-lapsed", AS_OF - pd.Timedelta(days=120), 14, 10)
    # The same 45 days without an order: overdue for a weekly buyer, not for a bimonthly one.
    weekly = regular_customer("zz-weekly", AS_OF - pd.Timedelta(days=45), 7, 6)
    bimonthly = regular_customer("zz-bimonthly", AS_OF - pd.Timedelta(days=45), 60, 6)
    probes = pd.concat([on_time, lapsed, weekly, bimonthly], ignore_index=True)
    orders = pd.concat([shop["orders"], probes], ignore_index=True)
    # Like every shopper of the synthetic shop, the probes visit the site when they order.
    visits = pd.DataFrame(
        {
            "event_id": "probe-" + probes["order_id"],
            "customer_id": probes["customer_id"],
            "type": "page_view",
            "occurred_at": probes["ordered_at"],
        }
    )
    events = pd.concat([shop["events"], visits], ignore_index=True)
    scored = model.predict(orders, AS_OF, events, products=shop["products"])
    p = scored["churn_probability"]
    assert p["zz-lapsed"] > p["zz-on-time"] + 0.2
    assert p["zz-weekly"] > p["zz-bimonthly"] + 0.1
    assert p.between(0, 1).all()
    assert "no order in 120 days, usually orders every 14 days" in scored.at["zz-lapsed", "reasons"]


def test_reasons_are_plain_words_about_the_features(
    model: ChurnModel, shop: dict[str, pd.DataFrame]
) -> None:
    scored = model.predict(shop["orders"], AS_OF, shop["events"], products=shop["products"])
    reasons = scored["reasons"]
    assert reasons.map(len).between(1, 3).all()
    flat = [text for row in reasons for text in row]
    assert all(text and not any(bad in text for bad in ("nan", "None", "<NA>")) for text in flat)
    assert all(len(set(row)) == len(row) for row in reasons)  # one reason per topic
    words = ("order", "spen", "email", "site", "product", "customer", "buy", "purchase", "return")
    assert all(any(w in text for w in words) for text in flat)


def test_platt_calibration_and_out_of_fold_quality_are_recorded(model: ChurnModel) -> None:
    assert model.calibrator_["kind"] == "platt"
    assert model.validation_["auc"] > 0.8
    assert model.validation_["brier"] < 0.2


def test_save_and_load_give_identical_predictions(
    model: ChurnModel, shop: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    model.save(tmp_path / "churn")
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == ["churn.json", "churn.txt"]
    meta = json.loads((tmp_path / "churn" / "churn.json").read_text())
    assert set(meta["calibrator"]) == {"kind", "slope", "intercept"}
    loaded = ChurnModel.load(tmp_path / "churn")
    args = (shop["orders"], AS_OF, shop["events"])
    first = model.predict(*args, products=shop["products"])
    again = loaded.predict(*args, products=shop["products"])
    pd.testing.assert_frame_equal(first, again)
    assert loaded.get_params() == model.get_params()


@pytest.mark.parametrize(
    ("orders", "as_of", "field"),
    [
        (HAND.drop(columns="quantity"), HAND_AS_OF, "quantity"),
        (HAND.iloc[:0], HAND_AS_OF, "orders"),
        (HAND, "2023-01-01", "as_of"),
        (
            HAND.assign(ordered_at=HAND["ordered_at"].where(HAND.index != 2)),
            HAND_AS_OF,
            "ordered_at",
        ),
        (HAND.assign(unit_price="x"), HAND_AS_OF, "unit_price"),
        (HAND, "not a date", "as_of"),
    ],
)
def test_bad_input_is_a_clear_error(orders: pd.DataFrame, as_of: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        customer_features(orders, as_of)
    with pytest.raises(ValueError, match=field):
        ChurnModel(**FAST).fit(orders, as_of)


def test_too_little_history_and_bad_parameters_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="horizon_days"):
        ChurnModel(**FAST).fit(HAND, "2024-03-01")  # 60 days of history, less than H = 90
    with pytest.raises(ValueError, match="calibration"):
        ChurnModel(calibration="magic").fit(HAND, HAND_AS_OF)
    with pytest.raises(ValueError, match="events"):
        customer_features(HAND, HAND_AS_OF, pd.DataFrame({"customer_id": ["a"]}))


# ----------------------------------------------------------------------------- scoring
def test_score_customers_follows_the_contract(
    model: ChurnModel, shop: dict[str, pd.DataFrame]
) -> None:
    scored = score_customers(
        model, shop["orders"], AS_OF, shop["events"], products=shop["products"]
    )
    assert tuple(scored.columns) == SCORE_COLUMNS
    seen = shop["orders"].loc[shop["orders"]["ordered_at"] < AS_OF, "customer_id"].unique()
    assert sorted(scored["customer_id"]) == sorted(seen)
    assert scored["customer_id"].is_unique
    assert scored[["churn_probability", "p_alive"]].stack().between(0, 1).all()
    assert (scored["expected_purchases"] >= 0).all()
    assert (scored["predicted_value"] >= 0).all()
    assert scored["reasons"].map(type).eq(str).all()
    assert scored["reasons"].str.len().gt(0).all()
    dates = scored["next_order_date"]
    assert (dates.dropna() > AS_OF).all()
    assert dates.isna().eq(scored["p_alive"] <= 0.5).all()  # the median wait is infinite there
    # More expected purchases, more value for the same spend per purchase.
    assert np.corrcoef(scored["expected_purchases"], scored["predicted_value"])[0, 1] > 0.5


def test_one_order_per_customer_falls_back_with_warnings(caplog: pytest.LogCaptureFixture) -> None:
    days = pd.date_range("2025-01-01", periods=300, freq="D")
    orders = lines([(f"c{i}", f"o{i}", "p1", 1, 10.0 + i % 7, str(d)) for i, d in enumerate(days)])
    with caplog.at_level(logging.WARNING):
        model = ChurnModel(**FAST).fit(orders, "2025-10-01")
        scored = score_customers(model, orders, "2025-10-01")
    assert "BG/NBD not fitted" in caplog.text
    assert "Gamma-Gamma not fitted" in caplog.text
    assert "every one of the" in caplog.text  # everyone churned: a constant model
    assert len(scored) == 273
    assert (scored["churn_probability"] == 1.0).all()
    assert (scored["p_alive"] == 1.0).all()
    assert (scored["expected_purchases"] == 0).all()
    assert scored["next_order_date"].isna().all()


def test_evaluate_churn_known_answers() -> None:
    y = np.array([0, 0, 1, 1])
    result = evaluate_churn(y, np.array([0.1, 0.4, 0.35, 0.8]))
    assert result["auc"] == pytest.approx(0.75)  # 3 of the 4 (churner, stayer) pairs in order
    assert result["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    reliability = result["reliability"]
    assert reliability["customers"].sum() == 4
    assert list(reliability["bin_low"]) == pytest.approx([0.1, 0.3, 0.4, 0.8])
    days = evaluate_churn(y, np.array([3.0, 10.0, 40.0, 90.0]))  # a score, not a probability
    assert days["auc"] == 1.0
    assert np.isnan(days["brier"])
    assert days["reliability"].empty
    with pytest.raises(ValueError, match="y_true"):
        evaluate_churn(np.array([1, 1]), np.array([0.2, 0.3]))


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_online_retail_beats_the_baselines_out_of_time(settings: Settings, tmp_path: Path) -> None:
    from personalizer.data.importer import read_feed

    path, _ = online_retail_transactions(tmp_path)
    orders, _ = read_feed(settings, path, "orders")  # the canonical feed, as `train churn` reads it
    table, _model, full = compare_churn(orders, "2011-09-01", model=ChurnModel(num_threads=1))
    print("\nOnline Retail churn, cutoff 2011-09-01, H = 90 (out of time)")
    print(table[["auc", "pr_auc", "brier", "log_loss", "churn_rate", "customers"]].round(4))
    print("reliability of the model:\n", full["reliability"].round(3).to_string(index=False))
    # README: 3,314 customers bought before the cutoff, 43.9% churned (fees kept here: 3,317).
    assert 3_300 <= table.at["model", "customers"] <= 3_330
    assert table.at["model", "churn_rate"] == pytest.approx(0.439, abs=0.005)
    assert table.at["recency", "auc"] == pytest.approx(0.684, abs=0.005)
    assert table.at["model", "auc"] >= 0.74
    assert table.at["model", "brier"] < 0.22
    assert table.at["model", "auc"] > table.at["recency", "auc"]
    assert table.at["model", "auc"] > table.at["rfm_lightgbm", "auc"]
