"""Recency, frequency and monetary value per customer: the input of the lifetime-value models.

The definitions are those of `lifetimes.utils.summary_data_from_transaction_data` (Fader, Hardie &
Lee 2005). Order lines are first grouped into *purchase periods*: one per customer and period of
length `freq` (a day by default), so several orders on one day are one purchase and their values add
up. Then, per customer:

- `frequency`: repeat purchase periods, the number of distinct purchase periods minus one;
- `recency`: time from the first to the last purchase period (0 when `frequency` is 0);
- `T`: time from the first purchase period to the period of `until`;
- `monetary_value`: mean value of the repeat purchase periods (the first purchase is left out, as
  the Gamma-Gamma model asks), 0 when `frequency` is 0.

Times are counted in `unit` (a fixed length such as "D", "W" or "7D"); by default in whole `freq`
periods. CDNOW in the papers is `freq="D", unit="W"`: purchases per day, times in weeks.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypeAlias

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

TimeLike: TypeAlias = str | datetime | pd.Timestamp

SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary_value")


def rfm_summary(
    orders: pd.DataFrame,
    until: TimeLike,
    *,
    freq: str = "D",
    unit: str | None = None,
    monetary: str | None = None,
) -> pd.DataFrame:
    """RFM summary of the customers who bought up to `until`.

    Args:
        orders: order lines with `customer_id`, `ordered_at` and either `quantity` and `unit_price`
            or the `monetary` column.
        until: end of observation; orders in later periods are ignored, orders in the period that
            contains `until` count.
        freq: length of a purchase period, a pandas period alias ("D", "W", "M", ...).
        unit: time unit of `recency` and `T`, a fixed length ("D", "W", "7D"); None counts whole
            `freq` periods (lifetimes' convention).
        monetary: column holding the value of each line; None uses `quantity * unit_price`.

    Returns:
        One row per customer (index `customer_id`) with `frequency`, `recency`, `T`,
        `monetary_value`.
    """
    periods = _purchase_periods(orders, freq, unit, monetary)
    end = _time_of(until, freq, unit)
    periods = periods[periods["time"] <= end]
    summary = _summarise(periods)
    summary["T"] = end - summary.pop("first")
    logger.debug("RFM summary of %d customers until %s", len(summary), until)
    return summary[list(SUMMARY_COLUMNS)]


def calibration_and_holdout(
    orders: pd.DataFrame,
    calibration_end: TimeLike,
    observation_end: TimeLike,
    *,
    freq: str = "D",
    unit: str | None = None,
    monetary: str | None = None,
) -> pd.DataFrame:
    """RFM summary of a calibration window and what the same customers did afterwards.

    Customers are those who bought up to `calibration_end`. Purchase periods after the period of
    `calibration_end` and up to the period of `observation_end` form the holdout.

    Args:
        orders: order lines, as for `rfm_summary`.
        calibration_end: end of the calibration window (its period included).
        observation_end: end of the holdout window (its period included).
        freq, unit, monetary: as for `rfm_summary`.

    Returns:
        The calibration summary (`frequency`, `recency`, `T`, `monetary_value`) plus
        `frequency_holdout` (purchase periods in the holdout), `monetary_value_holdout` (their mean
        value, 0 when none) and `duration_holdout` (length of the holdout in `unit`).
    """
    calibration = rfm_summary(orders, calibration_end, freq=freq, unit=unit, monetary=monetary)
    start, end = _time_of(calibration_end, freq, unit), _time_of(observation_end, freq, unit)
    if end <= start:
        raise ValueError(
            f"observation_end must fall in a later period than calibration_end; got "
            f"observation_end={observation_end!r}, calibration_end={calibration_end!r}"
        )
    periods = _purchase_periods(orders, freq, unit, monetary)
    holdout = periods[(periods["time"] > start) & (periods["time"] <= end)]
    holdout = holdout[holdout["customer_id"].isin(calibration.index)]
    by_customer = holdout.groupby("customer_id")["value"]
    out = calibration.copy()
    out["frequency_holdout"] = by_customer.size().reindex(out.index, fill_value=0).astype(int)
    out["monetary_value_holdout"] = by_customer.mean().reindex(out.index, fill_value=0.0)
    out["duration_holdout"] = end - start
    return out


def _purchase_periods(
    orders: pd.DataFrame, freq: str, unit: str | None, monetary: str | None
) -> pd.DataFrame:
    """One row per customer and purchase period: `customer_id`, `time` (in `unit`), `value`."""
    value_columns = [monetary] if monetary else ["quantity", "unit_price"]
    missing = [c for c in ("customer_id", "ordered_at", *value_columns) if c not in orders]
    if missing:
        raise ValueError(f"orders: missing column(s) {missing}; found {list(orders.columns)}")
    ordered_at = _naive(pd.to_datetime(orders["ordered_at"]))
    if ordered_at.isna().any():
        row = orders.index[ordered_at.isna().to_numpy()][0]
        raise ValueError(f"ordered_at: missing or unreadable timestamp at row {row!r}")
    if monetary:
        value = pd.to_numeric(orders[monetary], errors="coerce")
    else:
        value = pd.to_numeric(orders["quantity"], errors="coerce") * pd.to_numeric(
            orders["unit_price"], errors="coerce"
        )
    if value.isna().any():
        row = orders.index[value.isna().to_numpy()][0]
        name = monetary or "quantity * unit_price"
        raise ValueError(f"{name}: missing or non-numeric value at row {row!r}")
    lines = pd.DataFrame(
        {
            "customer_id": orders["customer_id"].to_numpy(),
            "time": _times(ordered_at, freq, unit),
            "value": value.to_numpy(dtype=float),
        }
    )
    return lines.groupby(["customer_id", "time"], as_index=False, sort=True)["value"].sum()


def _summarise(periods: pd.DataFrame) -> pd.DataFrame:
    """Frequency, recency, first purchase time and mean repeat value per customer."""
    by_customer = periods.groupby("customer_id")
    first = by_customer["time"].min()
    summary = pd.DataFrame(
        {
            "frequency": by_customer.size() - 1,
            "recency": by_customer["time"].max() - first,
            "first": first,
        }
    )
    # Periods are sorted by time within customer, so the first row of each customer is the first
    # purchase; the Gamma-Gamma model wants the mean of the others.
    repeat = periods[by_customer.cumcount().to_numpy() > 0]
    summary["monetary_value"] = (
        repeat.groupby("customer_id")["value"].mean().reindex(summary.index, fill_value=0.0)
    )
    summary.index.name = "customer_id"
    return summary


def _times(ordered_at: pd.Series, freq: str, unit: str | None) -> np.ndarray:
    """Start of each timestamp's `freq` period, as a number of `unit`s (or period ordinals)."""
    periods = pd.PeriodIndex(ordered_at.dt.to_period(freq))
    if unit is None:
        return periods.asi8.astype(float)
    starts = periods.start_time
    return np.asarray((starts - pd.Timestamp(0)) / _unit(unit), dtype=float)


def _time_of(moment: TimeLike, freq: str, unit: str | None) -> float:
    stamp = pd.Timestamp(moment)
    if pd.isna(stamp):
        raise ValueError(f"not a point in time: {moment!r}")
    return float(_times(_naive(pd.Series([stamp])), freq, unit)[0])


def _unit(unit: str) -> pd.Timedelta:
    try:
        return pd.Timedelta(unit if unit[:1].isdigit() else f"1{unit}")
    except ValueError as err:
        raise ValueError(f"unit: not a fixed length of time: {unit!r}") from err


def _naive(stamps: pd.Series) -> pd.Series:
    """Timestamps as naive UTC, the warehouse convention."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps
