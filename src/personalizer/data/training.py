"""What a training pipeline reads: order lines from a file or the warehouse, cut at `until`.

A transactions file (the external-evaluation contract) gives order lines only, validated on the way
in with bad rows quarantined; the warehouse also gives the catalog, the customers (time zones,
consent) and the events (email engagement, returns, site activity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse
from personalizer.evaluation.split import to_utc_timestamp
from personalizer.privacy.pseudonym import drop_erased

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """Inputs of a training run; `as_of` is where the data ends (`until`, or after the last order)."""

    orders: pd.DataFrame
    products: pd.DataFrame | None
    customers: pd.DataFrame | None
    events: pd.DataFrame | None
    until: pd.Timestamp | None
    as_of: pd.Timestamp


def load_orders(
    settings: Settings, transactions: Path | None, until: str | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.Timestamp | None]:
    """Order lines from a file (validated, bad rows quarantined) or from the warehouse.

    Returns the lines before `until`, the catalog when the warehouse has one, and `until`.
    """
    data = load_training_data(settings, transactions, until, with_events=False)
    return data.orders, data.products, data.until


def load_training_data(
    settings: Settings,
    transactions: Path | None,
    until: str | None,
    *,
    with_events: bool = True,
) -> TrainingData:
    """Order lines (and from the warehouse: catalog, customers, events) before `until`.

    Raises:
        ValueError: When there are no order lines before `until`.
    """
    products = customers = events = None
    if transactions is not None:
        from personalizer.data.importer import read_feed

        orders, report = read_feed(settings, transactions, "orders")
        if report.quarantined_total:
            log.warning(
                "%s: %d bad rows quarantined (%s)",
                transactions,
                report.quarantined_total,
                dict(report.quarantined),
            )
    else:
        with Warehouse(settings.warehouse_path, read_only=True) as wh:
            orders = wh.query("SELECT * FROM orders")
            products = wh.query("SELECT product_id, category, in_stock, price FROM products")
            if with_events:
                customers = wh.query("SELECT * EXCLUDE (email) FROM customers")
                events = _events(wh, to_utc_timestamp(until) if until else None)
    # erased customers never reach a model, even from an old feed or transactions file
    orders = drop_erased(settings, orders)
    if customers is not None:
        customers = drop_erased(settings, customers)
    if events is not None:
        events = drop_erased(settings, events)
    cutoff = to_utc_timestamp(until) if until else None
    if cutoff is not None:
        orders = orders[pd.to_datetime(orders["ordered_at"]) < cutoff]
    if orders.empty:
        raise ValueError("no order lines to learn from" + (f" before {until}" if until else ""))
    orders = orders.reset_index(drop=True)
    as_of = cutoff if cutoff is not None else _after_last(orders)
    return TrainingData(orders, products, customers, events, cutoff, as_of)


# What the models read of an event: who, what, when, which campaign, and the properties of an
# open (they tell a machine's open from a reader's). Page, product and free text stay behind.
_EVENT_SQL = """
SELECT customer_id, type, occurred_at, campaign_id,
       CASE WHEN type = 'email_open' THEN properties END AS properties
FROM events
"""


def _events(wh: Warehouse, cutoff: pd.Timestamp | None) -> pd.DataFrame:
    """The events before `cutoff`, their text columns as categoricals.

    A large shop has a hundred events per customer; as text they would not fit in memory.
    """
    if cutoff is None:
        return wh.query_coded(_EVENT_SQL)
    return wh.query_coded(_EVENT_SQL + "WHERE occurred_at < ?", [cutoff.to_pydatetime()])


def validation_cutoff(
    first: pd.Timestamp, as_of: pd.Timestamp, days: float = 90.0, max_share: float = 0.3
) -> pd.Timestamp:
    """Start of a held-out validation window ending at `as_of`: `days` long, at most `max_share`
    of the history that began at `first`, so short histories keep most of their data to learn."""
    span_days = (as_of - pd.Timestamp(first)) / pd.Timedelta(days=1)
    return as_of - pd.Timedelta(days=min(days, max_share * span_days))


def _after_last(orders: pd.DataFrame) -> pd.Timestamp:
    return pd.Timestamp(pd.to_datetime(orders["ordered_at"]).max()) + pd.Timedelta(seconds=1)
