"""Arrow tables of one simulated chunk: the four canonical tables and the per-chunk truth files.

Strings (ids, JSON properties) are made with Arrow compute kernels and `take` from small
dictionaries, which keeps millions of rows per second cheap.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personalizer.data.synthetic.catalog import CATEGORY_NAMES, Catalog
from personalizer.data.synthetic.config import ZONE_COUNTRY, ZONE_NAMES, ShopConfig
from personalizer.data.synthetic.customers import (
    MAIL_AGENTS,
    MPP_PROXY_AGENT,
    SIGNUP_SOURCES,
    Population,
)
from personalizer.data.synthetic.email import Email
from personalizer.data.synthetic.events import EVENT_TYPES, Events
from personalizer.data.synthetic.orders import CAMPAIGN, ORDER_KINDS, Orders

MAIL_CLIENTS = ("apple_mail", "gmail", "outlook", "android", "thunderbird")
TIMESTAMP = pa.timestamp("us")


def ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Strings like prefix + zero-padded number."""
    digits = pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(digits, width, "0"), "")


def take(strings: pa.Array | list[str] | tuple[str, ...], index: np.ndarray) -> pa.Array:
    """`strings[index]`, null where the index is negative."""
    values = strings if isinstance(strings, pa.Array) else pa.array(list(strings), pa.string())
    index = np.asarray(index, dtype=np.int64)
    return values.take(pa.array(index, mask=index < 0))


def timestamps(config: ShopConfig, t: np.ndarray) -> pa.Array:
    """Naive UTC microsecond timestamps from seconds since start, null where nan."""
    t = np.asarray(t, dtype=np.float64)
    missing = np.isnan(t)
    micros = (config.start_epoch + np.floor(np.where(missing, 0, t)).astype(np.int64)) * 1_000_000
    return pa.array(micros, type=pa.int64(), mask=missing).cast(TIMESTAMP)


def chunk_labels(config: ShopConfig, chunk_index: int) -> str:
    """The chunk part of order and event ids (fixed width, so ids sort in generation order)."""
    return f"{chunk_index:0{max(5, len(str(config.n_chunks - 1)))}d}"


def customer_ids(config: ShopConfig, pop: Population) -> pa.Array:
    width = max(7, len(str(config.n_customers)))
    return ids("c", pop.first + np.arange(pop.n) + 1, width)


def order_ids(config: ShopConfig, chunk_index: int, orders: Orders) -> pa.Array:
    return ids("o" + chunk_labels(config, chunk_index), np.arange(orders.n), 7)


def customers_table(config: ShopConfig, pop: Population, cid: pa.Array, email: Email) -> pa.Table:
    attributes = [json.dumps({"signup_source": s}) for s in SIGNUP_SOURCES]
    consent = pop.consent & np.isnan(email.unsubscribed_at)  # the feed shows today's consent
    return pa.table(
        {
            "customer_id": cid,
            "email": pc.binary_join_element_wise(cid, "@example.com", ""),
            "country": take(ZONE_COUNTRY, pop.zone),
            "timezone": take(ZONE_NAMES, pop.zone),
            "signed_up_at": timestamps(config, pop.signed_up),
            "email_consent": pa.array(consent),
            "attributes": take(attributes, pop.source),
        }
    )


def orders_table(
    config: ShopConfig, catalog: Catalog, cid: pa.Array, oid: pa.Array, orders: Orders
) -> pa.Table:
    line = orders.line_order
    return pa.table(
        {
            "customer_id": cid.take(orders.customer[line]),
            "order_id": oid.take(line),
            "product_id": take(_product_ids(catalog), orders.line_product),
            "quantity": pa.array(orders.quantity),
            "unit_price": pa.array(orders.unit_price),
            "ordered_at": timestamps(config, orders.placed_at[line]),
            "line_no": pa.array(np.zeros(len(line), dtype=np.int64)),
        }
    )


