"""Temporal splits of order lines: the past a recommender learns from, the future it is judged on.

A random split leaks the future into training; recommenders for email are asked "what will this
customer buy next?", so every offline evaluation cuts the history at one instant. Three evaluation
modes come out of one split:

- `all`: warm customers (bought before and after the cutoff), against everything they bought after
  it (the published protocol);
- `new`: warm customers (bought before and after the cutoff), against the products they had never
  bought before the cutoff (discovery, which repurchase-heavy shops otherwise hide);
- `cold`: customers whose first purchase falls in the test window (what the fallback is worth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Literal, TypeAlias

import pandas as pd

Mode = Literal["all", "new", "cold"]
MODES: tuple[Mode, ...] = ("all", "new", "cold")
PAIR = ["customer_id", "product_id"]

# Test window of the default cutoff: the last fifth of the history, but never more than a quarter
# year, since marketing emails act on the next weeks and a long test window rewards popularity.
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_MAX_TEST_DAYS = 90.0

TimeLike: TypeAlias = str | datetime | pd.Timestamp


@dataclass(frozen=True, eq=False)
class Split:
    """Order lines cut at `cutoff`, and the ground truth derived from them.

    Attributes:
        train: Lines with `ordered_at < cutoff`.
        test: Lines with `cutoff <= ordered_at < end` (no upper bound when `end` is None).
        cutoff: First instant of the test window (naive UTC).
        end: First instant after the test window, or None when it runs to the end of the data.
    """

    train: pd.DataFrame = field(repr=False)
    test: pd.DataFrame = field(repr=False)
    cutoff: pd.Timestamp
    end: pd.Timestamp | None = None

    @cached_property
    def truth(self) -> pd.DataFrame:
        """Distinct (customer_id, product_id) bought in the test window, sorted."""
        return _pairs(self.test)

    @cached_property
    def customers(self) -> pd.Index:
        """Customers who bought in the test window, sorted."""
        return pd.Index(self.truth["customer_id"].unique(), name="customer_id")

    @cached_property
    def warm_customers(self) -> pd.Index:
        """Customers who bought both before and after the cutoff, sorted."""
        return self.customers[self.customers.isin(self.train["customer_id"].unique())]

    @cached_property
    def cold_customers(self) -> pd.Index:
        """Customers who bought after the cutoff but never before it, sorted."""
        return self.customers[~self.customers.isin(self.train["customer_id"].unique())]

    @cached_property
    def truth_new(self) -> pd.DataFrame:
        """Test purchases of warm customers of products they had not bought before the cutoff."""
        truth = self.truth[self.truth["customer_id"].isin(self.warm_customers)]
        past = self.train[self.train["customer_id"].isin(self.warm_customers)]
        bought = pd.MultiIndex.from_frame(_pairs(past))
        seen = pd.MultiIndex.from_frame(truth[PAIR]).isin(bought)
        return truth.loc[~seen].reset_index(drop=True)

    def targets(self, mode: Mode) -> tuple[pd.DataFrame, pd.Index]:
        """The ground truth and the customers to evaluate in one mode.

        Args:
            mode: `all`, `new` or `cold` (see the module docstring).

        Returns:
            `(truth, customers)`, ready for `personalizer.evaluation.metrics.evaluate`.
        """
        if mode == "all":
            warm = self.truth[self.truth["customer_id"].isin(self.warm_customers)]
            return warm.reset_index(drop=True), self.warm_customers
        if mode == "new":
            return self.truth_new, self.warm_customers
        if mode == "cold":
            cold = self.truth[self.truth["customer_id"].isin(self.cold_customers)]
            return cold.reset_index(drop=True), self.cold_customers
        raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {MODES}")


def temporal_split(
    orders: pd.DataFrame,
    cutoff: TimeLike | None = None,
    horizon_days: float | None = None,
) -> Split:
    """Cut order lines at `cutoff` into a training past and a test future.

    Lines after the test window (when `horizon_days` is given) belong to neither side.

    Args:
        orders: Order lines with at least `customer_id`, `product_id` and `ordered_at`
            (datetime64, naive UTC).
        cutoff: First instant of the test window; tz-aware values are converted to naive UTC.
            None picks `default_cutoff(orders)`.
        horizon_days: Length of the test window in days; None keeps everything after the cutoff.

    Returns:
        The split, with its ground truth derived lazily.

    Raises:
        ValueError: On missing columns or a non-positive horizon.
    """
    _check_columns(orders)
    if horizon_days is not None and horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    cut = default_cutoff(orders) if cutoff is None else to_utc_timestamp(cutoff)
    end = None if horizon_days is None else cut + pd.Timedelta(days=horizon_days)
    at = orders["ordered_at"]
    in_test = at >= cut if end is None else (at >= cut) & (at < end)
    return Split(
        train=orders.loc[at < cut].reset_index(drop=True),
        test=orders.loc[in_test].reset_index(drop=True),
        cutoff=cut,
        end=end,
    )


def default_cutoff(
    orders: pd.DataFrame,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_test_days: float = DEFAULT_MAX_TEST_DAYS,
) -> pd.Timestamp:
    """A cutoff for any shop: the last `test_fraction` of its history, at most `max_test_days`.

    The window is measured in time, not in orders, so that seasonal shops are cut the way they
    will be used. When the window is a day or more the cutoff is floored to midnight, so reports
    show a readable date (the test window grows by less than a day). Examples: one year of history
    gives a 73-day test window, two years or more give 90 days, ten days give the last two.

    Args:
        orders: Order lines with an `ordered_at` column.
        test_fraction: Share of the time span kept for testing, in (0, 1).
        max_test_days: Upper bound of the test window, in days.

    Returns:
        The cutoff, naive UTC.

    Raises:
        ValueError: When there are no dated orders or all of them share one instant.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    at = orders["ordered_at"].dropna()
    if at.empty:
        raise ValueError("no dated orders to split")
    first, last = at.min(), at.max()
    if first == last:
        raise ValueError("all orders share one instant; there is no past to learn from")
    window = min((last - first) * test_fraction, pd.Timedelta(days=max_test_days))
    cutoff = last - window
    if window >= pd.Timedelta(days=1):
        cutoff = cutoff.floor("D")
    return pd.Timestamp(cutoff)


def to_utc_timestamp(value: TimeLike, name: str = "time") -> pd.Timestamp:
    """`value` as a naive UTC timestamp, the way the warehouse stores time.

    Raises:
        ValueError: naming `name` (the argument or field) when `value` is not a point in time.
    """
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: not a point in time: {value!r}") from err
    if pd.isna(stamp):
        raise ValueError(f"{name}: not a point in time: {value!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def _pairs(lines: pd.DataFrame) -> pd.DataFrame:
    return lines[PAIR].drop_duplicates().sort_values(PAIR).reset_index(drop=True)


def _check_columns(orders: pd.DataFrame) -> None:
    missing = [c for c in [*PAIR, "ordered_at"] if c not in orders.columns]
    if missing:
        raise ValueError(f"orders lack columns {missing}")
