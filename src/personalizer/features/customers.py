"""Customer features as of one moment: what a churn or value model knows about each customer.

`customer_features(orders, as_of, events)` is the one-call entry point. Models that need features at
several moments index the data once (`features.customer_history.CustomerHistory`) and call
`features_at(history, as_of)` per moment: array masks and `np.bincount`, no per-customer loop.
Only orders and events strictly before `as_of` count. Per customer who ordered before `as_of`:

- recency, tenure, orders, purchase days and spend overall and over the last 30/90/180/365 days;
  trends: the last 90 days against the 90 before, the last 30 against the last 90, the last 90
  against the customer's usual rate;
- gaps between purchase days (mean, median, std, max, last) and how overdue the customer is
  (days since the last order over the usual gap);
- basket: mean, largest and last order value, items and lines per order, mean unit price;
- breadth: distinct products (and categories when the catalog or a `category` column gives them),
  share of products bought again;
- returns: order lines with a negative quantity and `return` events;
- email engagement (events only): received, human opens, machine opens, clicks; an engagement
  score in which a click counts `CLICK_WEIGHT` opens and a machine open `MACHINE_OPEN_WEIGHT`
  (machine opens, such as Apple Mail Privacy Protection's proxy fetching every email, say nothing
  about the person); days since the last human open or click; unsubscribed;
- site activity (events only): visit days and carts over the last 30 days, days since a visit;
- BG/NBD probability alive and expected purchase days over the horizon (`models.lifetime`).

Features that need events are NaN when no events are given, so a model's columns never change.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from personalizer.features.customer_history import (
    CLICK,
    MACHINE_OPEN,
    OPEN,
    RECEIVED,
    UNSUBSCRIBE,
    CustomerHistory,
    EventArrays,
    OrderArrays,
    TimeLike,
    run_ends,
)
from personalizer.models.lifetime import LifetimeModels

log = logging.getLogger(__name__)

WINDOWS = (30, 90, 180, 365)
TREND_DAYS = 90
CLICK_WEIGHT = 3.0
MACHINE_OPEN_WEIGHT = 0.2

EMAIL_FEATURES = (
    "emails_90d",
    "opens_90d",
    "machine_opens_90d",
    "clicks_90d",
    "engagement_90d",
    "engagement_all",
    "days_since_engaged",
    "unsubscribed",
)
SITE_FEATURES = ("site_days_30d", "carts_30d", "days_since_site_visit")
FEATURE_NAMES: tuple[str, ...] = (
    "recency_days",
    "tenure_days",
    "orders_total",
    "purchase_days_total",
    "spend_total",
    *(f"{kind}_{w}d" for w in WINDOWS for kind in ("orders", "spend")),
    "orders_prev_90d",
    "spend_prev_90d",
    "orders_trend_90d",
    "spend_trend_90d",
    "spend_share_30d_90d",
    "orders_per_30d",
    "orders_90d_vs_usual",
    "gap_mean_days",
    "gap_median_days",
    "gap_std_days",
    "gap_max_days",
    "gap_last_days",
    "overdue_ratio",
    "recency_vs_max_gap",
    "order_value_mean",
    "order_value_max",
    "order_value_last",
    "items_per_order",
    "lines_per_order",
    "unit_price_mean",
    "products_distinct",
    "products_per_order",
    "repeat_product_share",
    "categories_distinct",
    "returns_total",
    "returns_90d",
    "return_rate",
    *EMAIL_FEATURES,
    *SITE_FEATURES,
    "p_alive",
    "expected_purchases",
)


def customer_features(
    orders: pd.DataFrame,
    as_of: TimeLike,
    events: pd.DataFrame | None = None,
    *,
    products: pd.DataFrame | None = None,
    horizon_days: float = 90.0,
) -> pd.DataFrame:
    """Features of every customer with an order before `as_of` (columns `FEATURE_NAMES`).

    Args:
        orders: order lines with the schema's columns (`customer_id`, `order_id`, `product_id`,
            `quantity`, `unit_price`, `ordered_at`); negative quantities count as returns.
        as_of: the moment the features describe; later orders and events are ignored.
        events: optional events table (`customer_id`, `type`, `occurred_at`, `properties`).
        products: optional catalog with `product_id` and `category`, for category breadth.
        horizon_days: horizon of the BG/NBD expected purchases.

    Returns:
        One row per customer, index `customer_id` (sorted).

    Raises:
        ValueError: naming the field, on missing columns, no usable order line, or an `as_of`
            before the first order.
    """
    history = CustomerHistory.build(orders, events, products, until=as_of)
    return features_at(history, as_of, horizon_days)


def features_at(
    history: CustomerHistory,
    as_of: TimeLike,
    horizon_days: float = 90.0,
    lifetime: LifetimeModels | None = None,
) -> pd.DataFrame:
    """Features of every customer with an order before `as_of` (columns `FEATURE_NAMES`).

    Args:
        history: the indexed orders and events.
        as_of: the moment described.
        horizon_days: horizon of `expected_purchases`.
        lifetime: lifetime models fitted as of `as_of`; None fits BG/NBD here.
    """
    now = history.check_as_of(as_of)
    n = history.n_customers
    out: dict[str, np.ndarray] = {}
    _order_features(out, history.orders, now, n)
    _gap_features(out, history.days, now, n)
    _breadth_and_return_features(out, history, now, n)
    _event_features(out, history.events, history.has_events, now, n)
    codes = np.flatnonzero(out["orders_total"] > 0)
    frame = pd.DataFrame(
        {name: out[name][codes] for name in FEATURE_NAMES if name in out},
        index=history.customer_ids[codes],
    )
    models = history.lifetime_models(as_of, spend=False) if lifetime is None else lifetime
    summary = history.rfm_summary(as_of, models.unit).reindex(frame.index)
    frame["p_alive"] = models.p_alive(summary)
    frame["expected_purchases"] = models.expected_purchases(summary, horizon_days)
    log.debug("features of %d customers as of %s", len(frame), as_of)
    return frame[list(FEATURE_NAMES)]


# ---------------------------------------------------------------------------------- features
def _order_features(out: dict[str, np.ndarray], o: OrderArrays, now: float, n: int) -> None:
    m = o.t < now
    c, age, value = o.c[m], now - o.t[m], o.value[m]
    first, last = run_ends(c)
    orders = np.bincount(c, minlength=n).astype(float)
    spend = np.bincount(c, weights=value, minlength=n)
    items = np.bincount(c, weights=o.items[m], minlength=n)
    lines = np.bincount(c, weights=o.lines[m], minlength=n)
    out["orders_total"], out["spend_total"] = orders, spend
    out["recency_days"] = _scatter(n, c[last], age[last])
    tenure = _scatter(n, c[first], age[first])
    out["tenure_days"] = tenure
    for w in WINDOWS:
        recent = age < w
        out[f"orders_{w}d"] = np.bincount(c[recent], minlength=n).astype(float)
        out[f"spend_{w}d"] = np.bincount(c[recent], weights=value[recent], minlength=n)
    before = (age >= TREND_DAYS) & (age < 2 * TREND_DAYS)
    out["orders_prev_90d"] = np.bincount(c[before], minlength=n).astype(float)
    out["spend_prev_90d"] = np.bincount(c[before], weights=value[before], minlength=n)
    # A trend needs a customer who was already there before the last 90 days.
    covered = tenure >= TREND_DAYS
    out["orders_trend_90d"] = np.where(
        covered, _balance(out["orders_90d"], out["orders_prev_90d"]), np.nan
    )
    out["spend_trend_90d"] = np.where(
        covered, _balance(out["spend_90d"], out["spend_prev_90d"]), np.nan
    )
    out["spend_share_30d_90d"] = _ratio(out["spend_30d"], out["spend_90d"])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["orders_per_30d"] = 30.0 * orders / np.maximum(tenure, 30.0)
        usual = orders * TREND_DAYS / np.maximum(tenure, TREND_DAYS)
    out["orders_90d_vs_usual"] = _ratio(out["orders_90d"], usual)
    out["order_value_mean"] = _ratio(spend, orders)
    out["order_value_max"] = _group_max(c, value, n)
    out["order_value_last"] = _scatter(n, c[last], value[last])
    out["items_per_order"] = _ratio(items, orders)
    out["lines_per_order"] = _ratio(lines, orders)
    out["unit_price_mean"] = _ratio(spend, items)
    out["_lines"] = lines


def _gap_features(out: dict[str, np.ndarray], d: OrderArrays, now: float, n: int) -> None:
    m = d.t < now
    c, t = d.c[m], d.t[m]
    out["purchase_days_total"] = np.bincount(c, minlength=n).astype(float)
    same = c[1:] == c[:-1]
    gc, gap = c[1:][same], (t[1:] - t[:-1])[same]
    count = np.bincount(gc, minlength=n).astype(float)
    mean = _ratio(np.bincount(gc, weights=gap, minlength=n), count)
    square = _ratio(np.bincount(gc, weights=gap**2, minlength=n), count)
    out["gap_mean_days"] = mean
    out["gap_std_days"] = np.where(count > 1, np.sqrt(np.maximum(square - mean**2, 0.0)), np.nan)
    median = np.full(n, np.nan)
    if len(gc):
        by = pd.Series(gap).groupby(gc, sort=False).median()
        median[by.index.to_numpy()] = by.to_numpy()
    out["gap_median_days"] = median
    out["gap_max_days"] = _group_max(gc, gap, n)
    _, last = run_ends(gc)
    out["gap_last_days"] = _scatter(n, gc[last], gap[last])
    out["overdue_ratio"] = _ratio(out["recency_days"], median)
    out["recency_vs_max_gap"] = _ratio(out["recency_days"], out["gap_max_days"])


def _breadth_and_return_features(
    out: dict[str, np.ndarray], h: CustomerHistory, now: float, n: int
) -> None:
    distinct = np.bincount(h.pair_c[h.pair_first < now], minlength=n).astype(float)
    again = np.bincount(h.pair_c[h.pair_second < now], minlength=n).astype(float)
    out["products_distinct"] = distinct
    out["products_per_order"] = _ratio(distinct, out["orders_total"])
    out["repeat_product_share"] = _ratio(again, distinct)
    if h.category_c is None or h.category_first is None:
        out["categories_distinct"] = np.full(n, np.nan)
    else:
        out["categories_distinct"] = np.bincount(
            h.category_c[h.category_first < now], minlength=n
        ).astype(float)
    e = h.events
    before = e.returns_t < now
    returns = np.bincount(e.returns_c[before], minlength=n).astype(float)
    recent = before & (e.returns_t >= now - TREND_DAYS)
    out["returns_total"] = returns
    out["returns_90d"] = np.bincount(e.returns_c[recent], minlength=n).astype(float)
    out["return_rate"] = _ratio(returns, out.pop("_lines"))


def _event_features(
    out: dict[str, np.ndarray], e: EventArrays, has_events: bool, now: float, n: int
) -> None:
    names = (*EMAIL_FEATURES, *SITE_FEATURES)
    arrays = (e.email_c, e.email_t, e.email_kind, e.site_c, e.site_t, e.site_cart)
    if not has_events or any(a is None for a in arrays):
        out.update({name: np.full(n, np.nan) for name in names})
        return
    email_c, email_t, email_kind, site_c, site_t, site_cart = (np.asarray(a) for a in arrays)
    m = email_t < now
    c, age, kind = email_c[m], now - email_t[m], email_kind[m]

    def counts(k: int, within: float = np.inf) -> np.ndarray:
        sel = (kind == k) & (age < within)
        return np.bincount(c[sel], minlength=n).astype(float)

    received, opens, machine, clicks = (
        counts(k, TREND_DAYS) for k in (RECEIVED, OPEN, MACHINE_OPEN, CLICK)
    )
    out.update(emails_90d=received, opens_90d=opens, machine_opens_90d=machine, clicks_90d=clicks)
    out["engagement_90d"] = _ratio(_engagement(opens, machine, clicks), received)
    out["engagement_all"] = _ratio(
        _engagement(counts(OPEN), counts(MACHINE_OPEN), counts(CLICK)), counts(RECEIVED)
    )
    engaged = (kind == OPEN) | (kind == CLICK)
    out["days_since_engaged"] = _group_min(c[engaged], age[engaged], n)
    out["unsubscribed"] = (counts(UNSUBSCRIBE) > 0).astype(float)
    s = site_t < now
    sc, sage, cart = site_c[s], now - site_t[s], site_cart[s]
    recent = sage < 30
    # Visit days, not events: one browsing session fires many views.
    visit_day = np.floor(site_t[s][recent]).astype(np.int64)
    if len(visit_day):
        span = int(visit_day.max() - visit_day.min()) + 1
        key = np.unique(sc[recent].astype(np.int64) * span + (visit_day - visit_day.min()))
        out["site_days_30d"] = np.bincount(key // span, minlength=n).astype(float)
    else:
        out["site_days_30d"] = np.zeros(n)
    out["carts_30d"] = np.bincount(sc[recent & cart], minlength=n).astype(float)
    out["days_since_site_visit"] = _group_min(sc, sage, n)


def _engagement(opens: np.ndarray, machine: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    return opens + MACHINE_OPEN_WEIGHT * machine + CLICK_WEIGHT * clicks


# ---------------------------------------------------------------------------------- helpers
def _scatter(n: int, codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    out[codes] = values
    return out


def _group_max(c: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -np.inf)
    np.maximum.at(out, c, values)
    return np.where(np.isinf(out), np.nan, out)


def _group_min(c: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf)
    np.minimum.at(out, c, values)
    return np.where(np.isinf(out), np.nan, out)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b is 0 or missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _balance(recent: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(recent − before) / (recent + before) in [−1, 1], NaN when both are 0."""
    return _ratio(recent - before, recent + before)