def events_table(
    config: ShopConfig,
    catalog: Catalog,
    chunk_index: int,
    cid: pa.Array,
    oid: pa.Array,
    orders: Orders,
    events: Events,
) -> pa.Table:
    agents = [json.dumps({"user_agent": a}) for a in (*MAIL_AGENTS, MPP_PROXY_AGENT)]
    purchases = pc.binary_join_element_wise(
        '{"order_id": "',
        oid,
        '", "value": ',
        pc.cast(pa.array(orders.value), pa.string()),
        "}",
        "",
    )
    properties = pa.concat_arrays([pa.array(agents, pa.string()), purchases])
    return pa.table(
        {
            "event_id": ids("e" + chunk_labels(config, chunk_index), np.arange(events.n), 9),
            "customer_id": cid.take(events.customer),
            "type": take([str(t) for t in EVENT_TYPES], events.code),
            "occurred_at": timestamps(config, events.t),
            "product_id": take(_product_ids(catalog), events.product),
            "campaign_id": take(_campaign_ids(catalog), events.campaign),
            "properties": take(properties, events.prop),
        }
    )


def truth_customers_table(
    config: ShopConfig, catalog: Catalog, pop: Population, cid: pa.Array, email: Email
) -> pa.Table:
    churned = pop.dropout < config.horizon
    columns: dict[str, pa.Array] = {
        "customer_id": cid,
        "never_buys": pa.array(pop.never_buys),
        "one_time": pa.array(pop.one_time),
        "base_order_rate_per_day": pa.array(pop.base_rate),
        "slowdown_per_year": pa.array(pop.slowdown),
        "churn_hazard_per_day": pa.array(pop.hazard),
        "active_from": timestamps(config, pop.active_start),
        "dropout_at": timestamps(config, pop.dropout),
        "churned": pa.array(churned),
        "churned_at": timestamps(config, np.where(churned, pop.dropout, np.nan)),
        "preferred_hour_of_week": pa.array(pop.preferred_how.astype(np.int64)),
        "machine_opener": pa.array(pop.mpp),
        "mail_client": take(MAIL_CLIENTS, pop.agent),
        "email_engagement": pa.array(pop.engagement),
        "persuadability": pa.array(pop.persuadability),
        "staple_product_id": take(_product_ids(catalog), pop.staple),
        "consent_at_signup": pa.array(pop.consent),
        "unsubscribed_at": timestamps(config, email.unsubscribed_at),
    }
    for c, name in enumerate(CATEGORY_NAMES):
        columns["taste_" + name.replace(" ", "_")] = pa.array(pop.taste[:, c])
    return pa.table(columns)


def truth_assignments_table(
    config: ShopConfig, catalog: Catalog, cid: pa.Array, oid: pa.Array, orders: Orders, email: Email
) -> pa.Table:
    persuaded = np.full(len(email.customer), -1)
    caused = orders.kind == CAMPAIGN
    persuaded[orders.assignment[caused]] = np.flatnonzero(caused)
    return pa.table(
        {
            "campaign_id": take(_campaign_ids(catalog), email.campaign),
            "customer_id": cid.take(email.customer),
            "group": take(("control", "treatment"), email.treated.astype(np.int64)),
            "planned_send_at": timestamps(config, email.planned_at),
            "bounced": pa.array(email.bounced),
            "human_open": pa.array(~np.isnan(email.human_open_at)),
            "machine_open": pa.array(~np.isnan(email.machine_open_at)),
            "clicked": pa.array(~np.isnan(email.click_at)),
            "unsubscribed": pa.array(~np.isnan(email.unsubscribe_at)),
            "persuaded_order_id": take(oid, persuaded),
        }
    )


def truth_machine_opens_table(events: pa.Table, machine: np.ndarray) -> pa.Table:
    rows = pa.array(np.flatnonzero(machine))
    return events.select(["event_id", "customer_id", "campaign_id", "occurred_at"]).take(rows)


def truth_orders_table(
    catalog: Catalog, cid: pa.Array, oid: pa.Array, orders: Orders, email: Email
) -> pa.Table:
    campaign = np.full(orders.n, -1)
    caused = orders.assignment >= 0
    campaign[caused] = email.campaign[orders.assignment[caused]]
    return pa.table(
        {
            "order_id": oid,
            "customer_id": cid.take(orders.customer),
            "kind": take(ORDER_KINDS, orders.kind),
            "campaign_id": take(_campaign_ids(catalog), campaign),
        }
    )


def _product_ids(catalog: Catalog) -> pa.Array:
    return pa.array(catalog.products["product_id"].to_numpy(), pa.string())


def _campaign_ids(catalog: Catalog) -> pa.Array:
    return pa.array(catalog.campaigns["campaign_id"].to_numpy(), pa.string())
