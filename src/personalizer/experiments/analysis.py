"""Fixed-horizon analysis of an A/B test: per-variant rates and means, differences, p-values.

Input is one row per customer: the variant, and outcome columns. Binary outcomes (0/1: clicked,
converted, visited) get a rate with a Wilson score interval, and each variant's difference from
the control a Newcombe hybrid-score interval (Newcombe 1998, method 10, built from the two Wilson
intervals) with a pooled two-proportion z-test. Other numeric outcomes (revenue) get a mean with a
t interval, and the difference Welch's t interval and test. All intervals are two-sided.

These figures are valid when the sample size was fixed in advance; `experiments.sequential`
gives p-values and intervals that stay valid when results are looked at as they come in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
COLUMNS = (
    "metric",
    "kind",
    "variant",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "diff",
    "diff_low",
    "diff_high",
    "relative_lift",
    "p_value",
)
"""Columns of `analyze`'s table (difference columns are NaN on the control's rows)."""


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(
    successes: float | np.ndarray, n: float | np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion (vectorised).

    Unlike the Wald interval it stays inside [0, 1] and keeps near-nominal coverage for rates
    close to 0, the usual case for email conversions.

    Args:
        successes: number of successes (scalar or array).
        n: number of trials, > 0 (scalar or array).
        confidence: two-sided confidence level.

    Returns:
        Lower and upper bounds, as arrays.
    """
    z = _z(confidence)
    x, m = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if np.any(m <= 0) or np.any(x < 0) or np.any(x > m):
        raise ValueError(f"successes/n: need 0 <= successes <= n and n > 0, got {x} of {m}")
    p = x / m
    denominator = 1.0 + z**2 / m
    centre = (p + z**2 / (2.0 * m)) / denominator
    half = z * np.sqrt(p * (1.0 - p) / m + z**2 / (4.0 * m**2)) / denominator
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


@dataclass(frozen=True)
class Comparison:
    """A treatment compared with a control on one outcome.

    Attributes:
        control: control mean (a rate for binary outcomes).
        treatment: treatment mean.
        diff: treatment − control.
        diff_low: lower bound of the difference's interval.
        diff_high: upper bound.
        relative_lift: diff / control (NaN when the control mean is 0).
        p_value: two-sided p-value of "no difference".
    """

    control: float
    treatment: float
    diff: float
    diff_low: float
    diff_high: float
    relative_lift: float
    p_value: float


