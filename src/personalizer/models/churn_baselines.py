"""Baselines for churn, and the out-of-time comparison of a model with them on one split.

Baselines (all scored at the same cutoff, for the same customers):
- `recency`: days since the last order (the classic single signal);
- `bgnbd`: BG/NBD's chance of no purchase in the horizon, exp(−expected purchases) (a Poisson
  reading of its conditional expectation; 1 − P(alive) would rank one-time buyers, whom BG/NBD
  counts as alive, as the safest);
- `rfm_lightgbm`: `ChurnModel` restricted to plain RFM (`RFM_FEATURES`), trained out of time
  exactly like the full model, so the comparison isolates what the other features add.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from personalizer.evaluation.churn import evaluate_churn
from personalizer.features.customer_history import CustomerHistory, TimeLike, stamp_of
from personalizer.features.customers import features_at
from personalizer.models.churn import RFM_FEATURES, ChurnModel

METRIC_COLUMNS = ("auc", "pr_auc", "brier", "log_loss", "churn_rate", "customers")


def churn_baselines(
    orders: pd.DataFrame,
    as_of: TimeLike,
    events: pd.DataFrame | None = None,
    *,
    params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Baseline churn scores at `as_of` for every customer who ordered before it.

    Args:
        orders, as_of, events: as for `ChurnModel.fit`.
        params: `ChurnModel` parameters of the model compared (horizon, seed, threads, ...); the
            RFM baseline uses them with `features=RFM_FEATURES`.

    Returns:
        Index `customer_id`; columns `recency` (days since the last order), `bgnbd`
        (exp(−BG/NBD expected purchases in the horizon)) and `rfm_lightgbm` (churn probability).
    """
    rfm = ChurnModel(**{**(params or {}), "features": RFM_FEATURES})
    history = CustomerHistory.build(orders, events, until=as_of)
    features = features_at(history, as_of, rfm.horizon_days)
    rfm.fit(orders, as_of, events)
    return pd.DataFrame(
        {
            "recency": features["recency_days"],
            "bgnbd": np.exp(-features["expected_purchases"]),
            "rfm_lightgbm": rfm.predict_features(features)["churn_probability"],
        }
    )


def compare_churn(
    orders: pd.DataFrame,
    cutoff: TimeLike,
    events: pd.DataFrame | None = None,
    *,
    model: ChurnModel | None = None,
    products: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, ChurnModel, dict[str, Any]]:
    """Out-of-time comparison of a churn model with the baselines on one split.

    The model and the baselines learn from the data before `cutoff`; all are judged on whether
    the customers who ordered before `cutoff` ordered again in [cutoff, cutoff + H).

    Returns:
        The table (rows `model`, `recency`, `bgnbd`, `rfm_lightgbm`; columns `auc`, `pr_auc`,
        `brier`, `log_loss`, `churn_rate`, `customers`), the fitted model, and the model's full
        `evaluate_churn` result (with the reliability table).
    """
    model = ChurnModel() if model is None else model
    stamp = pd.Timestamp(cutoff)
    history = CustomerHistory.build(orders)
    last = stamp_of(float(history.orders.t.max()))
    if last < stamp + pd.Timedelta(days=model.horizon_days - 1):
        raise ValueError(
            f"cutoff: the orders end at {last}, before cutoff + horizon_days "
            f"({stamp + pd.Timedelta(days=model.horizon_days)}); the outcome is not observed"
        )
    truth = history.churned(stamp, model.horizon_days)
    model.fit(orders, stamp, events, products=products)
    predicted = model.predict(orders, stamp, events, products=products)["churn_probability"]
    baselines = churn_baselines(orders, stamp, events, params=model.get_params())
    scores = pd.concat([predicted.rename("model"), baselines], axis=1).reindex(truth.index)
    results = {name: evaluate_churn(truth, scores[name]) for name in scores.columns}
    table = pd.DataFrame(
        {name: {k: v for k, v in r.items() if k != "reliability"} for name, r in results.items()}
    ).T
    return table, model, results["model"]
