"""Always-valid inference: p-values and confidence sequences that allow peeking.

A fixed-horizon z-test is valid once, at the sample size planned in advance; checking it after
every batch and stopping at the first p < 0.05 inflates the false-positive rate to 20-30%.
The mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari, Pekelis & Walsh,
"Always valid inference", 2017/2022, the basis of Optimizely's stats engine) does not.

With the difference of means θ̂ = x̄_t − x̄_c, its variance V = s²_t/n_t + s²_c/n_c (normal
approximation, plug-in variances) and a normal mixture θ ~ N(θ₀, τ²) over the alternatives, the
likelihood ratio against θ = θ₀ is

    Λ = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 V (V + τ²))),

a martingale under the null, so P(Λ ever ≥ 1/α) ≤ α (Ville's inequality). The always-valid
p-value is the running minimum of min(1, 1/Λ); the confidence sequence is the running
intersection of the θ₀ not rejected:

    θ̂ ± sqrt(V (V + τ²) / τ² · (log((V + τ²) / V) − 2 log α)).

τ is given as a standardised effect size (τ = effect_size · σ̂, σ̂ the pooled standard deviation
of one customer's outcome), so one default suits rates and revenue alike: the test is most
powerful for effects near τ and still valid for any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalizer.experiments.analysis import check_frame, is_binary, outcome_columns

ALPHA = 0.05
EFFECT_SIZE = 0.05
"""Default mixture scale in standard deviations of one customer's outcome (a small effect)."""


@dataclass(frozen=True)
class SequentialResult:
    """mSPRT figures, one per look (arrays of the inputs' broadcast shape).

    Attributes:
        diff: treatment mean − control mean.
        p_value: always-valid p-value.
        ci_low: lower end of the (1 − alpha) confidence sequence.
        ci_high: upper end.
    """

    diff: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def _check(effect_size: float, alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha!r}")
    if not effect_size > 0.0:
        raise ValueError(f"effect_size: must be > 0, got {effect_size!r}")


def mixture_sprt(
    mean_t: np.ndarray | float,
    var_t: np.ndarray | float,
    n_t: np.ndarray | float,
    mean_c: np.ndarray | float,
    var_c: np.ndarray | float,
    n_c: np.ndarray | float,
    effect_size: float = EFFECT_SIZE,
    alpha: float = ALPHA,
) -> SequentialResult:
    """The mSPRT at each look, from the groups' means, variances and sizes (vectorised).

    Each look on its own is valid at any (data-dependent) stopping time; `running` makes the
    p-values non-increasing and the intervals nested across looks.

    Args:
        mean_t: treatment mean(s).
        var_t: variance of one treated customer's outcome.
        n_t: treated customers so far.
        mean_c: control mean(s).
        var_c: variance of one control customer's outcome.
        n_c: control customers so far.
        effect_size: mixture scale τ in pooled standard deviations.
        alpha: error level of the confidence sequence.

    Returns:
        Difference, always-valid p-value and confidence sequence per look. Where the variance
        is still zero nothing is known: p = 1 and the interval is unbounded.
    """
    _check(effect_size, alpha)
    mt, vt, nt = (np.asarray(a, dtype=float) for a in (mean_t, var_t, n_t))
    mc, vc, nc = (np.asarray(a, dtype=float) for a in (mean_c, var_c, n_c))
    diff = mt - mc
    variance = vt / nt + vc / nc
    tau2 = effect_size**2 * (nt * vt + nc * vc) / (nt + nc)
    known = (variance > 0) & (tau2 > 0)
    v = np.where(known, variance, 1.0)
    t2 = np.where(known, tau2, 1.0)
    log_ratio = 0.5 * np.log(v / (v + t2)) + t2 * diff**2 / (2.0 * v * (v + t2))
    p_value = np.where(known, np.exp(-np.maximum(log_ratio, 0.0)), 1.0)
    half = np.sqrt(v * (v + t2) / t2 * (np.log((v + t2) / v) - 2.0 * np.log(alpha)))
    half = np.where(known, half, np.inf)
    return SequentialResult(diff, p_value, diff - half, diff + half)


def running(result: SequentialResult) -> SequentialResult:
    """Running minimum of the p-values and running intersection of the intervals.

    Looks run along the last axis (earliest first).
    """
    return SequentialResult(
        result.diff,
        np.minimum.accumulate(result.p_value, axis=-1),
        np.maximum.accumulate(result.ci_low, axis=-1),
        np.minimum.accumulate(result.ci_high, axis=-1),
    )


def proportion_looks(
    successes_t: np.ndarray,
    n_t: np.ndarray,
    successes_c: np.ndarray,
    n_c: np.ndarray,
    effect_size: float = EFFECT_SIZE,
    alpha: float = ALPHA,
) -> SequentialResult:
    """Always-valid comparison of two rates at successive looks (cumulative counts).

    Args:
        successes_t: cumulative treated successes at each look (looks along the last axis).
        n_t: cumulative treated customers at each look.
        successes_c: cumulative control successes.
        n_c: cumulative control customers.
        effect_size: mixture scale τ in pooled standard deviations.
        alpha: error level.

    Returns:
        Running (non-increasing) p-values and nested confidence sequences, one per look.
    """
    nt, nc = np.asarray(n_t, dtype=float), np.asarray(n_c, dtype=float)
    if np.any(nt <= 0) or np.any(nc <= 0):
        raise ValueError("n_t/n_c: every look needs at least one customer per group")
    pt, pc = np.asarray(successes_t) / nt, np.asarray(successes_c) / nc
    per_look = mixture_sprt(pt, pt * (1 - pt), nt, pc, pc * (1 - pc), nc, effect_size, alpha)
    return running(per_look)


def analyze_sequential(
    frame: pd.DataFrame,
    variant_col: str = "variant",
    control: str = "control",
    outcomes: Sequence[str] | None = None,
    effect_size: float = EFFECT_SIZE,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Always-valid p-value and confidence sequence of each variant vs the control, now.

    Valid however often the test has been looked at before (the current look is a stopping
    time like any other); keeping the per-look history and applying `running` is tighter.

    Args:
        frame: one row per customer, with the variant and outcome columns.
        variant_col: column holding the variant.
        control: the control variant's name.
        outcomes: outcome columns (default: every numeric column but `customer_id`).
        effect_size: mixture scale τ in pooled standard deviations.
        alpha: error level.

    Returns:
        One row per (metric, non-control variant): `metric, variant, diff,
        always_valid_p, cs_low, cs_high`.
    """
    _check(effect_size, alpha)
    chosen = list(outcomes) if outcomes is not None else outcome_columns(frame, variant_col)
    check_frame(frame, variant_col, control, chosen)
    variants = frame[variant_col].astype(str)
    rows = []
    for metric in chosen:
        ddof = 0 if is_binary(frame[metric]) else 1
        base = frame.loc[variants == control, metric].to_numpy(dtype=float)
        for name in sorted(set(variants) - {control}):
            values = frame.loc[variants == name, metric].to_numpy(dtype=float)
            result = mixture_sprt(
                values.mean(),
                values.var(ddof=ddof),
                len(values),
                base.mean(),
                base.var(ddof=ddof),
                len(base),
                effect_size,
                alpha,
            )
            rows.append(
                {
                    "metric": metric,
                    "variant": name,
                    "diff": float(result.diff),
                    "always_valid_p": float(result.p_value),
                    "cs_low": float(result.ci_low),
                    "cs_high": float(result.ci_high),
                }
            )
    return pd.DataFrame(rows)
