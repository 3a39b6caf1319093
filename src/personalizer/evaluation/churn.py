"""Churn metrics: how well scores rank churners, and how true their probabilities are.

`evaluate_churn` reports AUC, PR-AUC (average precision), Brier score and log loss, and the table
behind a reliability plot (mean predicted probability against the observed churn rate per
probability bin). Scores that are not probabilities (days since the last order) get the ranking
metrics only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

RELIABILITY_COLUMNS = ("bin_low", "bin_high", "customers", "mean_predicted", "observed_rate")


def evaluate_churn(
    y_true: np.ndarray | pd.Series, p: np.ndarray | pd.Series, *, n_bins: int = 10
) -> dict[str, Any]:
    """Discrimination and calibration of churn scores.

    Args:
        y_true: 1 = churned, 0 = stayed.
        p: scores, higher = more likely to churn. Brier, log loss and the reliability table need
            probabilities; for other scores (e.g. days since the last order) they are NaN / empty.
        n_bins: equal-width probability bins of the reliability table.

    Returns:
        `auc`, `pr_auc` (average precision), `brier`, `log_loss`, `churn_rate`, `customers`, and
        `reliability`: a DataFrame with one row per non-empty bin (`bin_low`, `bin_high`,
        `customers`, `mean_predicted`, `observed_rate`), the data of a reliability plot.
    """
    y = np.asarray(y_true, dtype=float).ravel()
    score = np.asarray(p, dtype=float).ravel()
    if len(y) != len(score):
        raise ValueError(f"y_true and p differ in length: {len(y)} and {len(score)}")
    if len(y) == 0 or not np.isin(y, (0.0, 1.0)).all() or y.min() == y.max():
        raise ValueError("y_true: need 0/1 labels with both classes")
    if not np.isfinite(score).all():
        raise ValueError("p: scores must be finite")
    out: dict[str, Any] = {
        "auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "brier": np.nan,
        "log_loss": np.nan,
        "churn_rate": float(y.mean()),
        "customers": len(y),
        "reliability": pd.DataFrame(columns=list(RELIABILITY_COLUMNS)),
    }
    if score.min() >= 0 and score.max() <= 1:
        clipped = np.clip(score, 1e-15, 1 - 1e-15)
        out["brier"] = float(np.mean((score - y) ** 2))
        out["log_loss"] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        which = np.clip(np.digitize(score, edges[1:-1]), 0, n_bins - 1)
        table = pd.DataFrame({"bin": which, "p": score, "y": y}).groupby("bin")
        stats = table.agg(
            customers=("y", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean")
        )
        stats.insert(0, "bin_high", edges[stats.index + 1])
        stats.insert(0, "bin_low", edges[stats.index])
        out["reliability"] = stats.reset_index(drop=True)
    return out
