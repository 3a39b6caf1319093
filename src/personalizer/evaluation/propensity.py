"""How well engagement propensities rank and calibrate, out of time, against simple baselines.

`evaluate_engagement` fits (or takes) an `EngagementModel` on the data before a cutoff and scores
every email sent from the cutoff until the data ends (less the outcome window, so each scored send
has a complete outcome), against two baselines on the same sends:

- `historical_rate`: the customer's own smoothed rate (Beta prior at the training rate) of
  opening, clicking, or buying within the window after an email;
- `global_rate`: the training rate of the target for everyone (AUC 0.5 by construction; its Brier
  score is the bar calibration must clear).

`hillstrom_propensity` is the purchase-propensity check on real data: Hillstrom's emailed
customers (Mens and Womens E-Mail), P(visit) and P(conversion) within the two weeks after the
email, LightGBM on `hillstrom_features` against a recency-only logistic regression, a logistic
regression on every feature, and the global rate, on a stratified 50/50 split.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from personalizer.evaluation.split import to_utc_timestamp
from personalizer.features.email_history import (
    HISTORICAL_RATE,
    LABELS,
    EmailHistory,
    TimeLike,
)
from personalizer.features.engagement_times import naive_utc, require_columns
from personalizer.models.propensity import (
    EngagementModel,
    apply_calibrator,
    binary_metrics,
    fit_booster,
    fit_calibrator,
)
from personalizer.models.uplift import hillstrom_features

log = logging.getLogger(__name__)

METHODS = ("model", "historical_rate", "global_rate")
HILLSTROM_TARGETS = ("visit", "conversion")
HILLSTROM_CONTROL = "No E-Mail"


def evaluate_engagement(
    events: pd.DataFrame,
    orders: pd.DataFrame,
    cutoff: TimeLike,
    *,
    model: EngagementModel | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """Out-of-time AUC, PR-AUC and Brier per target of the model and the baselines.

    Args:
        events: Canonical events, before and after the cutoff.
        orders: Order lines, before and after the cutoff.
        cutoff: The model learns from the data before it and is scored on the sends from it.
        model: An unfitted model (fitted here on the data before `cutoff`) or one fitted with
            `until` no later than `cutoff`; None fits `EngagementModel()`.
        end: When the data ends; sends after `end − window_days` are not scored. None takes the
            last event or order.

    Returns:
        One row per (target, method) with `auc`, `pr_auc`, `brier`, `n`, `positive_rate`.

    Raises:
        ValueError: When `model` was fitted on data from `cutoff` on, or no send can be scored.
    """
    stop = to_utc_timestamp(cutoff, "cutoff")
    model = model if model is not None else EngagementModel()
    if not hasattr(model, "boosters_"):
        model.fit(events, orders, stop)
    elif pd.Timestamp(model.until_) > stop:
        raise ValueError(f"model: fitted until {model.until_}, after the cutoff {stop}")
    last = _last_timestamp(events, orders) if end is None else to_utc_timestamp(end, "end")
    history = EmailHistory(events, orders, window_days=model.window_days)
    sends = history.sends_before(last - pd.Timedelta(days=model.window_days))
    sends = sends[sends["sent_at"] >= stop].reset_index(drop=True)
    if sends.empty:
        raise ValueError(f"cutoff: no email sent between {stop} and the end of the data")
    X = history.features(sends.rename(columns={"sent_at": "at"}), model.priors_)
    labels = history.labels(sends)
    scores = model.predict_features(X)
    rows = []
    for target in model.targets:
        y = labels[LABELS[target]].to_numpy(float)
        predictions = {
            "model": scores[f"p_{target}"].to_numpy(float),
            "historical_rate": X[HISTORICAL_RATE[target]].to_numpy(float),
            "global_rate": np.full(len(y), model.priors_[target]),
        }
        for method, p in predictions.items():
            rows.append({"target": target, "method": method, **binary_metrics(y, p)})
    table = pd.DataFrame(rows)
    log.info("engagement propensity out of time from %s:\n%s", stop, table.to_string())
    return table


def hillstrom_propensity(
    df: pd.DataFrame,
    *,
    test_size: float = 0.5,
    seed: int = 42,
    model: EngagementModel | None = None,
) -> pd.DataFrame:
    """Purchase-propensity check on Hillstrom: P(visit), P(conversion) of the emailed customers.

    Args:
        df: The Hillstrom table (columns of `hillstrom_features`, `segment`, `visit`,
            `conversion`).
        test_size: Share of the emailed customers scored (stratified by each target).
        seed: Seed of the split.
        model: Source of the LightGBM parameters and calibration; None uses the defaults.

    Returns:
        One row per (target, method) with `auc`, `pr_auc`, `brier`, `n`, `positive_rate`;
        methods `lightgbm`, `logistic` (every feature), `recency_logistic`, `global_rate`.
    """
    require_columns(df, "hillstrom", ("segment", *HILLSTROM_TARGETS))
    model = model if model is not None else EngagementModel(seed=seed)
    treated = df[df["segment"] != HILLSTROM_CONTROL]
    if treated.empty:
        raise ValueError("hillstrom.segment: no emailed customers")
    X = hillstrom_features(treated).to_numpy(dtype=float)
    recency = treated[["recency"]].to_numpy(dtype=float)
    rows = []
    for target in HILLSTROM_TARGETS:
        y = treated[target].to_numpy(dtype=float)
        train, test = train_test_split(
            np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y
        )
        # A stratified fifth of the training half early-stops and calibrates the booster.
        _, held_rows = train_test_split(
            np.arange(len(train)), test_size=0.2, random_state=seed, stratify=y[train]
        )
        held = np.zeros(len(train), dtype=bool)
        held[held_rows] = True
        booster, margin = fit_booster(
            model.lgb_params(),
            X[train],
            y[train],
            held,
            max_rounds=model.max_rounds,
            early_stopping_rounds=model.early_stopping_rounds,
        )
        calibrator = fit_calibrator(model.calibration, margin, y[train][held])
        predictions = {
            "lightgbm": apply_calibrator(
                calibrator, np.asarray(booster.predict(X[test], raw_score=True), dtype=float)
            ),
            "logistic": _logistic(X[train], y[train], X[test]),
            "recency_logistic": _logistic(recency[train], y[train], recency[test]),
            "global_rate": np.full(len(test), y[train].mean()),
        }
        for method, p in predictions.items():
            rows.append({"target": target, "method": method, **binary_metrics(y[test], p)})
    return pd.DataFrame(rows)


def _logistic(X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return np.asarray(pipe.fit(X, y).predict_proba(X_test)[:, 1], dtype=float)


def _last_timestamp(events: pd.DataFrame, orders: pd.DataFrame) -> pd.Timestamp:
    require_columns(events, "events", ("occurred_at",))
    require_columns(orders, "orders", ("ordered_at",))
    stamps = [
        naive_utc(events["occurred_at"], "events.occurred_at").max(),
        naive_utc(orders["ordered_at"], "orders.ordered_at").max(),
    ]
    valid = [s for s in stamps if not pd.isna(s)]
    if not valid:
        raise ValueError("events: no timestamps")
    return max(valid)
