"""Uplift metrics: how well a score ranks the customers whom a treatment (an email) moves most.

Inputs are one row per customer of a randomised test: outcome `y` (1 = responded), `treatment`
(1 = treated, 0 = control) and the model's `score` (predicted uplift; higher = target first).
Customers are ordered by descending score, ties as scikit-uplift breaks them (a stable ascending
sort, reversed), so the figures equal scikit-uplift's (`sklift.metrics`, v0.5) on the same data:

- uplift@k, strategy "overall": of the first ⌊k·n⌋ customers, the response rate of the treated
  minus that of the control;
- uplift@k, strategy "by_group": the first ⌊k·n_t⌋ treated and the first ⌊k·n_c⌋ control
  customers, each in score order, and the same difference;
- Qini curve at each distinct score threshold (x = customers above it):
  Q(x) = R_t(x) − R_c(x) · N_t(x) / N_c(x), responders R and counts N of each group above x;
- uplift curve: U(x) = (R_t(x)/N_t(x) − R_c(x)/N_c(x)) · x;
- Qini AUC score (the "Qini coefficient"): (area under Q − area under the random line from
  (0, 0) to the curve's end) / (the same for the perfect curve), areas by the trapezoid rule.
  The perfect curve ranks treated responders first and control responders last.

Every function is pure numpy (the percentile table is returned as a DataFrame).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

import numpy as np
import pandas as pd

Strategy = Literal["overall", "by_group"]
STRATEGIES: tuple[str, ...] = ("overall", "by_group")


def uplift_at_k(
    y: np.ndarray,
    treatment: np.ndarray,
    score: np.ndarray,
    k: float | int = 0.3,
    strategy: Strategy = "overall",
) -> float:
    """Response rate of the treated minus that of the control among the top `k` by score.

    Args:
        y: Outcomes, one per customer (binary, or any number such as spend).
        treatment: 1 for treated customers, 0 for control.
        score: Predicted uplift; the highest come first.
        k: Share of customers in (0, 1), or a count in [1, n).
        strategy: "overall" takes the top ⌊k·n⌋ of everyone; "by_group" takes the top
            ⌊k·n_t⌋ of the treated and the top ⌊k·n_c⌋ of the control separately.

    Returns:
        The uplift among the targeted customers.

    Raises:
        ValueError: On inputs of different lengths, a treatment that is not 0/1 or lacks a group,
            a `k` out of range, an unknown `strategy`, or a top-k without one of the groups.
    """
    y, treatment, score = _check(y, treatment, score)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    order = _descending(score)
    y, treatment = y[order], treatment[order]
    treated = treatment == 1
    if strategy == "overall":
        top = _top_count(k, len(y))
        y_top, treated_top = y[:top], treated[:top]
        if treated_top.all() or not treated_top.any():
            group = "control" if treated_top.all() else "treated"
            raise ValueError(
                f"the top k={k} ({top} customers) holds no {group} customer: uplift is undefined"
            )
        return float(y_top[treated_top].mean() - y_top[~treated_top].mean())
    y_treated, y_control = y[treated], y[~treated]
    n_treated = _top_count(k, len(y_treated)) if _is_share(k) else _top_count(k, len(y))
    n_control = _top_count(k, len(y_control)) if _is_share(k) else n_treated
    if n_treated > len(y_treated) or n_control > len(y_control):
        raise ValueError(
            f"k={k} exceeds a group: {len(y_treated)} treated, {len(y_control)} control customers"
        )
    return float(y_treated[:n_treated].mean() - y_control[:n_control].mean())


def qini_curve(
    y: np.ndarray, treatment: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points (customers targeted, Qini value) at each distinct score, starting at (0, 0).

    Q(x) = R_t(x) − R_c(x) · N_t(x) / N_c(x): the incremental responders among the first x
    customers, the control's responders scaled to the size of the treated group.
    """
    x, responders_t, responders_c, n_t, n_c = _cumulative(*_check(y, treatment, score))
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0)
    return _from_origin(x, responders_t - responders_c * ratio)


