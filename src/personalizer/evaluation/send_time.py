"""Send-time evaluation: planted preferences recovered, and next-order hours hit, against one hour.

Two protocols, each against the shop-wide best hour (one hour for everybody, from the same fit):

- `planted_recovery` (synthetic shop): of the customers with at least `min_events` human email
  opens or clicks, the share whose chosen hour is within ±1 hour of the planted preferred hour. The
  synthetic readers open "at their next preferred hour of day" on whatever day the email came, so
  the time of day (`time_of_day_hit`, circular over 24 hours) carries nearly all the planted signal
  and the day very little; the hour of the week (`hour_of_week_hit`, circular over 168) is
  reported beside it.
- `next_order_hits` (real timestamps as a proxy): fit on everything before `cutoff`; for every
  customer seen before it who orders at or after it, hit when the local hour of that next order is
  within ±1 hour of the chosen hour, by time of day (the headline) and by hour of the week. The
  baselines are the shop's single best hour for each measure, learnt from the same training data.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import numpy as np
import pandas as pd

from personalizer.features.engagement_times import (
    EMAIL_SIGNALS,
    WEEK_HOURS,
    hour_of_week,
    naive_utc,
    require_columns,
)
from personalizer.models.send_time import SendTimeModel

TimeLike: TypeAlias = str | datetime | pd.Timestamp


def circular_distance(a: np.ndarray, b: np.ndarray | int, period: int) -> np.ndarray:
    """Distance between hours going round a cycle of `period` hours (24 or 168)."""
    d = np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)) % period
    return np.minimum(d, period - d)


def hit_rates(chosen: np.ndarray, actual: np.ndarray, tolerance: int = 1) -> dict[str, float]:
    """Share of `actual` hours of the week within `tolerance` hours of `chosen`, by time of day and
    by hour of the week (NaN when empty)."""
    chosen, actual = np.asarray(chosen), np.asarray(actual)
    if len(actual) == 0:
        return {"time_of_day_hit": float("nan"), "hour_of_week_hit": float("nan")}
    day = circular_distance(chosen % 24, actual % 24, 24) <= tolerance
    week = circular_distance(chosen, actual, WEEK_HOURS) <= tolerance
    return {"time_of_day_hit": float(day.mean()), "hour_of_week_hit": float(week.mean())}


def shop_best_hours(model: SendTimeModel) -> dict[str, int]:
    """The single best hour for everybody, from the shop's pattern: the best ±1 hour window by
    time of day (as an hour of the week on the pattern's best day for it) and by hour of week."""
    pattern = np.asarray(model.shop_pattern_, dtype=np.float64)
    by_day = pattern.reshape(7, 24)
    day_window = sum(np.roll(by_day.sum(axis=0), s) for s in (-1, 0, 1))
    hour = int(np.argmax(day_window))
    week_window = sum(np.roll(pattern, s) for s in (-1, 0, 1))
    return {
        "time_of_day": int(np.argmax(by_day[:, hour])) * 24 + hour,
        "hour_of_week": int(np.argmax(week_window)),
    }


def planted_recovery(
    model: SendTimeModel, truth: pd.DataFrame, min_events: int = 3
) -> dict[str, float]:
    """How often a fitted model recovers the synthetic shop's planted preferred hours.

    Args:
        model: Fitted on the synthetic shop's events, orders and customers.
        truth: `truth/customers` of the shop (`customer_id`, `preferred_hour_of_week`).
        min_events: Least human email opens plus clicks (as counted by the model) of a customer.

    Returns:
        `customers`, `model/time_of_day_hit`, `model/hour_of_week_hit`, the same for `global/`
        (the shop's single best hour), `mean_confidence`.
    """
    require_columns(truth, "truth", ("customer_id", "preferred_hour_of_week"))
    ids = truth["customer_id"].astype(str).to_numpy()
    email = model.signal_counts(ids)[list(EMAIL_SIGNALS)].sum(axis=1).to_numpy()
    keep = email >= min_events
    planted = truth["preferred_hour_of_week"].to_numpy(dtype=np.int64)[keep]
    chosen = model.best_hour(ids[keep])
    shop = shop_best_hours(model)
    return _figures(chosen, planted, shop)


def next_order_hits(
    orders: pd.DataFrame,
    cutoff: TimeLike,
    *,
    events: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    model: SendTimeModel | None = None,
) -> dict[str, float]:
    """Fit on data before `cutoff`, then score the hour of each customer's next order after it.

    Args:
        orders: Order lines (`customer_id`, `ordered_at`, optional `order_id`), before and after.
        cutoff: First instant of the test window (naive UTC).
        events: Events, of which only those before the cutoff are used.
        customers: Customers (time zones and segments), as for `SendTimeModel.fit`.
        model: An unfitted model carrying the parameters to evaluate (default parameters if None).

    Returns:
        `customers` (scored), `model/...` and `global/...` hit rates (`time_of_day_hit`,
        `hour_of_week_hit`), `mean_confidence`.
    """
    require_columns(orders, "orders", ("customer_id", "ordered_at"))
    at = pd.Series(naive_utc(orders["ordered_at"], "orders.ordered_at").to_numpy())
    cut = pd.Timestamp(cutoff)
    before = (at < cut).to_numpy(bool)
    past_events = None
    if events is not None:
        require_columns(events, "events", ("occurred_at",))
        occurred = naive_utc(events["occurred_at"], "events.occurred_at").to_numpy()
        past_events = events[occurred < cut.to_datetime64()]
    fitted = (model if model is not None else SendTimeModel()).fit(
        past_events, orders[before], customers
    )

    later = pd.DataFrame(
        {"customer_id": orders["customer_id"].astype(str).to_numpy()[~before], "at": at[~before]}
    ).dropna()
    seen = set(orders["customer_id"].astype(str).to_numpy()[before])
    if past_events is not None:
        seen |= set(pd.Index(past_events["customer_id"].unique()).astype(str))
    later = later[later["customer_id"].isin(seen)]
    nxt = later.sort_values("at", kind="stable").drop_duplicates("customer_id")
    ids = nxt["customer_id"].to_numpy()
    actual = hour_of_week(nxt["at"], fitted.timezones(ids))
    return _figures(fitted.best_hour(ids), actual, shop_best_hours(fitted))


def _figures(chosen: pd.DataFrame, actual: np.ndarray, shop: dict[str, int]) -> dict[str, float]:
    hours = chosen["hour_of_week"].to_numpy()
    model = hit_rates(hours, actual)
    day = hit_rates(np.full(len(actual), shop["time_of_day"]), actual)["time_of_day_hit"]
    week = hit_rates(np.full(len(actual), shop["hour_of_week"]), actual)["hour_of_week_hit"]
    # Confidence should rank customers by their chance of a hit: compare the two halves.
    confidence = chosen["confidence"].to_numpy()
    sure = confidence > np.median(confidence) if len(confidence) else confidence > 0
    return {
        "customers": float(len(actual)),
        "model/time_of_day_hit": model["time_of_day_hit"],
        "global/time_of_day_hit": day,
        "model/hour_of_week_hit": model["hour_of_week_hit"],
        "global/hour_of_week_hit": week,
        "mean_confidence": float(confidence.mean()) if len(confidence) else float("nan"),
        "confident_half/time_of_day_hit": hit_rates(hours[sure], actual[sure])["time_of_day_hit"],
        "other_half/time_of_day_hit": hit_rates(hours[~sure], actual[~sure])["time_of_day_hit"],
    }
