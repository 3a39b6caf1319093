"""Scoring every customer for `personalizer score churn`: churn, life and value in one table.

The contract columns, one row per customer who ordered before `as_of`:
`customer_id, churn_probability, p_alive, expected_purchases, predicted_value, next_order_date,
reasons`. Churn and its reasons come from a fitted `ChurnModel`; P(alive), expected purchases over
the model's horizon and the next order date from BG/NBD, and the predicted value from Gamma-Gamma
(expected value per purchase; customers without repeat purchases get the population mean) times the
expected purchases. BG/NBD and Gamma-Gamma are fitted here on the history before `as_of`, with the
fallbacks of `personalizer.models.lifetime` for shops where they cannot be.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from personalizer.features.customer_history import CustomerHistory, TimeLike, stamp_of
from personalizer.features.customers import features_at
from personalizer.models.churn import ChurnModel

log = logging.getLogger(__name__)

SCORE_COLUMNS = (
    "customer_id",
    "churn_probability",
    "p_alive",
    "expected_purchases",
    "predicted_value",
    "next_order_date",
    "reasons",
)
REASON_SEPARATOR = "; "
MAX_WAIT_DAYS = 36_525.0  # next_order_date is NaT beyond a century


def score_customers(
    model: ChurnModel,
    orders: pd.DataFrame,
    as_of: TimeLike,
    events: pd.DataFrame | None = None,
    *,
    products: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The contract table for every customer who ordered before `as_of`, sorted by customer_id.

    Args:
        model: a fitted (or loaded) churn model; its `horizon_days` is the horizon of
            `expected_purchases` and `predicted_value`.
        orders: order lines (schema columns); only those before `as_of` are used.
        as_of: the scoring moment; `next_order_date` counts from it.
        events: optional events, as for `customer_features`.
        products: optional catalog with `category`.

    Returns:
        Columns `SCORE_COLUMNS`: `next_order_date` is NaT where the next order may never come
        (P(alive) ≤ ½, so the median wait is infinite) or is more than a century away;
        `reasons` is one string, reasons joined by "; ".
    """
    history = CustomerHistory.build(orders, events, products, until=as_of)
    now = history.check_as_of(as_of)
    lifetime = history.lifetime_models(as_of, spend=True, seed=model.seed)
    features = features_at(history, as_of, model.horizon_days, lifetime=lifetime)
    churn = model.predict_features(features)
    summary = history.rfm_summary(as_of, lifetime.unit).reindex(features.index)
    expected = features["expected_purchases"].to_numpy(dtype=float)
    wait = lifetime.next_order_in_days(summary)
    start = stamp_of(now)
    # A wait of centuries means "not coming back" as surely as an infinite one, and would not fit
    # in a nanosecond timestamp.
    waits = pd.to_timedelta(np.where(wait < MAX_WAIT_DAYS, wait, np.nan), unit="D")
    table = pd.DataFrame(
        {
            "customer_id": features.index.astype(str),
            "churn_probability": churn["churn_probability"].to_numpy(dtype=float),
            "p_alive": features["p_alive"].to_numpy(dtype=float),
            "expected_purchases": expected,
            "predicted_value": lifetime.value_per_purchase(summary) * expected,
            "next_order_date": (start + waits).astype("datetime64[us]"),
            "reasons": [REASON_SEPARATOR.join(r) for r in churn["reasons"]],
        }
    )
    log.info("scored %d customers as of %s", len(table), start)
    return table.loc[:, list(SCORE_COLUMNS)].reset_index(drop=True)