def uplift_curve(
    y: np.ndarray, treatment: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points (customers targeted, uplift curve value) at each distinct score, from (0, 0).

    U(x) = (R_t(x)/N_t(x) − R_c(x)/N_c(x)) · x: the uplift among the first x customers, times x
    (a rate of a group with nobody counts as 0).
    """
    x, responders_t, responders_c, n_t, n_c = _cumulative(*_check(y, treatment, score))
    rate_t = np.divide(responders_t, n_t, out=np.zeros_like(responders_t), where=n_t != 0)
    rate_c = np.divide(responders_c, n_c, out=np.zeros_like(responders_c), where=n_c != 0)
    return _from_origin(x, (rate_t - rate_c) * x)


def perfect_qini_curve(
    y: np.ndarray, treatment: np.ndarray, negative_effect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The best Qini curve the outcomes allow (scikit-uplift's `perfect_qini_curve`).

    With `negative_effect`, treated responders come first and control responders last; without,
    the curve rises straight to the total incremental responders and stays there.
    """
    y, treatment, _ = _check(y, treatment, np.zeros(len(np.asarray(y))), binary_y=True)
    if negative_effect:
        return qini_curve(y, treatment, y * treatment - y * (1 - treatment))
    treated = treatment == 1
    gain = y[treated].sum() - treated.sum() * y[~treated].sum() / (~treated).sum()
    return np.array([0.0, gain, float(len(y))]), np.array([0.0, gain, gain])


def qini_auc_score(
    y: np.ndarray, treatment: np.ndarray, score: np.ndarray, negative_effect: bool = True
) -> float:
    """Area between the Qini curve and the random line, over the same for the perfect curve.

    1 is a perfect ranking, 0 is random, below 0 is worse than random. `y` must be binary.
    """
    y, treatment, score = _check(y, treatment, score, binary_y=True)
    return _normalised_area(
        qini_curve(y, treatment, score), perfect_qini_curve(y, treatment, negative_effect)
    )


def uplift_auc_score(y: np.ndarray, treatment: np.ndarray, score: np.ndarray) -> float:
    """Area under the uplift curve above the random line, over the same for the perfect curve."""
    y, treatment, score = _check(y, treatment, score, binary_y=True)
    control_responders = np.sum((y == 1) & (treatment == 0))
    treated_non_responders = np.sum((y == 0) & (treatment == 1))
    summand = y if control_responders > treated_non_responders else treatment
    perfect = 2.0 * (y == treatment) + summand
    return _normalised_area(uplift_curve(y, treatment, score), uplift_curve(y, treatment, perfect))


def uplift_by_percentile(
    y: np.ndarray,
    treatment: np.ndarray,
    score: np.ndarray,
    bins: int = 10,
    strategy: Strategy = "overall",
) -> pd.DataFrame:
    """Group sizes, response rates and uplift in each of `bins` score bins, best bin first.

    With "overall" the customers are split into `bins` near-equal bins by score; with
    "by_group" the treated and the control are split separately. A bin without one of the
    groups has a NaN rate and uplift.

    Returns:
        One row per bin with columns `percentile` ("0-10", …), `n_treatment`, `n_control`,
        `response_rate_treatment`, `response_rate_control`, `uplift`.
    """
    y, treatment, score = _check(y, treatment, score)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 0 < bins < len(y):
        raise ValueError(f"bins must be an integer in [1, {len(y)}), got {bins!r}")
    order = _descending(score)
    y, treated = y[order].astype(float), treatment[order] == 1
    if strategy == "overall":
        y_bins = np.array_split(y, bins)
        t_bins = np.array_split(treated, bins)
        treated_bins = [v[t] for v, t in zip(y_bins, t_bins, strict=True)]
        control_bins = [v[~t] for v, t in zip(y_bins, t_bins, strict=True)]
    else:
        treated_bins = np.array_split(y[treated], bins)
        control_bins = np.array_split(y[~treated], bins)
    n_t = np.array([len(b) for b in treated_bins])
    n_c = np.array([len(b) for b in control_bins])
    rate_t = np.array([b.mean() if len(b) else np.nan for b in treated_bins])
    rate_c = np.array([b.mean() if len(b) else np.nan for b in control_bins])
    edges = [round(p * 100 / bins) for p in range(bins + 1)]
    return pd.DataFrame(
        {
            "percentile": [f"{a}-{b}" for a, b in pairwise(edges)],
            "n_treatment": n_t,
            "n_control": n_c,
            "response_rate_treatment": rate_t,
            "response_rate_control": rate_c,
            "uplift": rate_t - rate_c,
        }
    )


# ---------------------------------------------------------------------- helpers
def _check(
    y: np.ndarray, treatment: np.ndarray, score: np.ndarray, binary_y: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three inputs as flat float/int arrays, or a ValueError that names the culprit."""
    arrays = {"y": np.asarray(y), "treatment": np.asarray(treatment), "score": np.asarray(score)}
    for name, values in arrays.items():
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    lengths = {name: len(values) for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"y, treatment and score must have the same length, got {lengths}")
    if lengths["y"] == 0:
        raise ValueError("y, treatment and score are empty")
    y_arr, t_arr, s_arr = arrays["y"], arrays["treatment"], arrays["score"]
    for name, values in (("y", y_arr), ("score", s_arr)):
        if values.dtype.kind not in "biuf" or not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be finite numbers, got dtype {values.dtype}")
    if binary_y and not np.isin(y_arr, (0, 1)).all():
        raise ValueError(f"y must be binary (0/1), got values {np.unique(y_arr)[:5].tolist()}")
    if t_arr.dtype.kind not in "biuf" or not np.isin(t_arr, (0, 1)).all():
        raise ValueError(f"treatment must be 0/1, got values {np.unique(t_arr)[:5].tolist()}")
    t_int = t_arr.astype(np.int64)
    if t_int.min() == t_int.max():
        raise ValueError(
            f"treatment must hold both groups (0 = control, 1 = treated), got only {t_int[0]}"
        )
    return y_arr.astype(float), t_int, s_arr.astype(float)


def _descending(score: np.ndarray) -> np.ndarray:
    # scikit-uplift's order: a stable ascending sort reversed, so tied scores come last-row first.
    return np.argsort(score, kind="mergesort")[::-1]


def _is_share(k: float | int) -> bool:
    return np.asarray(k).dtype.kind == "f"


def _top_count(k: float | int, n: int) -> int:
    kind = np.asarray(k).dtype.kind
    if kind == "f" and 0.0 < float(k) < 1.0:
        count = int(n * float(k))
    elif kind in "iu" and 0 < int(k) < n:
        count = int(k)
    else:
        raise ValueError(f"k must be a share in (0, 1) or a count in [1, {n}), got {k!r}")
    if count == 0:
        raise ValueError(f"k={k} of {n} customers selects nobody")
    return count


def _cumulative(y: np.ndarray, treatment: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Customers, responders and group sizes above each distinct score threshold."""
    order = _descending(score)
    y, treatment, score = y[order], treatment[order], score[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    n_t = np.cumsum(treatment, dtype=float)[last]
    responders_t = np.cumsum(y * treatment)[last]
    responders_c = np.cumsum(y * (1 - treatment))[last]
    x = (last + 1).astype(float)
    return x, responders_t, responders_c, n_t, x - n_t


def _from_origin(x: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[0.0, x], np.r_[0.0, values]


def _area(x: np.ndarray, values: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (values[1:] + values[:-1]) / 2.0))


def _normalised_area(
    actual: tuple[np.ndarray, np.ndarray], perfect: tuple[np.ndarray, np.ndarray]
) -> float:
    x_perfect, y_perfect = perfect
    baseline = x_perfect[-1] * y_perfect[-1] / 2.0
    best = _area(*perfect) - baseline
    if best == 0:
        raise ValueError("the perfect curve is no better than random: the score is undefined")
    return (_area(*actual) - baseline) / best
