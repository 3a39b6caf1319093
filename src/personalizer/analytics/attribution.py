"""Orders credited to the email campaign whose tagged link the customer clicked before buying.

The rule is last click: an order is attributed to the customer's latest email click at or before
it, when that click is no older than the attribution window (3 days by default). The click credits
the campaign of the link's `utm_campaign` (every link an email carries is tagged, see
`render.environment.utm`), or the click event's `campaign_id` when the link carries none. Orders
without a click in the window are not attributed; an order is credited to one campaign at most.
"""

from __future__ import annotations

import pandas as pd

from personalizer.analytics.emails import event_campaigns
from personalizer.features.engagement_times import naive_utc
from personalizer.schema import EventType

DEFAULT_WINDOW = pd.Timedelta(days=3)
ORDER_COLUMNS = ["order_id", "customer_id", "ordered_at", "revenue"]
CLICK_COLUMNS = ["customer_id", "campaign_id", "clicked_at"]
ATTRIBUTED_COLUMNS = [*ORDER_COLUMNS, "campaign_id", "clicked_at"]
CONVERSION_COLUMNS = ["customer_id", "campaign_id", "orders", "revenue"]


def attribution_window(days: float) -> pd.Timedelta:
    """The window of `days` days, refusing one that is not positive.

    Raises:
        ValueError: When `days` is not a positive number.
    """
    if not days > 0:
        raise ValueError(f"the attribution window must be positive, got {days} days")
    return pd.Timedelta(days=days)


def order_totals(lines: pd.DataFrame) -> pd.DataFrame:
    """Order lines (`orders` table) summed into orders: `ORDER_COLUMNS`, revenue = Σ qty × price.

    An order's time is its earliest line's.
    """
    if lines.empty:
        return _empty_orders()
    frame = pd.DataFrame(
        {
            "order_id": lines["order_id"].astype(str).to_numpy(),
            "customer_id": lines["customer_id"].astype(str).to_numpy(),
            "ordered_at": _naive(lines["ordered_at"]).to_numpy(),
            "revenue": (lines["quantity"] * lines["unit_price"]).astype(float).to_numpy(),
        }
    )
    orders = frame.groupby(["order_id", "customer_id"], as_index=False, sort=False).agg(
        ordered_at=("ordered_at", "min"), revenue=("revenue", "sum")
    )
    return orders[ORDER_COLUMNS]


def email_clicks(events: pd.DataFrame) -> pd.DataFrame:
    """Every email click with the campaign it credits (`CLICK_COLUMNS`).

    The campaign is the `utm_campaign` of the clicked link when the click's properties carry it,
    else the click's `campaign_id`; clicks with neither are dropped.
    """
    if events.empty:
        return _empty_clicks()
    is_click = (events["type"].astype(str) == EventType.EMAIL_CLICK.value).to_numpy()
    clicks = events[is_click]
    campaign = event_campaigns(clicks, prefer_utm=True)
    known = campaign.notna().to_numpy(bool)
    return pd.DataFrame(
        {
            "customer_id": clicks["customer_id"].astype(str).to_numpy()[known],
            "campaign_id": campaign[known].astype(str).to_numpy(),
            "clicked_at": _naive(clicks["occurred_at"]).to_numpy()[known],
        }
    )[CLICK_COLUMNS]


def attribute_orders(
    orders: pd.DataFrame, clicks: pd.DataFrame, window: pd.Timedelta = DEFAULT_WINDOW
) -> pd.DataFrame:
    """Each order with the campaign of the customer's last email click within `window` before it.

    Args:
        orders: `ORDER_COLUMNS` (`order_totals`).
        clicks: `CLICK_COLUMNS` (`email_clicks`).
        window: How long after a click an order still counts for it (a click at the very moment
            of the order counts).

    Returns:
        `ATTRIBUTED_COLUMNS`, one row per order in the order of `orders`; `campaign_id` and
        `clicked_at` are NA for an order with no click in its window.
    """
    if window <= pd.Timedelta(0):
        raise ValueError(f"the attribution window must be positive, got {window}")
    if orders.empty:
        return _empty_orders().assign(
            campaign_id=pd.Series(dtype="string"), clicked_at=pd.Series(dtype="datetime64[us]")
        )[ATTRIBUTED_COLUMNS]
    left = orders[ORDER_COLUMNS].assign(
        customer_id=orders["customer_id"].astype(str),
        ordered_at=_naive(orders["ordered_at"]).astype("datetime64[ns]"),
        _row=range(len(orders)),
    )
    right = clicks[CLICK_COLUMNS].assign(
        customer_id=clicks["customer_id"].astype(str),
        clicked_at=_naive(clicks["clicked_at"]).astype("datetime64[ns]"),
        campaign_id=clicks["campaign_id"].astype("string"),
    )
    right = right[right["clicked_at"].notna().to_numpy(bool)]
    timed = left[left["ordered_at"].notna().to_numpy(bool)]
    matched = pd.merge_asof(
        timed.sort_values("ordered_at", kind="stable"),
        right.sort_values("clicked_at", kind="stable").rename(columns={"clicked_at": "_t"}),
        left_on="ordered_at",
        right_on="_t",
        by="customer_id",
        direction="backward",
        tolerance=window,
        allow_exact_matches=True,
    )
    matched = left.merge(matched[["_row", "campaign_id", "_t"]], on="_row", how="left")
    matched = matched.sort_values("_row").rename(columns={"_t": "clicked_at"})
    matched["ordered_at"] = matched["ordered_at"].astype("datetime64[us]")
    matched["clicked_at"] = matched["clicked_at"].astype("datetime64[us]")
    matched["campaign_id"] = matched["campaign_id"].astype("string")
    return matched[ATTRIBUTED_COLUMNS].reset_index(drop=True)


def conversions(attributed: pd.DataFrame) -> pd.DataFrame:
    """Attributed orders and revenue per customer and campaign (`CONVERSION_COLUMNS`)."""
    done = attributed[attributed["campaign_id"].notna()]
    if done.empty:
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype="string"),
                "campaign_id": pd.Series(dtype="string"),
                "orders": pd.Series(dtype="int64"),
                "revenue": pd.Series(dtype=float),
            }
        )
    out = done.groupby(["customer_id", "campaign_id"], as_index=False).agg(
        orders=("order_id", "nunique"), revenue=("revenue", "sum")
    )
    return out[CONVERSION_COLUMNS]


def _naive(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC microseconds (aware ones converted)."""
    return naive_utc(values, "time").astype("datetime64[us]")


def _empty_orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": pd.Series(dtype="string"),
            "customer_id": pd.Series(dtype="string"),
            "ordered_at": pd.Series(dtype="datetime64[us]"),
            "revenue": pd.Series(dtype=float),
        }
    )


def _empty_clicks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="string"),
            "campaign_id": pd.Series(dtype="string"),
            "clicked_at": pd.Series(dtype="datetime64[us]"),
        }
    )
