"""How many customers a two-proportion test needs, and what it can detect with a given number.

The classic normal-approximation formula (Fleiss, Levin & Paik, "Statistical Methods for Rates
and Proportions", eq. 4.14, without continuity correction): with the control rate p₁, the
treatment rate p₂ = p₁ + δ, n₂ = r·n₁ and p̄ = (p₁ + r·p₂)/(1 + r),

    n₁ = (z_{1−α/2} · sqrt(p̄ q̄ (1 + 1/r)) + z_{1−β} · sqrt(p₁q₁ + p₂q₂/r))² / δ²,

the null's variance pooled, the alternative's not. Baseline 10%, +2 points, α = 0.05
two-sided, 80% power: 3,841 per arm (statsmodels' arcsine-based `NormalIndPower` gives 3,835).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class SampleSize:
    """Customers needed per arm.

    Attributes:
        n_control: control customers.
        n_treatment: treatment customers (`ratio` times the control, rounded up).
        baseline: control rate p₁.
        target: treatment rate p₂ the test is powered to detect.
        alpha: significance level.
        power: probability of detecting `target`.
    """

    n_control: int
    n_treatment: int
    baseline: float
    target: float
    alpha: float
    power: float

    @property
    def total(self) -> int:
        """Customers in both arms."""
        return self.n_control + self.n_treatment


def _open_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: must be in (0, 1), got {value!r}")
    return value


def target_rate(baseline: float, mde: float, relative: bool = False) -> float:
    """The treatment rate implied by a minimum detectable effect.

    Args:
        baseline: control rate in (0, 1).
        mde: the effect, absolute (0.02 = +2 points) or, with `relative`, a fraction of the
            baseline (0.2 = +20%). Negative effects are allowed.
        relative: read `mde` as relative to the baseline.

    Returns:
        p₂, checked to lie in (0, 1).
    """
    p1 = _open_unit("baseline", baseline)
    if mde == 0 or not math.isfinite(mde):
        raise ValueError(f"mde: must be a non-zero number, got {mde!r}")
    p2 = round(p1 * (1.0 + mde) if relative else p1 + mde, 12)  # 0.1 + 0.02 reads 0.12
    if not 0.0 < p2 < 1.0:
        kind = "relative" if relative else "absolute"
        raise ValueError(
            f"mde: baseline {p1} with {kind} effect {mde} gives a rate of {p2:.6g}, outside (0, 1)"
        )
    return p2


def _z_values(alpha: float, power: float, two_sided: bool) -> tuple[float, float]:
    _open_unit("alpha", alpha)
    _open_unit("power", power)
    z_alpha = float(stats.norm.ppf(1.0 - alpha / 2.0 if two_sided else 1.0 - alpha))
    return z_alpha, float(stats.norm.ppf(power))


def _check_ratio(ratio: float) -> float:
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio: must be > 0 (treatment customers per control), got {ratio!r}")
    return float(ratio)


def _n_control(p1: float, p2: float, z_alpha: float, z_beta: float, ratio: float) -> float:
    pooled = (p1 + ratio * p2) / (1.0 + ratio)
    null_sd = math.sqrt(pooled * (1.0 - pooled) * (1.0 + 1.0 / ratio))
    alt_sd = math.sqrt(p1 * (1.0 - p1) + p2 * (1.0 - p2) / ratio)
    return (z_alpha * null_sd + z_beta * alt_sd) ** 2 / (p2 - p1) ** 2


def sample_size(
    baseline: float,
    mde: float,
    relative: bool = False,
    alpha: float = ALPHA,
    power: float = POWER,
    ratio: float = 1.0,
    two_sided: bool = True,
) -> SampleSize:
    """Customers per arm for a two-proportion z-test to detect `mde` with `power`.

    Args:
        baseline: control rate in (0, 1).
        mde: minimum detectable effect, absolute (0.02 = +2 points) or relative (see `relative`).
        relative: read `mde` as a fraction of the baseline.
        alpha: significance level in (0, 1).
        power: probability of a significant result when the effect is `mde`, in (0, 1).
        ratio: treatment customers per control customer (> 0).
        two_sided: a two-sided test (default) or one-sided in the effect's direction.

    Returns:
        Customers per arm, rounded up.

    Raises:
        ValueError: naming the parameter that is out of range.
    """
    p2 = target_rate(baseline, mde, relative)
    z_alpha, z_beta = _z_values(alpha, power, two_sided)
    r = _check_ratio(ratio)
    n1 = math.ceil(_n_control(baseline, p2, z_alpha, z_beta, r) - 1e-9)
    return SampleSize(n1, math.ceil(n1 * r - 1e-9), float(baseline), p2, alpha, power)


def minimum_detectable_effect(
    baseline: float,
    n_control: int,
    alpha: float = ALPHA,
    power: float = POWER,
    ratio: float = 1.0,
    two_sided: bool = True,
) -> float:
    """The smallest absolute increase over `baseline` detectable with `n_control` per arm.

    The inverse of `sample_size` (solved numerically), for "we can mail 20,000 customers:
    what could we learn?".

    Returns:
        δ > 0 such that `sample_size(baseline, δ, ...)` needs `n_control` control customers.
    """
    p1 = _open_unit("baseline", baseline)
    if n_control < 1:
        raise ValueError(f"n_control: must be at least 1, got {n_control!r}")
    z_alpha, z_beta = _z_values(alpha, power, two_sided)
    r = _check_ratio(ratio)

    def gap(delta: float) -> float:
        return _n_control(p1, p1 + delta, z_alpha, z_beta, r) - n_control

    top = 1.0 - p1 - 1e-12
    if gap(top) > 0:
        raise ValueError(f"n_control: {n_control} customers cannot detect any effect at {p1}")
    return float(optimize.brentq(gap, 1e-12, top, xtol=1e-12))
