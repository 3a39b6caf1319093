"""Plain-word reasons for a churn score, from LightGBM's own per-feature contributions.

Features are gathered into a few topics a marketer recognises (timing of orders, recent orders,
spend trend, ...). A customer's contributions (`pred_contrib=True`, log-odds) are summed per topic;
the three topics that push hardest in the direction of the customer's score (towards churn for a
customer riskier than average, towards staying otherwise) become the reasons, each stated as the
customer's own facts ("no order in 84 days, usually orders every 21"). A topic that does not push
that way is never given as a reason, so a customer may get fewer than three.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from personalizer.features.customers import EMAIL_FEATURES, SITE_FEATURES

TOPICS: dict[str, tuple[str, ...]] = {
    "timing": (
        "recency_days",
        "overdue_ratio",
        "recency_vs_max_gap",
        "gap_mean_days",
        "gap_median_days",
        "gap_std_days",
        "gap_max_days",
        "gap_last_days",
    ),
    "recent_orders": (
        "orders_30d",
        "orders_90d",
        "orders_180d",
        "orders_365d",
        "orders_prev_90d",
        "orders_trend_90d",
        "orders_90d_vs_usual",
    ),
    "spend_trend": (
        "spend_30d",
        "spend_90d",
        "spend_180d",
        "spend_365d",
        "spend_prev_90d",
        "spend_trend_90d",
        "spend_share_30d_90d",
    ),
    "frequency": ("orders_total", "purchase_days_total", "orders_per_30d"),
    "tenure": ("tenure_days",),
    "value": (
        "spend_total",
        "order_value_mean",
        "order_value_max",
        "order_value_last",
        "items_per_order",
        "lines_per_order",
        "unit_price_mean",
    ),
    "breadth": (
        "products_distinct",
        "products_per_order",
        "repeat_product_share",
        "categories_distinct",
    ),
    "returns": ("returns_total", "returns_90d", "return_rate"),
    "email": EMAIL_FEATURES,
    "site": SITE_FEATURES,
    "lifetime": ("p_alive", "expected_purchases"),
}
TOPIC_OF = {feature: topic for topic, features in TOPICS.items() for feature in features}


def top_reasons(
    contributions: np.ndarray,
    feature_names: list[str],
    features: pd.DataFrame,
    *,
    horizon_days: float,
    k: int = 3,
) -> list[list[str]]:
    """Up to `k` reasons per row, strongest first.

    Args:
        contributions: LightGBM `pred_contrib` output, shape (n, len(feature_names) + 1), the last
            column being the expected log-odds.
        feature_names: the model's features, in the order of the contribution columns.
        features: the rows' feature values (columns include `feature_names`).
        horizon_days: the churn horizon, quoted by the lifetime reason.
        k: reasons per row.
    """
    topics = [t for t in TOPICS if any(f in feature_names for f in TOPICS[t])]
    membership = np.zeros((len(feature_names), len(topics)))
    for j, topic in enumerate(topics):
        for i, name in enumerate(feature_names):
            if TOPIC_OF.get(name) == topic:
                membership[i, j] = 1.0
    per_topic = contributions[:, :-1] @ membership
    # Riskier than the average customer: the topics raising the score explain it; safer: those
    # lowering it.
    direction = np.where(per_topic.sum(axis=1) >= 0, 1.0, -1.0)
    signed = per_topic * direction[:, None]
    order = np.argsort(-signed, axis=1, kind="stable")[:, :k]
    strength = np.take_along_axis(signed, order, axis=1)
    texts = np.full(order.shape, None, dtype=object)
    for j, topic in enumerate(topics):
        hit = (order == j) & (strength > 1e-9)
        rows = np.flatnonzero(hit.any(axis=1))
        if len(rows):
            said = DESCRIBE[topic](features.iloc[rows], horizon_days).to_numpy(dtype=object)
            texts[hit] = np.repeat(said, hit[rows].sum(axis=1))
    return [[t for t in row if t is not None] for row in texts.tolist()]


# ------------------------------------------------------------------------------- templates
def _whole(values: pd.Series) -> pd.Series:
    return values.round().astype("Int64").astype(str)


def _days(values: pd.Series) -> pd.Series:
    n = values.round().clip(lower=0).astype("Int64")
    return n.astype(str) + np.where(n == 1, " day", " days")


def _money(values: pd.Series) -> pd.Series:
    return values.map("{:,.2f}".format)


def _percent(values: pd.Series) -> pd.Series:
    return (100 * values).round().astype("Int64").astype(str) + "%"


def _times(values: pd.Series, one: str, many: str) -> pd.Series:
    n = values.round().astype("Int64")
    return n.astype(str) + np.where(n == 1, f" {one}", f" {many}")


def _timing(f: pd.DataFrame, _: float) -> pd.Series:
    recency, gap = f["recency_days"], f["gap_median_days"].clip(lower=1)
    usual = (
        ", usually orders every "
        + _whole(gap.fillna(0))
        + np.where(gap.round() == 1, " day", " days")
    )
    overdue = "no order in " + _days(recency) + usual
    early = "last order " + _days(recency) + " ago" + usual
    single = "only one purchase day so far, " + _days(recency) + " ago"
    return pd.Series(
        np.where(gap.isna(), single, np.where(recency >= gap, overdue, early)), index=f.index
    )


def _recent_orders(f: pd.DataFrame, _: float) -> pd.Series:
    return (
        _times(f["orders_90d"], "order", "orders")
        + " in the last 90 days, "
        + _whole(f["orders_prev_90d"])
        + " in the 90 before"
    )


def _spend_trend(f: pd.DataFrame, _: float) -> pd.Series:
    now, before = f["spend_90d"], f["spend_prev_90d"]
    change = (now / before.where(before > 0) - 1).fillna(0)
    more_less = np.where(change < 0, " less", " more")
    moved = (
        "spent " + _percent(change.abs()) + more_less + " in the last 90 days than the 90 before"
    )
    stopped = "spent nothing in the last 90 days, " + _money(before) + " in the 90 before"
    started = "spent " + _money(now) + " in the last 90 days, nothing in the 90 before"
    same = "spent about the same in the last 90 days as in the 90 before"
    text = np.where(
        (now > 0) & (before > 0),
        np.where(change.abs() < 0.05, same, moved),
        np.where(before > 0, stopped, np.where(now > 0, started, "no spend in the last 180 days")),
    )
    return pd.Series(text, index=f.index)


def _frequency(f: pd.DataFrame, _: float) -> pd.Series:
    orders = _times(f["orders_total"], "order", "orders")
    spread = (
        orders
        + " on "
        + _times(f["purchase_days_total"], "day", "days")
        + " since the first one "
        + _days(f["tenure_days"])
        + " ago"
    )
    text = spread.where(f["purchase_days_total"] > 1, orders + ", all on one day")
    return text.where(f["orders_total"] > 1, "a single order so far")


def _tenure(f: pd.DataFrame, _: float) -> pd.Series:
    return "customer for " + _days(f["tenure_days"])


def _value(f: pd.DataFrame, _: float) -> pd.Series:
    return (
        "spends "
        + _money(f["order_value_mean"])
        + " per order on average, "
        + _money(f["spend_total"])
        + " in total"
    )


def _breadth(f: pd.DataFrame, _: float) -> pd.Series:
    text = "bought " + _times(f["products_distinct"], "product", "different products")
    categories = f["categories_distinct"]
    text = text.where(
        categories.isna(), text + " in " + _times(categories.fillna(0), "category", "categories")
    )
    again = f["repeat_product_share"].fillna(0)
    return text.where(again <= 0, text + ", " + _percent(again) + " of them more than once")


def _returns(f: pd.DataFrame, _: float) -> pd.Series:
    returned = (
        "returned "
        + _times(f["returns_total"], "item", "items")
        + " ("
        + _percent(f["return_rate"].fillna(0))
        + " of order lines)"
    )
    return returned.where(f["returns_total"] > 0, "no returns")


def _email(f: pd.DataFrame, _: float) -> pd.Series:
    emails = f["emails_90d"].fillna(0)
    read = (
        "opened "
        + _whole(f["opens_90d"].fillna(0))
        + " and clicked "
        + _whole(f["clicks_90d"].fillna(0))
        + " of "
        + _times(emails, "email", "emails")
        + " in the last 90 days"
    )
    text = read.where(emails > 0, "no email received in the last 90 days")
    return text.where(f["unsubscribed"].fillna(0) <= 0, "unsubscribed from emails")


def _site(f: pd.DataFrame, _: float) -> pd.Series:
    since, days = f["days_since_site_visit"], f["site_days_30d"].fillna(0)
    visited = "last visited the site " + _days(since.fillna(0)) + " ago"
    visited = visited.where(
        days <= 0, visited + ", on " + _times(days, "day", "days") + " in the last 30"
    )
    return visited.where(since.notna(), "no site visit on record")


def _lifetime(f: pd.DataFrame, horizon_days: float) -> pd.Series:
    expected = f["expected_purchases"].map("{:.1f}".format)
    return (
        "expected to buy "
        + expected
        + f" times in the next {horizon_days:g} days ("
        + _percent(f["p_alive"])
        + " chance still active)"
    )


DESCRIBE: dict[str, Callable[[pd.DataFrame, float], pd.Series]] = {
    "timing": _timing,
    "recent_orders": _recent_orders,
    "spend_trend": _spend_trend,
    "frequency": _frequency,
    "tenure": _tenure,
    "value": _value,
    "breadth": _breadth,
    "returns": _returns,
    "email": _email,
    "site": _site,
    "lifetime": _lifetime,
}