def compare_proportions(
    successes_treatment: int,
    n_treatment: int,
    successes_control: int,
    n_control: int,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Difference of two rates: Newcombe interval and pooled two-proportion z-test.

    Args:
        successes_treatment: successes in the treatment.
        n_treatment: customers in the treatment.
        successes_control: successes in the control.
        n_control: customers in the control.
        confidence: two-sided confidence level of the interval.

    Returns:
        The comparison (rates, difference with interval, relative lift, p-value).
    """
    p1, p0 = successes_treatment / n_treatment, successes_control / n_control
    l1, u1 = (float(v) for v in wilson_interval(successes_treatment, n_treatment, confidence))
    l0, u0 = (float(v) for v in wilson_interval(successes_control, n_control, confidence))
    diff = p1 - p0
    low = diff - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    pooled = (successes_treatment + successes_control) / (n_treatment + n_control)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_treatment + 1.0 / n_control))
    p_value = 1.0 if se == 0 else float(2.0 * stats.norm.sf(abs(diff) / se))
    lift = diff / p0 if p0 > 0 else math.nan
    return Comparison(p0, p1, diff, low, high, lift, p_value)


def compare_means(
    treatment: np.ndarray, control: np.ndarray, confidence: float = CONFIDENCE
) -> Comparison:
    """Difference of two means (revenue per customer): Welch's t interval and test.

    Args:
        treatment: one value per treated customer.
        control: one value per control customer.
        confidence: two-sided confidence level of the interval.

    Returns:
        The comparison (means, difference with interval, relative lift, p-value).
    """
    a, b = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 customers per group, got {len(a)} and {len(b)}")
    m1, m0 = float(a.mean()), float(b.mean())
    diff = m1 - m0
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(m0, m1, diff, diff, diff, _ratio(diff, m0), 1.0 if diff == 0 else 0.0)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t_crit = float(stats.t.ppf(0.5 + confidence / 2.0, dof))
    p_value = float(2.0 * stats.t.sf(abs(diff) / se, dof))
    return Comparison(
        m0, m1, diff, diff - t_crit * se, diff + t_crit * se, _ratio(diff, m0), p_value
    )


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student t interval of a mean (a single value gives a zero-width interval)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2.0, len(x) - 1)) * float(
        x.std(ddof=1) / math.sqrt(len(x))
    )
    return mean - half, mean + half


def is_binary(values: pd.Series) -> bool:
    """Whether a column holds only 0 and 1 (booleans included)."""
    return bool(values.isin([0, 1]).all())


def outcome_columns(frame: pd.DataFrame, variant_col: str) -> list[str]:
    """The numeric columns of `frame` other than the variant and `customer_id`."""
    skip = {variant_col, "customer_id"}
    return [
        str(c)
        for c in frame.columns
        if c not in skip
        and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]


def check_frame(
    frame: pd.DataFrame, variant_col: str, control: str, outcomes: Sequence[str]
) -> None:
    """Raise a ValueError naming the column or value that makes `frame` unusable."""
    if variant_col not in frame.columns:
        raise ValueError(
            f"variant column {variant_col!r} not found (columns: {[str(c) for c in frame.columns]})"
        )
    variants = sorted(frame[variant_col].astype(str).unique())
    if control not in variants:
        raise ValueError(f"control variant {control!r} not found in {variant_col!r} ({variants})")
    if len(variants) < 2:
        raise ValueError(f"{variant_col!r} holds only the control {control!r}; nothing to compare")
    if not outcomes:
        raise ValueError("no numeric outcome column to analyse")
    for column in outcomes:
        if column not in frame.columns:
            raise ValueError(f"outcome column {column!r} not found")
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise ValueError(f"outcome column {column!r} is not numeric (dtype {values.dtype})")
        missing = int(values.isna().sum())
        if missing:
            raise ValueError(f"outcome column {column!r} has {missing} missing value(s)")
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            raise ValueError(f"outcome column {column!r} has infinite value(s)")
    counts = frame[variant_col].astype(str).value_counts()
    small = sorted(v for v, n in counts.items() if n < 2)
    if small:
        raise ValueError(f"variant(s) {small} have fewer than 2 customers")


def analyze(
    frame: pd.DataFrame,
    variant_col: str = "variant",
    control: str = "control",
    outcomes: Sequence[str] | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per-variant table of every outcome, each variant compared with the control.

    Args:
        frame: one row per customer, with the variant and the outcome columns.
        variant_col: column holding the variant.
        control: the control variant's name.
        outcomes: outcome columns (default: every numeric column but `customer_id`).
        confidence: two-sided confidence level of all intervals.

    Returns:
        One row per (metric, variant), control first, with the columns of `COLUMNS`:
        `kind` is "rate" for a 0/1 outcome (`mean` is then its rate, the interval Wilson's)
        and "mean" otherwise (t interval); `diff`, `relative_lift` and `p_value` compare
        with the control (NaN on its own rows).

    Raises:
        ValueError: naming the missing column, unknown control, or bad values.
    """
    _z(confidence)
    chosen = list(outcomes) if outcomes is not None else outcome_columns(frame, variant_col)
    check_frame(frame, variant_col, control, chosen)
    variants = frame[variant_col].astype(str)
    order = [control, *sorted(set(variants) - {control})]
    groups = {name: frame.loc[variants == name] for name in order}
    rows = []
    for metric in chosen:
        binary = is_binary(frame[metric])
        base = groups[control][metric].to_numpy(dtype=float)
        for name in order:
            values = groups[name][metric].to_numpy(dtype=float)
            if binary:
                low, high = (
                    float(v) for v in wilson_interval(values.sum(), len(values), confidence)
                )
            else:
                low, high = mean_interval(values, confidence)
            row = {
                "metric": metric,
                "kind": "rate" if binary else "mean",
                "variant": name,
                "n": len(values),
                "mean": float(values.mean()),
                "ci_low": low,
                "ci_high": high,
            }
            if name != control:
                comparison = (
                    compare_proportions(
                        int(values.sum()), len(values), int(base.sum()), len(base), confidence
                    )
                    if binary
                    else compare_means(values, base, confidence)
                )
                row |= {
                    "diff": comparison.diff,
                    "diff_low": comparison.diff_low,
                    "diff_high": comparison.diff_high,
                    "relative_lift": comparison.relative_lift,
                    "p_value": comparison.p_value,
                }
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def block_uplift(
    frame: pd.DataFrame,
    outcome: str = "clicked",
    block_col: str = "block",
    personalized: str = "personalized",
    generic: str = "generic",
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Uplift of a personalized content block over a generic one on a binary outcome.

    The use case: customers were randomised between an email whose block is personalized
    (recommendations, predicted category) and the same email with a generic block (bestsellers);
    the uplift is the personalized click (or conversion) rate minus the generic one, with a
    Newcombe interval and a two-proportion z-test.

    Args:
        frame: one row per customer who got the email.
        outcome: binary outcome column (clicked, converted).
        block_col: column naming the block each customer saw.
        personalized: value of `block_col` for the personalized block (the "treatment").
        generic: value for the generic block (the "control").
        confidence: two-sided confidence level.

    Returns:
        The comparison: `treatment` is the personalized rate, `control` the generic one.
    """
    check_frame(frame, block_col, generic, [outcome])
    if not is_binary(frame[outcome]):
        raise ValueError(f"outcome column {outcome!r} must be 0/1")
    blocks = frame[block_col].astype(str)
    if personalized not in set(blocks):
        raise ValueError(f"block {personalized!r} not found in {block_col!r}")
    chosen = frame.loc[blocks == personalized, outcome]
    base = frame.loc[blocks == generic, outcome]
    return compare_proportions(
        int(chosen.sum()), len(chosen), int(base.sum()), len(base), confidence
    )


def _ratio(diff: float, base: float) -> float:
    return diff / base if base != 0 else math.nan
