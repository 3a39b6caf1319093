"""Deterministic assignment of customers to experiment variants and holdout groups.

A customer's place in any split is a pure function of a salt and their `customer_id`:
`bucket` hashes ``f"{salt}\\x1f{customer_id}"`` with SHA-256 into a number uniform in [0, 1),
so every process, machine and day agrees on it without storing anything. Variants and
holdouts use different salts (``experiment:<name>`` and ``holdout:<scope>``), so being held
out says nothing about the variant a customer would have had, and two experiments split the
same customers independently.

`srm_check` is the sample-ratio-mismatch guard: a chi-square test of the observed counts per
variant against the configured weights. A mismatch (p < 0.001 by default) means the split or
the logging is broken and the experiment's results should not be read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import stats

HOLDOUT = "holdout"
"""What `Experiment.assign` returns for a customer in the experiment's holdout group."""

SRM_ALPHA = 0.001
"""p-value below which a sample-ratio mismatch is flagged (the usual, deliberately strict bar)."""

_SEPARATOR = "\x1f"
_MANTISSA_BITS = 53  # a double holds 53 bits exactly, so the result is always < 1


def bucket(salt: str, customer_id: str) -> float:
    """A number uniform in [0, 1) fixed by `salt` and `customer_id`.

    Args:
        salt: what the split is for (an experiment, a holdout scope).
        customer_id: the customer.

    Returns:
        The top 53 bits of SHA-256 of ``f"{salt}\\x1f{customer_id}"``, divided by 2**53.
    """
    digest = hashlib.sha256(f"{salt}{_SEPARATOR}{customer_id}".encode()).digest()
    top = int.from_bytes(digest[:8], "big") >> (64 - _MANTISSA_BITS)
    return top / float(1 << _MANTISSA_BITS)


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Checks variant weights and returns them as a plain dict.

    Args:
        weights: variant name -> non-negative weight (they need not sum to 1).

    Returns:
        The weights, as floats.

    Raises:
        ValueError: naming the weight when it is negative or not finite, or when there are no
            variants or every weight is zero.
    """
    if not weights:
        raise ValueError("weights: no variants given")
    clean: dict[str, float] = {}
    for name, weight in weights.items():
        value = float(weight)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"weights[{name!r}]: must be a finite number >= 0, got {weight!r}")
        clean[str(name)] = value
    if sum(clean.values()) <= 0:
        raise ValueError(f"weights: all zero ({clean}); at least one variant needs a weight > 0")
    return clean


def assign_variant(experiment: str, customer_id: str, weights: Mapping[str, float]) -> str:
    """The variant of `experiment` a customer gets, with probability proportional to its weight.

    Variants are laid out on [0, 1) in order of name, so the assignment does not depend on the
    order the weights were written in.

    Args:
        experiment: the experiment's name (its salt).
        customer_id: the customer.
        weights: variant name -> non-negative weight; need not sum to 1.

    Returns:
        The variant's name.

    Raises:
        ValueError: naming the bad weight (negative, not finite), or for empty / all-zero weights.
    """
    clean = validate_weights(weights)
    total = sum(clean.values())
    point = bucket(f"experiment:{experiment}", customer_id) * total
    cumulative = 0.0
    chosen = ""
    for name in sorted(clean):
        if clean[name] <= 0:
            continue
        chosen = name
        cumulative += clean[name]
        if point < cumulative:
            return name
    return chosen  # rounding left `point` a hair above the last bound


def in_holdout(customer_id: str, share: float, scope: str = "global") -> bool:
    """Whether a customer is in the holdout group of `scope`.

    Args:
        customer_id: the customer.
        share: fraction of customers held out, in [0, 1].
        scope: ``"global"`` (held out of every email) or a flow's name (held out of that flow).

    Returns:
        True when the customer is held out.

    Raises:
        ValueError: when `share` is outside [0, 1].
    """
    if not 0.0 <= share <= 1.0:  # NaN fails too
        raise ValueError(f"share: must be in [0, 1], got {share!r}")
    return bucket(f"holdout:{scope}", customer_id) < share


class Experiment(BaseModel):
    """An experiment: its variants with weights, the control, and an optional holdout.

    Attributes:
        name: unique name; it salts the assignment, so renaming reshuffles customers.
        variants: variant name -> weight (need not sum to 1).
        control: the variant others are compared with; the first variant when omitted.
        holdout_share: fraction of customers held out of the experiment entirely.
        holdout_scope: the holdout group used (``"global"`` or a flow's name).
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    variants: dict[str, float]
    control: str | None = None
    holdout_share: float = Field(default=0.0, ge=0.0, le=1.0)
    holdout_scope: str = "global"

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, value: dict[str, float]) -> dict[str, float]:
        return validate_weights(value)

    @model_validator(mode="after")
    def _check_control(self) -> Experiment:
        if self.control is not None and self.control not in self.variants:
            raise ValueError(
                f"control: {self.control!r} is not a variant (variants: {sorted(self.variants)})"
            )
        return self

    @property
    def control_variant(self) -> str:
        """The control variant (explicit, or the first one listed)."""
        return self.control if self.control is not None else next(iter(self.variants))

    def assign(self, customer_id: str) -> str:
        """The customer's variant, or `HOLDOUT` when they are in the holdout group."""
        if self.holdout_share > 0 and in_holdout(
            customer_id, self.holdout_share, self.holdout_scope
        ):
            return HOLDOUT
        return assign_variant(self.name, customer_id, self.variants)


@dataclass(frozen=True)
class SRMResult:
    """Outcome of a sample-ratio-mismatch check.

    Attributes:
        chi2: the chi-square statistic.
        p_value: its p-value (dof = variants - 1).
        observed: variant -> observed count.
        expected: variant -> count expected from the weights.
        mismatch: True when `p_value` < the threshold used.
    """

    chi2: float
    p_value: float
    observed: dict[str, int]
    expected: dict[str, float]
    mismatch: bool


def srm_check(
    observed: Mapping[str, int], weights: Mapping[str, float], alpha: float = SRM_ALPHA
) -> SRMResult:
    """Chi-square test of observed counts per variant against the configured weights.

    Variants with zero weight are expected to be empty; any customer seen in one counts as a
    mismatch (p = 0).

    Args:
        observed: variant -> number of customers seen in it (missing variants count 0).
        weights: variant -> weight, as given to `assign_variant`.
        alpha: flag a mismatch below this p-value (default 0.001).

    Returns:
        The statistic, p-value, observed and expected counts, and the flag.

    Raises:
        ValueError: for a variant observed but not configured, a negative count, or bad weights.
    """
    clean = validate_weights(weights)
    unknown = sorted(set(observed) - set(clean))
    if unknown:
        raise ValueError(f"observed: variants {unknown} are not in weights {sorted(clean)}")
    counts = {name: int(observed.get(name, 0)) for name in clean}
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"observed[{name!r}]: count must be >= 0, got {count}")
    n = sum(counts.values())
    total = sum(clean.values())
    expected = {name: n * w / total for name, w in clean.items()}
    live = [name for name in clean if clean[name] > 0]
    if any(counts[name] > 0 for name in clean if clean[name] == 0):
        chi2, p_value = math.inf, 0.0
    elif n == 0 or len(live) < 2:
        chi2, p_value = 0.0, 1.0
    else:
        result = stats.chisquare([counts[v] for v in live], [expected[v] for v in live])
        chi2, p_value = float(result.statistic), float(result.pvalue)
    return SRMResult(chi2, p_value, counts, expected, p_value < alpha)
